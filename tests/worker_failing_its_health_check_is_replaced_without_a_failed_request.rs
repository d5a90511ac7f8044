//! `--health http:/healthz`: a worker that is alive but whose own /healthz turns 500 is replaced within
//! a few --health-interval periods — its replacement starts in the same slot and gets ready first, then
//! the sick worker is steered out and drained — while its neighbour is left alone and no request of a
//! connection-per-request load fails. The log says what failed.

mod support;

use std::time::{Duration, Instant};

use support::procfs;
use support::warming_server::sickening_server;
use support::*;

const WORKERS: usize = 2;
const INTERVAL_SECS: f64 = 0.5;
const FAILURES: u32 = 3;
const START_DEADLINE: Duration = Duration::from_secs(20);
/// FAILURES intervals to decide, one python start for the replacement, the handover and drain.
const REPLACE_DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn worker_failing_its_health_check_is_replaced_without_a_failed_request() {
    private_netns(true);
    let dir = TempDir::new("health_replaces_sick_worker");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sick_dir = dir.join("sick");
    std::fs::create_dir_all(&sick_dir).unwrap();
    let mut args: Vec<String> = [
        "--workers",
        &WORKERS.to_string(),
        "--health",
        "http:/healthz",
        "--health-interval",
        &INTERVAL_SECS.to_string(),
        "--health-failures",
        &FAILURES.to_string(),
        "--ready",
        "http:/healthz",
        "-v",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(sickening_server(&dir, port, &sick_dir));
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 did not get ready: {}",
        launcher.log_tail(20)
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(load.wait_for_traffic(Duration::from_secs(10)));
    // Some healthy rounds first: nobody is replaced.
    assert!(launcher.wait_for_log_count("health check answered 200", 2 * WORKERS, START_DEADLINE));
    let before = launcher.workers_of(1);
    let (sick, neighbour) = (before[0], before[1]);
    let sick_proc = procfs::snapshot(&[sick]);
    let made_sick = Instant::now();
    std::fs::write(sick_dir.join(format!("sick-{sick}")), "").unwrap();
    let replaced = wait_until(REPLACE_DEADLINE, || {
        let now = launcher.workers_of(1);
        now.len() == WORKERS
            && !now.contains(&sick)
            && !sick_proc.iter().any(|&p| procfs::still_running(p))
    });
    let took = made_sick.elapsed();
    let after = launcher.workers_of(1);
    let report = load.stop();
    eprintln!(
        "sick worker {sick} replaced: {replaced} after {} ms (--health-interval {INTERVAL_SECS}s, \
         --health-failures {FAILURES}); workers {before:?} -> {after:?}; load: {} requests, {} failures",
        took.as_millis(),
        report.requests,
        report.failures
    );
    assert!(
        replaced,
        "the sick worker was not replaced: {}",
        launcher.log_tail(30)
    );
    assert!(
        after.contains(&neighbour),
        "the healthy neighbour was replaced too: {after:?}"
    );
    let failed = launcher.log_lines("health check failed: answered 500");
    assert!(
        failed.len() >= FAILURES as usize,
        "the log does not say what failed: {failed:?}"
    );
    assert!(
        failed.iter().all(|l| l.contains(&format!("pid {sick},"))),
        "a health check of another worker failed: {failed:?}"
    );
    assert!(launcher.log_lines("starting its replacement in slot").len() == 1);
    assert_eq!(report.failures, 0, "requests failed: {}", report.raw);
}
