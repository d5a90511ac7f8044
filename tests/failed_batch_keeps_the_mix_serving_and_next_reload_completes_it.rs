//! `--workers 4 --max-surge 1`, and a deploy whose generation 2 cannot start in slots 2 and 3 (the
//! PROGRAM script exits before ready there, keyed on REUSEPORT_LAUNCH_GENERATION and
//! REUSEPORT_LAUNCH_WORKER): the third batch fails, `reload --wait` exits 1 saying "2 of 4 slots on
//! generation 2", slots 0 and 1 keep their new workers and slots 2 and 3 their very same old ones,
//! both generations answer, `status` and `/metrics` (reuseport_launch_slot_generation) show each slot's
//! generation; the next reload (generation 3,
//! which starts everywhere) replaces every slot. No request fails under load throughout.

mod support;

use std::time::Duration;

use support::admin::{admin_get, parse_metrics};
use support::control::{client, CLIENT_DEADLINE};
use support::*;

const WORKERS: usize = 4;
/// `reload --wait` returns within this: four batches of example-servers with a 200 ms start delay.
const WAIT_DEADLINE: Duration = Duration::from_secs(60);

/// The slot (REUSEPORT_LAUNCH_WORKER) of a live worker.
fn slot_of(pid: i32) -> Option<usize> {
    procfs::env_var(pid, "REUSEPORT_LAUNCH_WORKER")?
        .parse()
        .ok()
}

#[test]
fn failed_batch_keeps_the_mix_serving_and_next_reload_completes_it() {
    private_netns(true);
    let dir = TempDir::new("failed_batch_keeps_the_mix_serving_and_next_reload_completes_it");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", free_port());
    let server = example_server();
    let script = dir.write_script(
        "server.sh",
        &format!(
            "if [ \"$REUSEPORT_LAUNCH_GENERATION\" = 2 ] && [ \"$REUSEPORT_LAUNCH_WORKER\" -ge 2 ]; then\n\
             \x20 exec {server} --port {port} --exit-before-ready 3\n\
             fi\n\
             exec {server} --port {port} --start-delay-ms 200"
        ),
    );
    let script = script.display().to_string();
    let mut launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers",
            "4",
            "--max-surge",
            "1",
            "--stop-timeout",
            "10",
            "--name",
            "web",
            "--admin",
            &admin,
            "--",
            &script,
        ],
        Duration::from_secs(20),
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let gen1 = launcher.workers_of(1);
    let kept: Vec<i32> = gen1
        .iter()
        .copied()
        .filter(|&pid| slot_of(pid).is_some_and(|s| s >= 2))
        .collect();
    assert_eq!(kept.len(), 2, "slots of generation 1: {gen1:?}");
    let kept_ids = procfs::snapshot(&kept);
    let load = MixedLoad::start(&dir, &addr);

    // The reload fails at its third batch.
    let failed = client(&dir, &["reload", "--name", "web", "--wait"], WAIT_DEADLINE);
    assert_eq!(failed.code(), 1, "reload --wait: {}", failed.show());
    let said = format!("{}{}", failed.stdout, failed.stderr);
    for mention in ["2 of 4 slots on generation 2", "status 3", "worker 2"] {
        assert!(
            said.contains(mention),
            "reload --wait does not say {mention:?}: {}",
            failed.show()
        );
    }
    assert!(
        launcher.running(),
        "the launcher exited after a failed batch"
    );
    // The mix: generation 2 in slots 0 and 1, the very same generation-1 workers in 2 and 3.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let workers = launcher.workers();
            workers.len() == WORKERS
                && launcher
                    .workers_of(2)
                    .iter()
                    .all(|&p| slot_of(p).is_some_and(|s| s < 2))
                && launcher.workers_of(2).len() == 2
        }),
        "after the failed batch the workers are {:?}",
        launcher.workers()
    );
    assert!(
        kept_ids.iter().all(|&p| procfs::still_running(p)),
        "an old worker of a slot not yet replaced was stopped"
    );
    let status = client(&dir, &["status", "--name", "web"], CLIENT_DEADLINE);
    assert_eq!(status.code(), 0, "status: {}", status.show());
    assert!(
        status
            .stdout
            .contains("slots: 0=gen 2, 1=gen 2, 2=gen 1, 3=gen 1"),
        "status does not show each slot's generation: {}",
        status.stdout
    );
    assert!(
        status.stdout.contains("2 of 4 slots on generation 2"),
        "status line: {}",
        status.stdout
    );
    let json = client(
        &dir,
        &["status", "--name", "web", "--json"],
        CLIENT_DEADLINE,
    );
    assert!(
        json.stdout
            .contains(r#""slots":[{"slot":0,"generation":2},{"slot":1,"generation":2},{"slot":2,"generation":1},{"slot":3,"generation":1}]"#),
        "status --json: {}",
        json.stdout
    );
    let scrape = parse_metrics(&dir, &admin_get(&admin, "/metrics").body, false);
    for (slot, generation) in [(0, 2.0), (1, 2.0), (2, 1.0), (3, 1.0)] {
        assert_eq!(
            scrape.get(&format!("reuseport_launch_slot_generation{{slot={slot}}}")),
            generation,
            "slot {slot}'s generation in /metrics"
        );
    }
    let mut answered = std::collections::BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            answered.insert(http_get(&addr).0);
            answered.len() == 2
        }),
        "both generations should answer in the mix; only {answered:?} did"
    );

    // The next reload replaces every slot: those on generation 2 as well as those on 1.
    let fixed = client(&dir, &["reload", "--name", "web", "--wait"], WAIT_DEADLINE);
    assert_eq!(fixed.code(), 0, "reload --wait: {}", fixed.show());
    assert!(
        launcher.wait_for_workers(WORKERS, 3, Duration::from_secs(15)),
        "after the next reload the workers are {:?}",
        launcher.workers()
    );
    assert!(procfs::wait_gone(&kept_ids, Duration::from_secs(10)).is_empty());
    let status = client(&dir, &["status", "--name", "web"], CLIENT_DEADLINE);
    assert!(
        status
            .stdout
            .contains("slots: 0=gen 3, 1=gen 3, 2=gen 3, 3=gen 3"),
        "status after the next reload: {}",
        status.stdout
    );
    assert_eq!(http_get(&addr).0, 3);

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "keep-alive: {} ok, {} failures, {} retries; connection-per-request: {} ok, {} failures",
        keepalive.ok, keepalive.failures, keepalive.retries, close.ok, close.failures
    );
    report.assert_no_failures();
    assert!(report.served_by(1) > 0 && report.served_by(2) > 0 && report.served_by(3) > 0);
}
