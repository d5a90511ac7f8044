//! Connections queued on an old worker's listener (accepted by the kernel, not yet by the worker) survive
//! the old listener closing during a reload with steering (whatever net.ipv4.tcp_migrate_req says: the
//! SELECT_OR_MIGRATE program migrates them), and without steering only when the sysctl is 1; the launcher
//! warns at start when it is 0 and steering is off, and only then.
//!
//! How the queue is made deterministic: the only generation-1 worker is stopped (SIGSTOP), so the kernel
//! queues the test's connections on its listener; then a reload starts generation 2, and once it serves,
//! the stopped old worker is killed, which closes its listener with the connections still queued (what a
//! worker that closes its listener on the stop signal does, minus the race with its accept loop).

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::http::{parse_response, read_response};
use support::procfs;
use support::scenarios::{ScriptedLauncher, GENERATION_DEADLINE};
use support::*;

/// Connections queued on the old listener; far below the listen backlog (1024).
const QUEUED: usize = 20;
const WARNING: &str = "net.ipv4.tcp_migrate_req is 0 and steering is off";

/// Returns (answered by generation 2, failed) for the QUEUED connections.
fn queued_connections_through_reload(
    test_name: &str,
    migrate_req: bool,
    steer: &str,
) -> (usize, usize, String) {
    private_netns(migrate_req);
    let dir = TempDir::new(test_name);
    let mut scripted =
        ScriptedLauncher::start(&dir, &["--stop-timeout", "10", "--steer", steer], "", 1);
    let old = scripted.launcher.workers_of(1);
    let old_ids = procfs::snapshot(&old);
    let old_pid = Pid::from_raw(old[0]);

    kill(old_pid, Signal::SIGSTOP).expect("SIGSTOP the generation-1 worker");
    let mut queued: Vec<TcpStream> = (0..QUEUED)
        .map(|i| {
            let mut stream = TcpStream::connect(&scripted.addr)
                .unwrap_or_else(|e| panic!("connection {i} to the stopped worker's listener: {e}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: queued\r\nConnection: close\r\n\r\n")
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            stream
        })
        .collect();

    scripted.launcher.signal(Signal::SIGHUP);
    assert!(
        scripted
            .launcher
            .wait_for_log("generation 2 serving", GENERATION_DEADLINE),
        "generation 2 did not become ready"
    );
    // The old worker got its stop signal while stopped; kill it so its listener closes without accepting.
    kill(old_pid, Signal::SIGKILL).expect("SIGKILL the stopped generation-1 worker");
    let left = procfs::wait_gone(&old_ids, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "the killed old worker {left:?} is still there"
    );

    let mut answered_by_new = 0;
    let mut failed = 0;
    for stream in &mut queued {
        match read_response(stream).and_then(|r| parse_response(&r)) {
            Ok((2, _)) => answered_by_new += 1,
            Ok((generation, pid)) => {
                panic!("a queued connection was answered by pid {pid} of generation {generation}")
            }
            Err(why) => {
                if failed == 0 {
                    eprintln!("first queued connection that failed: {why}");
                }
                failed += 1;
            }
        }
    }
    assert!(scripted.launcher.running(), "the launcher exited");
    assert_eq!(
        http_get(&scripted.addr).0,
        2,
        "generation 2 does not serve new connections"
    );
    let log = scripted.launcher.log_text();
    (answered_by_new, failed, log)
}

#[test]
fn with_steering_queued_connections_move_to_the_new_generation_even_with_migrate_req_off() {
    let (answered, failed, log) =
        queued_connections_through_reload("steered_migrate_req_0", false, "on");
    assert_eq!(
        failed, 0,
        "with steering and tcp_migrate_req=0, {failed} of {QUEUED} queued connections failed"
    );
    assert_eq!(answered, QUEUED);
    assert!(
        !log.contains(WARNING) && log.contains("it does not matter with steering"),
        "the launcher should say that tcp_migrate_req does not matter with steering"
    );
}

#[test]
fn with_migrate_req_queued_connections_move_to_the_new_generation() {
    let (answered, failed, log) = queued_connections_through_reload("migrate_req_1", true, "off");
    assert_eq!(
        failed, 0,
        "with tcp_migrate_req=1, {failed} of {QUEUED} queued connections failed"
    );
    assert_eq!(answered, QUEUED);
    assert!(
        !log.contains(WARNING),
        "the launcher warns about tcp_migrate_req although it is 1"
    );
}

#[test]
fn without_steering_or_migrate_req_queued_connections_are_reset_and_the_launcher_warns() {
    let (answered, failed, log) = queued_connections_through_reload("migrate_req_0", false, "off");
    eprintln!("with tcp_migrate_req=0: {answered} answered, {failed} failed of {QUEUED}");
    assert!(
        failed > 0,
        "with tcp_migrate_req=0 no queued connection failed, so this test proves nothing"
    );
    let warning = log.lines().find(|l| l.contains(WARNING));
    let warning = warning.unwrap_or_else(|| panic!("no `{WARNING}` warning in the log"));
    assert!(
        warning.contains("sysctl"),
        "the warning does not say how to fix it: {warning}"
    );
}
