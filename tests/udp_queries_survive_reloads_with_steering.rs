//! A stateless UDP server (DNS-style: the legacy python server of tests/support/udp.rs, which binds
//! without SO_REUSEPORT, never sends READY=1 and dies at SIGTERM) reloads 10 times under query load
//! where every query comes from a socket of its own (a fresh client port, as a DNS stub resolver
//! does), never retried: with steering (the default as root) no query is lost and every pid is
//! replaced. The launcher puts the workers' UDP sockets in their group's steering map, steers an old
//! worker out once the new generation is ready, and signals it only once no datagram waits in its
//! receive queue and --handover-grace has passed.
//!
//! Control: with `--steer off` the old generation is signalled as soon as the new one is ready while
//! the kernel's hash still sends it a share of the datagrams; what it had queued, and what reaches it
//! until its socket closes, is lost. Asserted: at least one query lost (each client that loses one
//! waits its 1 s timeout, so the count stays small; 4 runs of 4 lost 3 to 6 on a 2-core machine).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::udp::{reloads_under_query_load, write_server, QueryLoad};
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 10;
const START_DEADLINE: Duration = Duration::from_secs(20);

fn run(test: &str, steer: &str) -> QueryLoad {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = write_server(&dir);
    let args = [
        "--workers".to_string(),
        WORKERS.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--steer".to_string(),
        steer.to_string(),
        "--stop-timeout".to_string(),
        "10".to_string(),
        "-v".to_string(),
        "--".to_string(),
        python3(),
        server.display().to_string(),
        port.to_string(),
    ];
    let launcher = Launcher::spawn_serving(&dir, &args, START_DEADLINE);
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let load = reloads_under_query_load(&launcher, WORKERS, addr, RELOADS);
    let failures = launcher.log_lines("unable to");
    assert!(
        failures.is_empty(),
        "the launcher could not steer: {failures:?}"
    );
    load
}

#[test]
fn udp_queries_survive_reloads_with_steering() {
    private_netns(true);
    let started = Instant::now();
    let steered = run("udp_steer", "on");
    eprintln!(
        "--steer on: {} queries over {RELOADS} reloads, {} lost, in {:?}",
        steered.sent,
        steered.lost.len(),
        started.elapsed()
    );
    assert!(
        steered.lost.is_empty(),
        "{} of {} queries lost with steering: {:?}",
        steered.lost.len(),
        steered.sent,
        &steered.lost[..steered.lost.len().min(5)]
    );
    steered.assert_every_generation_new_and_answering("--steer on", WORKERS);

    let started = Instant::now();
    let unsteered = run("udp_nosteer", "off");
    eprintln!(
        "--steer off: {} queries over {RELOADS} reloads, {} lost, in {:?}",
        unsteered.sent,
        unsteered.lost.len(),
        started.elapsed()
    );
    assert!(
        !unsteered.lost.is_empty(),
        "--steer off lost no query over {RELOADS} reloads ({} sent): the control shows nothing",
        unsteered.sent
    );
}
