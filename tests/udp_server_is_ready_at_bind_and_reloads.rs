//! A legacy UDP server (python: binds without SO_REUSEPORT, never sends READY=1, dies at SIGTERM) is
//! ready as soon as it has bound its UDP socket (`--ready listen`, the default), and reloads: after
//! each SIGHUP every pid is replaced and the new generation answers. The same with a server that binds
//! UDP and listens on TCP on the same port (as a DNS server does): both answer, from the new
//! generation, after every reload.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::launcher::reload_and_wait;
use support::udp::{query, tcp_query, write_server};
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 3;
/// Start of python interpreters on a loaded 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(20);
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
/// A local python answers a datagram in well under a millisecond.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

fn run(test: &str, with_tcp: bool) {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = write_server(&dir);
    let mut args = vec![
        "--workers".to_string(),
        WORKERS.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--stop-timeout".to_string(),
        "10".to_string(),
        "-v".to_string(),
        "--".to_string(),
        python3(),
        server.display().to_string(),
        port.to_string(),
    ];
    if with_tcp {
        args.push("tcp".into());
    }
    let launcher = Launcher::spawn_serving(&dir, &args, START_DEADLINE);
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    for generation in 1..=RELOADS + 1 {
        if generation > 1 {
            reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
        }
        let pids = launcher.workers_of(generation);
        let (g, pid) = query(addr, b"hello", QUERY_TIMEOUT)
            .unwrap_or_else(|e| panic!("generation {generation}: UDP query failed: {e}"));
        assert_eq!(g, generation, "UDP answer from pid {pid}");
        assert!(
            pids.contains(&pid),
            "UDP answer from pid {pid}, not one of {pids:?}"
        );
        if with_tcp {
            let (g, pid) = tcp_query(addr, QUERY_TIMEOUT)
                .unwrap_or_else(|e| panic!("generation {generation}: TCP query failed: {e}"));
            assert_eq!(g, generation, "TCP answer from pid {pid}");
            assert!(
                pids.contains(&pid),
                "TCP answer from pid {pid}, not one of {pids:?}"
            );
        }
    }
    assert!(
        launcher.log_lines("SIGKILL").is_empty(),
        "python dies at SIGTERM; no SIGKILL expected: {:?}",
        launcher.log_lines("SIGKILL")
    );
}

#[test]
fn udp_only_server_is_ready_at_bind_and_reloads() {
    private_netns(true);
    run("udp_only", false);
}

#[test]
fn udp_and_tcp_server_is_ready_and_reloads() {
    private_netns(true);
    run("udp_tcp", true);
}
