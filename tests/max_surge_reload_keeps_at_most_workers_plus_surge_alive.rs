//! `--workers 4 --max-surge 1` with workers that take 300 ms to get ready: a reload replaces one slot
//! at a time. Sampled every 20 ms (wait_until's interval) during the reload, the launcher never has
//! more than 5 live children; all 4 workers are replaced (new pids, generation 2); `status` shows the
//! slots' generations mid-rollout and after it; no request fails under load.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::control::{client, CLIENT_DEADLINE};
use support::*;

const WORKERS: usize = 4;
const SURGE: usize = 1;
/// Start plus readiness of 4 example-servers with a 300 ms start delay, on a loaded 2-core machine.
const GENERATION_DEADLINE: Duration = Duration::from_secs(20);
/// Four batches of (300 ms start + 100 ms handover grace + the old worker's drain) take a few seconds.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(40);

#[test]
fn max_surge_reload_keeps_at_most_workers_plus_surge_alive() {
    private_netns(true);
    let dir = TempDir::new("max_surge_reload_keeps_at_most_workers_plus_surge_alive");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let port_arg = port.to_string();
    let launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers",
            "4",
            "--max-surge",
            "1",
            "--stop-timeout",
            "10",
            "--",
            example_server(),
            "--port",
            &port_arg,
            "--start-delay-ms",
            "300",
        ],
        GENERATION_DEADLINE,
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let old = procfs::snapshot(&launcher.workers_of(1));
    let load = MixedLoad::start(&dir, &addr);

    let started = Instant::now();
    launcher.signal(Signal::SIGHUP);
    let mut most_alive = 0;
    let mut samples = 0;
    let mut mid_status = None;
    let done = wait_until(ROLLOUT_DEADLINE, || {
        let alive = procfs::children(launcher.pid())
            .into_iter()
            .filter(|&pid| procfs::alive(pid))
            .count();
        most_alive = most_alive.max(alive);
        samples += 1;
        // Once the second batch starts, slot 0 is on generation 2 and slots 2 and 3 still on 1.
        if mid_status.is_none() && launcher.log_text().contains("batch 2: starting slot 1") {
            mid_status = Some(client(&dir, &["status"], CLIENT_DEADLINE));
        }
        let workers = launcher.workers();
        workers.len() == WORKERS
            && workers.iter().all(|&(_, g)| g == 2)
            && !old.iter().any(|&p| procfs::still_running(p))
    });
    let took = started.elapsed();
    assert!(
        done,
        "the batched reload did not finish within {ROLLOUT_DEADLINE:?}: workers {:?}\n{}",
        launcher.workers(),
        launcher.log_tail(30)
    );
    eprintln!(
        "batched reload of {WORKERS} workers, --max-surge {SURGE}: {} ms, {samples} samples, at most \
         {most_alive} workers alive",
        took.as_millis()
    );
    assert!(
        most_alive <= WORKERS + SURGE,
        "{most_alive} workers alive at once during the reload, more than {WORKERS} + {SURGE}:\n{}",
        launcher.log_tail(40)
    );
    assert!(
        samples >= 20,
        "only {samples} samples: the reload was too quick to show batching"
    );
    let log = launcher.log_text();
    for batch in 1..=WORKERS {
        let line = format!("batch {batch}: starting slot {}", batch - 1);
        assert!(log.contains(&line), "the log never says `{line}`");
    }
    let new = launcher.workers_of(2);
    assert_eq!(new.len(), WORKERS);
    assert!(
        new.iter().all(|pid| !old.iter().any(|o| o.pid == *pid)),
        "a pid of generation 1 is counted as new: {new:?}"
    );

    let mid = mid_status.expect("the second batch never started");
    assert_eq!(mid.code(), 0, "status failed mid-rollout: {}", mid.show());
    for slot in ["0=gen 2", "2=gen 1", "3=gen 1"] {
        assert!(
            mid.stdout.contains(slot),
            "status mid-rollout does not show slot {slot}: {}",
            mid.stdout
        );
    }
    let after = client(&dir, &["status"], CLIENT_DEADLINE);
    assert!(
        after
            .stdout
            .contains("slots: 0=gen 2, 1=gen 2, 2=gen 2, 3=gen 2"),
        "status after the rollout: {}",
        after.show()
    );
    for _ in 0..8 {
        let (generation, pid) = http_get(&addr);
        assert_eq!(
            generation, 2,
            "pid {pid} of generation {generation} answered"
        );
    }

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "keep-alive: {} ok, {} failures, {} retries; connection-per-request: {} ok, {} failures",
        keepalive.ok, keepalive.failures, keepalive.retries, close.ok, close.failures
    );
    report.assert_no_failures();
    assert!(report.served_by(2) > 0, "generation 2 served nothing");
}
