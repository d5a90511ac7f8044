//! A worker of the serving generation that dies is restarted in its slot; while the restarts keep failing
//! the delay doubles (100 ms, 200 ms, 400 ms, 800 ms), and once the program is fixed the slot comes back.
//! The other workers are never touched.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

const WORKERS: usize = 4;
/// Failed restarts to observe: 100 + 200 + 400 + 800 ms of backoff, about 1.5 s in all.
const FAILURES_TO_SEE: usize = 4;

/// "restarting in 200 ms (" -> 200 ms; "restarting in 2.2s (" -> 2200 ms.
fn restart_delay_ms(line: &str) -> u64 {
    let after = line
        .split("restarting in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `restarting in` in {line}"));
    let delay = after.split(" (").next().unwrap().trim();
    if let Some(ms) = delay.strip_suffix("ms") {
        ms.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad delay {delay:?} in {line}"))
    } else if let Some(secs) = delay.strip_suffix('s') {
        (secs
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad delay {delay:?} in {line}"))
            * 1000.0)
            .round() as u64
    } else {
        panic!("bad delay {delay:?} in {line}")
    }
}

#[test]
fn crashed_worker_is_restarted_with_growing_backoff() {
    private_netns(true);
    let dir = TempDir::new("crashed_worker_is_restarted_with_growing_backoff");
    let scripted = ScriptedLauncher::start(
        &dir,
        &["--ready-timeout", "5", "--stop-timeout", "5"],
        "",
        WORKERS,
    );
    let launcher = &scripted.launcher;
    let workers = launcher.workers_of(1);
    let victim = workers[0];
    let victim_slot =
        procfs::env_var(victim, "REUSEPORT_LAUNCH_WORKER").expect("the worker's slot");
    let others = procfs::snapshot(&workers[1..]);

    // Every restart of the slot now exits before it is ready.
    scripted.deploy(&dir, "--exit-before-ready 1");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("SIGKILL a worker");
    assert!(
        launcher.wait_for_log_count("restarting in", FAILURES_TO_SEE, Duration::from_secs(15)),
        "fewer than {FAILURES_TO_SEE} `restarting in` lines"
    );
    let lines = launcher.log_lines("restarting in");
    let first = &lines[0];
    assert!(
        first.contains(&format!("worker {victim_slot} (pid {victim}, gen 1)"))
            && first.contains("SIGKILL"),
        "the first restart line does not name the killed worker and its signal: {first}"
    );
    for line in &lines {
        assert!(
            line.contains(&format!("worker {victim_slot} (")),
            "a restart of another slot: {line}"
        );
    }
    for line in &lines[1..] {
        assert!(
            line.contains("status 1"),
            "a failed restart's line does not give its exit status: {line}"
        );
    }
    let delays: Vec<u64> = lines
        .iter()
        .take(FAILURES_TO_SEE)
        .map(|l| restart_delay_ms(l))
        .collect();
    assert_eq!(
        delays,
        vec![100, 200, 400, 800],
        "restart delays do not double from 100 ms: {lines:#?}"
    );
    assert!(lines[1].contains("2nd failure in a row"), "{}", lines[1]);

    // The fixed program comes back in the same slot; the other three never changed.
    scripted.deploy(&dir, "");
    assert!(
        launcher.wait_for_log("workers ready (slot refilled)", Duration::from_secs(15)),
        "the slot was not refilled after the fix"
    );
    assert!(
        launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)),
        "{:?}",
        launcher.workers()
    );
    for other in &others {
        assert!(
            procfs::still_running(*other),
            "worker pid {} was touched",
            other.pid
        );
    }
    let now = launcher.workers_of(1);
    let replacement: Vec<i32> = now
        .iter()
        .copied()
        .filter(|p| !others.iter().any(|o| o.pid == *p))
        .collect();
    assert_eq!(replacement.len(), 1, "workers {now:?}");
    assert_eq!(
        procfs::env_var(replacement[0], "REUSEPORT_LAUNCH_WORKER").as_deref(),
        Some(victim_slot.as_str()),
        "the replacement runs in another slot"
    );
    assert_eq!(http_get(&scripted.addr).0, 1);
}
