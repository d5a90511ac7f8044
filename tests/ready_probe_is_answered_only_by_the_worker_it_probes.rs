//! `--ready http` probes reach the very worker they probe, never another: a server that answers its
//! pid (503 while it warms up, then 200) runs 4 workers through reloads, and every probe answer the
//! launcher logs (at debug: `worker S (pid P, gen G): ready probe answered 503 (body: "pid=P gen=G")`)
//! comes from the pid it was meant for — while the old generation's workers receive every other
//! connection of the port, so a probe the kernel's hash or the receiving set placed would land on them.

mod support;

use std::time::Duration;

use support::launcher::reload_and_wait;
use support::warming_server::warming_server;
use support::*;

const WORKERS: usize = 4;
const RELOADS: u32 = 3;
/// Each worker answers 503 this long, so it is probed several times (every 100 ms) before it is ready.
const WARMUP_SECS: f64 = 0.5;
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Fewer answers would mean the probes are not what made the workers ready.
const MIN_ANSWERS: usize = 40;

/// (probed pid, answering pid) from one debug line.
fn probed_and_answering(line: &str) -> Option<(i32, i32)> {
    let probed = line
        .split("(pid ")
        .nth(1)?
        .split(',')
        .next()?
        .parse()
        .ok()?;
    let answering = line
        .split("body: \"pid=")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some((probed, answering))
}

#[test]
fn ready_probe_is_answered_only_by_the_worker_it_probes() {
    private_netns(true);
    let dir = TempDir::new("probe_answered_by_its_worker");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--workers",
        &WORKERS.to_string(),
        "--ready",
        "http:/pid",
        "-v",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(warming_server(&dir, port, WARMUP_SECS));
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 did not get ready: {}",
        launcher.log_tail(20)
    );
    // Other clients keep the old generation busy while the new one is probed.
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 2, &[]);
    assert!(load.wait_for_traffic(Duration::from_secs(10)));
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
    }
    let report = load.stop();

    let lines = launcher.log_lines("ready probe answered");
    let answers: Vec<(i32, i32)> = lines
        .iter()
        .filter_map(|l| probed_and_answering(l))
        .collect();
    assert_eq!(
        answers.len(),
        lines.len(),
        "unparsable probe lines: {lines:?}"
    );
    let strays: Vec<&(i32, i32)> = answers.iter().filter(|(p, a)| p != a).collect();
    let not_ok = answers.len() - launcher.log_lines("ready probe answered 200").len();
    eprintln!(
        "{} probe answers ({not_ok} of them 503) over {} generations of {WORKERS} workers; answered by \
         another worker than the probed one: {}; load: {} requests, {} failures",
        answers.len(),
        RELOADS + 1,
        strays.len(),
        report.requests,
        report.failures
    );
    assert!(
        strays.is_empty(),
        "probes answered by another worker: {strays:?}"
    );
    assert!(
        answers.len() >= MIN_ANSWERS,
        "only {} probe answers were logged",
        answers.len()
    );
    assert!(not_ok > 0, "no probe met a warming worker (503)");
    let probed: std::collections::HashSet<i32> = answers.iter().map(|a| a.0).collect();
    assert_eq!(
        probed.len(),
        WORKERS * (RELOADS as usize + 1),
        "every worker was probed"
    );
    assert_eq!(report.failures, 0, "{}", report.raw);
}
