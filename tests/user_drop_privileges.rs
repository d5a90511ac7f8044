//! `--user nobody` runs every worker as nobody (uid, gid and supplementary groups) while the launcher,
//! as root, binds the privileged port 80 for them with `--listen`: the workers serve a port they could
//! not bind themselves, across a reload. An unknown user or group stops the launcher before anything
//! starts, with exit code 2 and the name in the message.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::User;
use support::procfs;
use support::*;

const WORKERS: usize = 2;
/// A port below 1024: only root (the launcher) may bind it, never nobody.
const PRIVILEGED_PORT: u16 = 80;
const GENERATION_DEADLINE: Duration = Duration::from_secs(20);
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// A socket-activated HTTP server (fd 3) that checks LISTEN_PID and answers with X-Generation/X-Pid.
/// On SIGTERM it exits at once: this test is about identities, not draining.
const SERVER: &str = r#"
import os, socket, sys
pid = os.getpid()
if os.environ.get("LISTEN_PID") != str(pid) or os.environ.get("LISTEN_FDS") != "1":
    sys.exit(3)
listener = socket.socket(fileno=3)
gen = os.environ.get("REUSEPORT_LAUNCH_GENERATION", "0")
body = ("generation=%s pid=%d uid=%d\n" % (gen, pid, os.getuid())).encode()
while True:
    try:
        conn, _ = listener.accept()
    except OSError:
        # The launcher took the listener out of the port's group: wait for the stop signal.
        import signal; signal.pause()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.sendall(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Generation: %s\r\nX-Pid: %d\r\n"
                      "Connection: close\r\n\r\n" % (len(body), gen, pid)).encode() + body)
"#;

/// System python3: nobody cannot run a pyenv shim under /root.
const PYTHON3: &str = "/usr/bin/python3";

/// The `Uid:`/`Gid:`/`Groups:` line of /proc/<pid>/status, without its label.
fn status_line(pid: i32, label: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(label)
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}

#[test]
fn user_drop_privileges() {
    private_netns(true);
    assert!(
        std::path::Path::new(PYTHON3).exists(),
        "this test needs {PYTHON3} (a python3 that user nobody may run)"
    );
    let nobody = User::from_name("nobody")
        .expect("look up user nobody")
        .expect("this test needs a user named nobody");
    let dir = TempDir::new("user_drop_privileges");
    let addr = format!("127.0.0.1:{PRIVILEGED_PORT}");
    let workers = WORKERS.to_string();
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            &workers,
            "--listen",
            &addr,
            "--user",
            "nobody",
            "--stop-timeout",
            "5",
            "--",
            PYTHON3,
            "-c",
            SERVER,
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", GENERATION_DEADLINE),
        "generation 1 did not become ready"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));

    for generation in 1..=2 {
        if generation == 2 {
            let old = procfs::snapshot(&launcher.workers_of(1));
            launcher.signal(Signal::SIGHUP);
            assert!(
                launcher.wait_for_log("reload to generation 2 done", GENERATION_DEADLINE),
                "the reload under --user did not finish"
            );
            assert!(procfs::wait_gone(&old, Duration::from_secs(10)).is_empty());
        }
        let workers = launcher.workers_of(generation);
        assert_eq!(workers.len(), WORKERS, "workers: {:?}", launcher.workers());
        let uid = nobody.uid.as_raw();
        let gid = nobody.gid.as_raw();
        for &pid in &workers {
            assert_eq!(
                status_line(pid, "Uid:"),
                format!("{uid} {uid} {uid} {uid}"),
                "worker {pid} does not run as nobody"
            );
            assert_eq!(status_line(pid, "Gid:"), format!("{gid} {gid} {gid} {gid}"));
            assert_eq!(
                status_line(pid, "Groups:"),
                gid.to_string(),
                "supplementary groups of {pid}"
            );
            assert_eq!(procfs::env_var(pid, "LISTEN_PID"), Some(pid.to_string()));
            assert_eq!(procfs::env_var(pid, "USER").as_deref(), Some("nobody"));
        }
        // The port is bound by the launcher (root) and served by nobody's workers.
        let owners: Vec<u32> = procfs::tcp_listeners(launcher.pid(), PRIVILEGED_PORT)
            .iter()
            .map(|l| l.uid)
            .collect();
        assert_eq!(
            owners,
            vec![0; WORKERS],
            "owners of the listeners on port {PRIVILEGED_PORT}"
        );
        let (answered, pid) = http_get(&addr);
        assert_eq!(answered, generation);
        assert!(
            workers.contains(&pid),
            "pid {pid} answered, not one of {workers:?}"
        );
    }
}

#[test]
fn unknown_user_or_group_stops_before_start() {
    let dir = TempDir::new("unknown_user");
    for (flag, name) in [
        ("--user", "no-such-user-rpl"),
        ("--group", "no-such-group-rpl"),
    ] {
        let (status, output) = run_launcher_to_exit(
            &dir,
            &[
                flag.as_ref(),
                name.as_ref(),
                "--".as_ref(),
                "/bin/true".as_ref(),
            ],
            EXIT_DEADLINE,
        );
        assert_eq!(status.code(), Some(2), "{flag} {name}: {output}");
        assert!(
            output.contains(name),
            "the error does not name {name}: {output}"
        );
        assert!(
            !output.contains("starting"),
            "something started despite {flag} {name}: {output}"
        );
    }
}
