//! Ten reloads back to back under two kinds of load (keep-alive and a connection per request) lose no
//! request: every generation 1..=11 answers, after each reload only the new generation answers, and
//! every old worker is gone.

mod support;

use std::time::Duration;

use support::launcher::reload_and_wait;
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
            example_server(),
            "--port",
            &port_arg,
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", GENERATION_DEADLINE),
        "generation 1 did not become ready"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));

    let load = MixedLoad::start(&dir, &addr);

    for generation in 2..=RELOADS + 1 {
        reload_and_wait(
            &launcher,
            WORKERS,
            generation,
            GENERATION_DEADLINE + OLD_GONE_DEADLINE,
            || {},
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

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "keep-alive: {} requests, {} ok, {} failures, {} retries; connection-per-request: {} requests, {} ok, \
         {} failures, {} retries",
        keepalive.requests, keepalive.ok, keepalive.failures, keepalive.retries, close.requests, close.ok,
        close.failures, close.retries
    );
    report.assert_no_failures();
    assert!(keepalive.ok > 0 && close.ok > 0);
    for generation in 1..=RELOADS + 1 {
        let served = report.served_by(generation);
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
