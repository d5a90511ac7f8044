//! A process of the same user that binds the launcher's port with SO_REUSEPORT joins the kernel's
//! reuseport group, and without steering it would get its share of the connections. With steering it
//! gets none, before and after a reload, and the launcher names it once in its log: a plain stranger by
//! pid and command, and a worker of a second launcher (started with another --name on the same port) as
//! such.

mod support;

use std::process::Command;
use std::time::Duration;

use support::launcher::reload_and_wait;
use support::*;

const WORKERS: usize = 2;
const DEADLINE: Duration = Duration::from_secs(20);
/// The generation the stranger claims in its answers, so the load report shows any it got.
const STRANGER_GENERATION: u32 = 999;

const STRANGER_PY: &str = r#"
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
open(sys.argv[2], "w").write("listening")
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\nX-Pid: %d\r\nX-Generation: 999\r\n\r\nstranger\n" % os.getpid())
    c.close()
"#;

/// A launcher of WORKERS example servers on 127.0.0.1:`port`, with `flags`, once it serves.
fn example_launcher(dir: &TempDir, port: u16, flags: &[&str]) -> Launcher {
    let workers = WORKERS.to_string();
    let port = port.to_string();
    let mut args = vec!["--workers", workers.as_str()];
    args.extend_from_slice(flags);
    args.extend([
        "--",
        example_server(),
        "--host",
        "127.0.0.1",
        "--port",
        port.as_str(),
    ]);
    Launcher::spawn_serving(dir, &args, DEADLINE)
}

/// Starts the stranger on 127.0.0.1:`port` and waits until it listens.
fn start_stranger(dir: &TempDir, port: u16) -> ChildGuard {
    let script = dir.join("stranger.py");
    std::fs::write(&script, STRANGER_PY).unwrap();
    let listening = dir.join("stranger.listening");
    let stranger = ChildGuard::spawn(
        Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&listening),
    );
    assert!(
        wait_until(DEADLINE, || listening.exists()),
        "the stranger never listened"
    );
    stranger
}

#[test]
fn stranger_on_the_port_gets_no_connection() {
    private_netns(true);
    let dir = TempDir::new("stranger_on_the_port");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let launcher = example_launcher(&dir, port, &["--name", "steered", "--steer", "on"]);
    let stranger = start_stranger(&dir, port);
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(load.wait_for_traffic(Duration::from_secs(10)));
    reload_and_wait(&launcher, WORKERS, 2, DEADLINE, || {});
    let named = format!("pid {} (", stranger.pid());
    assert!(
        launcher.wait_for_log(&named, DEADLINE),
        "the launcher does not name the stranger ({named}): {}",
        launcher.log_tail(20)
    );

    let other_dir = TempDir::new("stranger_on_the_port_other_launcher");
    let other = example_launcher(&other_dir, port, &["--name", "other", "--steer", "off"]);
    let other_workers = other.workers_of(1);
    reload_and_wait(&launcher, WORKERS, 3, DEADLINE, || {});
    let other_named = format!("another reuseport-launch (launcher pid {})", other.pid());
    assert!(
        launcher.wait_for_log(&other_named, DEADLINE),
        "the launcher does not name the other launcher's workers ({other_named}): {}",
        launcher.log_tail(20)
    );
    let load = load.stop();
    eprintln!(
        "stranger test: {} requests, {} failures, by pid {:?}",
        load.requests, load.failures, load.by_pid
    );
    assert_eq!(load.failures, 0, "{}", load.raw);
    assert!(
        !load.by_generation().contains_key(&STRANGER_GENERATION),
        "the stranger got connections: {:?}",
        load.by_pid
    );
    let stolen: Vec<_> = other_workers
        .iter()
        .filter(|pid| load.by_pid.contains_key(pid))
        .collect();
    assert!(
        stolen.is_empty(),
        "workers {stolen:?} of the other launcher got connections: {:?}",
        load.by_pid
    );
    assert_eq!(
        launcher.log_lines(&named).len(),
        1,
        "the stranger is named more than once"
    );
}

/// With `--no-inject` the launcher never sees the workers bind: it finds their listeners in /proc and
/// copies them (pidfd_getfd) to steer; the stranger still gets nothing.
#[test]
fn stranger_gets_nothing_from_servers_that_set_so_reuseport_themselves() {
    private_netns(true);
    let dir = TempDir::new("stranger_no_inject");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let launcher = example_launcher(&dir, port, &["--no-inject", "--steer", "on"]);
    let stranger = start_stranger(&dir, port);
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(load.wait_for_traffic(Duration::from_secs(10)));
    reload_and_wait(&launcher, WORKERS, 2, DEADLINE, || {});
    reload_and_wait(&launcher, WORKERS, 3, DEADLINE, || {});
    assert!(launcher.wait_for_log(&format!("pid {} (", stranger.pid()), DEADLINE));
    let load = load.stop();
    assert_eq!(load.failures, 0, "{}", load.raw);
    assert!(
        !load.by_generation().contains_key(&STRANGER_GENERATION),
        "the stranger got connections: {:?}",
        load.by_pid
    );
    assert!(
        launcher.log_lines("no listening socket found").is_empty(),
        "{}",
        launcher.log_tail(20)
    );
}
