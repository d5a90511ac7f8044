//! Ten reloads back to back under two kinds of load (keep-alive and a connection per request) lose no
//! request: every generation 1..=11 answers, after each reload only the new generation answers, and
//! every old worker is gone.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::procfs;
use support::*;

const WORKERS: usize = 4;
const RELOADS: u32 = 10;
/// Start plus readiness of 4 example-servers on a loaded 2-core machine takes well under this.
const GENERATION_DEADLINE: Duration = Duration::from_secs(20);
/// Old workers drain idle keep-alive connections in --drain-idle-ms (200 ms); this leaves slack.
const OLD_GONE_DEADLINE: Duration = Duration::from_secs(10);
/// Probes after each reload: enough to reach every worker with high probability.
const PROBES_PER_RELOAD: usize = 8;

#[test]
fn reload_keeps_serving() {
    private_netns(true);
    let dir = TempDir::new("reload_keeps_serving");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let port_arg = port.to_string();
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            "4",
            "--stop-timeout",
            "10",
            "--",
            EXAMPLE_SERVER,
            "--port",
            &port_arg,
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", GENERATION_DEADLINE),
        "generation 1 did not become ready"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));

    let keepalive = Loadgen::start(&dir, "keepalive", &addr, Mode::KeepAlive, 4, &[]);
    let close = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(
        keepalive.wait_for_traffic(Duration::from_secs(10)),
        "keep-alive loadgen got no response"
    );
    assert!(
        close.wait_for_traffic(Duration::from_secs(10)),
        "connection-per-request loadgen got no response"
    );

    for generation in 2..=RELOADS + 1 {
        let old = procfs::snapshot(&launcher.workers_of(generation - 1));
        assert_eq!(
            old.len(),
            WORKERS,
            "generation {} should have {WORKERS} workers",
            generation - 1
        );
        launcher.signal(Signal::SIGHUP);
        assert!(
            launcher.wait_for_workers(WORKERS, generation, GENERATION_DEADLINE),
            "after SIGHUP #{}, the workers are {:?}, not {WORKERS} of generation {generation}",
            generation - 1,
            launcher.workers()
        );
        let left = procfs::wait_gone(&old, OLD_GONE_DEADLINE);
        assert!(
            left.is_empty(),
            "generation {} pids {left:?} still run after the reload",
            generation - 1
        );
        let new = launcher.workers_of(generation);
        for _ in 0..PROBES_PER_RELOAD {
            let (answered_generation, pid) = http_get(&addr);
            assert_eq!(
                answered_generation, generation,
                "a probe after reload {generation} reached pid {pid}"
            );
            assert!(
                new.contains(&pid),
                "pid {pid} answered but is not a worker of generation {generation} ({new:?})"
            );
        }
    }

    let keepalive = keepalive.stop();
    let close = close.stop();
    eprintln!(
        "keep-alive: {} requests, {} ok, {} failures, {} retries; connection-per-request: {} requests, {} ok, \
         {} failures, {} retries",
        keepalive.requests, keepalive.ok, keepalive.failures, keepalive.retries, close.requests, close.ok,
        close.failures, close.retries
    );
    assert_eq!(
        keepalive.failures, 0,
        "keep-alive loadgen failed: {}",
        keepalive.raw
    );
    assert_eq!(
        close.failures, 0,
        "connection-per-request loadgen failed: {}",
        close.raw
    );
    assert!(keepalive.ok > 0 && close.ok > 0);
    for generation in 1..=RELOADS + 1 {
        let served = keepalive
            .by_generation()
            .get(&generation)
            .copied()
            .unwrap_or(0)
            + close.by_generation().get(&generation).copied().unwrap_or(0);
        assert!(
            served > 0,
            "no response named generation {generation}: keep-alive {:?}, close {:?}",
            keepalive.by_generation(),
            close.by_generation()
        );
    }
    let log = launcher.log_text();
    for generation in 2..=RELOADS + 1 {
        assert!(
            log.contains(&format!("reload to generation {generation} done")),
            "the log never says the reload to generation {generation} is done"
        );
    }
}
