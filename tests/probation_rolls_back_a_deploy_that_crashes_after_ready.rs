//! `--probation 5`: a deploy whose workers get ready and then crash 1 s later is rolled back to the very
//! same old pids (kept alive, receiving nothing, for the probation), `reload --wait` exits 1 with the
//! reason, and no request of a connection-per-request load fails. Control: without `--probation` the
//! same deploy stopped the old generation already, crash restarts keep restarting the broken code, and
//! requests fail (asserted, so the test proves the difference).

mod support;

use std::time::Duration;

use support::control::client;
use support::procfs;
use support::warming_server::crashing_server;
use support::*;

const WORKERS: usize = 2;
/// How long after it listens a new worker crashes.
const CRASH_SECS: f64 = 1.0;
const START_DEADLINE: Duration = Duration::from_secs(20);
/// reload --wait: the new generation's start, its crash, the roll-back.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);
/// The control run's load lasts this long after the reload: a few crash-restart rounds.
const CONTROL_LOAD: Duration = Duration::from_secs(4);

struct Run {
    reload: support::control::CommandOutput,
    load: LoadgenReport,
    old_before: Vec<i32>,
    old_after: Vec<i32>,
    old_still_running: bool,
    log: String,
}

fn run(test: &str, probation: Option<&str>) -> Run {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec![
        "--workers".into(),
        WORKERS.to_string(),
        "--ready".into(),
        "http:/healthz".into(),
        "-v".into(),
    ];
    if let Some(secs) = probation {
        args.extend(["--probation".to_string(), secs.to_string()]);
    }
    args.push("--".into());
    args.extend(crashing_server(&dir, port, CRASH_SECS));
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 did not get ready: {}",
        launcher.log_tail(20)
    );
    let old_before = launcher.workers_of(1);
    let old = procfs::snapshot(&old_before);
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(load.wait_for_traffic(Duration::from_secs(10)));
    let reload = client(&dir, &["reload", "--wait"], WAIT_DEADLINE);
    if probation.is_none() {
        // Let the broken generation crash and be restarted a few times under load.
        let crashed = launcher.wait_for_log_count("exited with status 1", 2, START_DEADLINE);
        assert!(
            crashed,
            "the new generation never crashed: {}",
            launcher.log_tail(20)
        );
        let until = std::time::Instant::now() + CONTROL_LOAD;
        wait_until(CONTROL_LOAD + Duration::from_secs(1), || {
            std::time::Instant::now() >= until
        });
    } else {
        let gone = wait_until(START_DEADLINE, || launcher.workers_of(2).is_empty());
        assert!(
            gone,
            "the new generation was not stopped: {:?}",
            launcher.workers()
        );
    }
    let report = load.stop();
    Run {
        reload,
        load: report,
        old_before,
        old_after: launcher.workers_of(1),
        old_still_running: old.iter().all(|&p| procfs::still_running(p)),
        log: launcher.log_text(),
    }
}

#[test]
fn probation_rolls_back_a_deploy_that_crashes_after_ready() {
    private_netns(true);
    let with = run("probation_on", Some("5"));
    eprintln!(
        "--probation 5: reload --wait exit {}, stderr {:?}; old pids {:?} -> {:?}; load: {} requests, {} \
         failures {:?}",
        with.reload.code(),
        with.reload.stderr.trim(),
        with.old_before,
        with.old_after,
        with.load.requests,
        with.load.failures,
        with.load.failure_kinds
    );
    assert_eq!(
        with.reload.code(),
        1,
        "reload --wait should fail: {}",
        with.reload.show()
    );
    assert!(
        with.reload.stderr.contains("rolled back to generation 1")
            && with.reload.stderr.contains("status 1"),
        "reload --wait should say why: {}",
        with.reload.show()
    );
    assert_eq!(
        with.old_after, with.old_before,
        "not rolled back to the very same old pids"
    );
    assert!(
        with.old_still_running,
        "an old worker was restarted or replaced"
    );
    assert!(
        with.log.contains("on probation for 5.0s"),
        "no probation in the log"
    );
    assert_eq!(
        with.load.failures, 0,
        "requests failed with --probation: {}",
        with.load.raw
    );

    let without = run("probation_off", None);
    eprintln!(
        "without --probation: reload --wait exit {}; old pids still running: {}; load: {} requests, {} \
         failures {:?}",
        without.reload.code(),
        without.old_still_running,
        without.load.requests,
        without.load.failures,
        without.load.failure_kinds
    );
    assert!(
        !without.old_still_running,
        "without --probation the old generation should be gone"
    );
    assert!(
        without.load.failures > 0,
        "the control run without --probation lost no request, so this test proves nothing: {}",
        without.load.raw
    );
}
