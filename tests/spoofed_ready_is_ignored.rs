//! Only a worker (or a process it started) can make a worker ready: READY=1 from any other process is
//! dropped and logged, malformed and oversized datagrams are dropped without harm, and a worker's
//! descendant saying READY=1 counts.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

/// The notify socket path the launcher gave its workers, read from a worker's environment.
fn notify_socket_of(launcher: &Launcher) -> String {
    let mut path = None;
    let found = wait_until(Duration::from_secs(10), || {
        path = launcher
            .workers()
            .first()
            .and_then(|&(pid, _)| procfs::env_var(pid, "NOTIFY_SOCKET"));
        path.is_some()
    });
    assert!(found, "no worker with NOTIFY_SOCKET appeared");
    let path = path.unwrap();
    assert!(
        !path.starts_with('@'),
        "NOTIFY_SOCKET {path} is abstract; the contract says a private dir"
    );
    path
}

fn send(path: &str, bytes: &[u8]) {
    let socket = UnixDatagram::unbound().expect("a datagram socket");
    socket
        .send_to(bytes, path)
        .unwrap_or_else(|e| panic!("sending {} bytes to {path}: {e}", bytes.len()));
}

#[test]
fn ready_from_a_process_that_is_not_a_worker_is_dropped() {
    private_netns(true);
    let dir = TempDir::new("spoofed_ready");
    let port = free_port().to_string();
    let mut launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            "1",
            "--ready",
            "notify",
            "--ready-timeout",
            "3",
            "--",
            example_server(),
            "--port",
            &port,
            "--never-ready",
        ],
    );
    let socket = notify_socket_of(&launcher);
    send(&socket, b"READY=1");
    let me = std::process::id();
    assert!(
        launcher.wait_for_log(
            &format!("dropped notify message from pid {me}"),
            Duration::from_secs(5)
        ),
        "the launcher did not log dropping READY=1 from the test process (pid {me})"
    );
    let status = launcher
        .wait_exit(Duration::from_secs(10))
        .expect("the launcher still runs after --ready-timeout 3");
    assert_eq!(
        status.code(),
        Some(4),
        "a spoofed READY=1 must not make generation 1 ready: {status}"
    );
    assert!(
        !launcher.log_text().contains("generation 1 serving"),
        "generation 1 was declared serving"
    );
    assert!(
        wait_until(Duration::from_secs(5), || launcher.descendants().is_empty()),
        "processes left: {:?}",
        launcher.descendants()
    );
}

#[test]
fn ready_from_a_descendant_of_a_worker_counts() {
    private_netns(true);
    let dir = TempDir::new("descendant_ready");
    let port = free_port();
    // No exec: the worker is the shell, and example-server (which sends READY=1) is its child.
    let script = dir.write_script(
        "server.sh",
        &format!("{} --port {port} &\nwait", example_server()),
    );
    let script = script.display().to_string();
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            "2",
            "--ready",
            "notify",
            "--ready-timeout",
            "10",
            "--",
            &script,
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", Duration::from_secs(15)),
        "READY=1 from the workers' children did not make generation 1 ready"
    );
    let workers = launcher.workers_of(1);
    let (generation, pid) = http_get(&format!("127.0.0.1:{port}"));
    assert_eq!(generation, 1);
    assert!(
        procfs::parent(pid).is_some_and(|parent| workers.contains(&parent)),
        "pid {pid} answered; it should be a child of a worker {workers:?}"
    );
    assert!(
        !launcher.log_text().contains("dropped notify message"),
        "a descendant's message was dropped"
    );
}

#[test]
fn malformed_and_oversized_messages_leave_the_launcher_serving() {
    private_netns(true);
    let dir = TempDir::new("malformed_notify");
    let mut scripted = ScriptedLauncher::start(&dir, &[], "", 2);
    let workers = scripted.launcher.workers_of(1);
    let socket = notify_socket_of(&scripted.launcher);

    let oversized: Vec<u8> = (0..100 * 1024)
        .map(|i| if i % 2 == 0 { 0xff } else { 0xfe })
        .collect();
    send(&socket, &oversized);
    send(&socket, b"\xff\xfeREADY=1\xc3\x28");
    send(&socket, b"READY");
    send(&socket, b"");
    assert!(
        scripted
            .launcher
            .wait_for_log("dropped oversized notify message", Duration::from_secs(5)),
        "no `dropped oversized notify message` line"
    );
    assert!(
        scripted
            .launcher
            .wait_for_log("dropped malformed notify message", Duration::from_secs(5)),
        "no `dropped malformed notify message` line"
    );
    assert!(
        scripted.launcher.running(),
        "the launcher exited after bad notify messages"
    );
    assert_eq!(
        scripted.launcher.workers_of(1),
        workers,
        "workers changed after bad notify messages"
    );
    for _ in 0..4 {
        assert_eq!(http_get(&scripted.addr).0, 1);
    }
    // It still works as a launcher: a reload goes through.
    scripted.launcher.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        scripted
            .launcher
            .wait_for_workers(2, 2, Duration::from_secs(20)),
        "a reload after bad notify messages did not complete: {:?}",
        scripted.launcher.workers()
    );
}
