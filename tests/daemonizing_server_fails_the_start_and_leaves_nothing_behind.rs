//! A server that forks into the background is a start failure, not a crash to restart: the launcher,
//! subreaper of its workers, finds the daemon a worker left behind, kills it by pid, exits 4 with a message
//! that says the server forked into the background and how to keep it in the foreground, and leaves no
//! process and no listener on the port behind. Two daemons: a classic double-forking Python one (fork, the
//! worker exits 0, setsid, fork, listen), and one that listens first and then forks, as nginx does (the
//! daemon keeps the worker's listening socket, and the worker may be counted ready on it in the instant
//! before it exits: still a start failure, not a crash restart that forks one more daemon).

mod support;

use std::time::Duration;

use support::*;

/// Exit within this: python starts in well under a second, and nothing waits for a timeout.
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

const DAEMON: &str = r#"
import os, signal, socket, sys
port, pidfile, listen_first = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "listen-first"
def listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s
s = listen() if listen_first else None
if os.fork() > 0:
    os._exit(0)              # the worker "returns to the shell", as `nginx` or `apachectl start` do
os.setsid()
if os.fork() > 0:
    os._exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # only SIGKILL by pid stops it
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
s = s or listen()
while True:
    c, _ = s.accept()
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.close()
"#;

#[test]
fn double_forking_daemon_fails_the_start_and_leaves_nothing_behind() {
    private_netns(true);
    run_daemon("daemon_fork_first", "fork-first", &[]);
}

#[test]
fn daemon_that_listens_then_forks_fails_the_start_and_leaves_nothing_behind() {
    private_netns(true);
    run_daemon("daemon_listen_first", "listen-first", &[]);
}

fn run_daemon(tag: &str, mode: &str, flags: &[&str]) {
    let dir = TempDir::new(tag);
    let script = dir.join("daemon.py");
    std::fs::write(&script, DAEMON).expect("write daemon.py");
    let pidfile = dir.join("daemon.pid");
    let port = free_port();
    let port_text = port.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec!["--workers".as_ref(), "1".as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    args.extend([
        "--".as_ref(),
        "python3".as_ref(),
        script.as_os_str(),
        port_text.as_ref(),
        pidfile.as_os_str(),
        mode.as_ref(),
    ]);
    let mut launcher = Launcher::spawn(&dir, &args);
    let status = launcher.wait_exit(EXIT_DEADLINE).unwrap_or_else(|| {
        panic!(
            "launcher still running after {EXIT_DEADLINE:?}: {}",
            launcher.log_text()
        )
    });
    let log = launcher.log_text();
    // Checked before the guard's cleanup could kill anything: the launcher itself left nothing.
    let left = launcher.descendants();
    assert!(
        left.is_empty(),
        "processes outlived the launcher: {left:?}\n{log}"
    );
    assert_eq!(status.code(), Some(4), "{log}");
    let error = log
        .lines()
        .find(|l| l.contains("reuseport-launch: error:"))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    for needle in [
        "exited with status 0",
        "forked into the background",
        "daemon off;",
    ] {
        assert!(
            error.contains(needle),
            "the error lacks {needle:?}: {error}"
        );
    }
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let pid: i32 = pid.trim().parse().expect("a pid in daemon.pid");
        assert!(
            !procfs::alive(pid),
            "the daemon (pid {pid}) survived: {log}"
        );
    }
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is still held after the launcher exited: {log}"
    );
}
