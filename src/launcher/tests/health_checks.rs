//! Unit tests of `--health` (health.rs): ready workers are checked every interval, and one that fails
//! N checks in a row is replaced in its slot without losing capacity, with the fake `Processes` and
//! helpers of the parent test module.

use super::*;

const INTERVAL: Duration = Duration::from_secs(10);

fn health() -> Policy {
    Policy {
        steer: true,
        health: Some(HealthPolicy {
            interval: INTERVAL,
            timeout: 2 * SEC,
            failures: 3,
        }),
        ..policy()
    }
}

fn failed() -> ProbeOutcome {
    ProbeOutcome::Answered {
        status: 500,
        excerpt: String::new(),
    }
}

fn passed() -> ProbeOutcome {
    ProbeOutcome::Replied("healthy".into())
}

/// Runs one round of checks at `now`, answering each with `answer(pid)`.
fn check_round(
    l: &mut Launcher,
    p: &mut FakeProcesses,
    now: Instant,
    answer: impl Fn(Pid) -> ProbeOutcome,
) {
    let before = p.health_checks.len();
    l.on_timers(p, now);
    let started: Vec<Pid> = p.health_checks[before..].to_vec();
    for pid in started {
        l.on_probe(p, pid, Check::Health, answer(pid), now);
    }
}

#[test]
fn a_worker_failing_n_checks_in_a_row_is_replaced_beside_it_and_steered_out_once_its_successor_is_ready(
) {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(health(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1, t0);
    assert_eq!(l.next_deadline(), Some(t0 + INTERVAL));
    let (sick, neighbour) = (gen1[0], gen1[1]);
    let answer = |pid| if pid == sick { failed() } else { passed() };
    for round in 1..=2 {
        check_round(&mut l, &mut p, t0 + round * INTERVAL, answer);
        assert_eq!(
            pids_of(&p, 1).len(),
            2,
            "not replaced after {round} failures"
        );
    }
    // A pass in between starts the count again.
    check_round(&mut l, &mut p, t0 + 3 * INTERVAL, |_| passed());
    for round in 4..=5 {
        check_round(&mut l, &mut p, t0 + round * INTERVAL, answer);
    }
    assert_eq!(pids_of(&p, 1).len(), 2);
    check_round(&mut l, &mut p, t0 + 6 * INTERVAL, answer);
    let spawned = pids_of(&p, 1);
    assert_eq!(
        spawned.len(),
        3,
        "the third failure in a row starts a replacement"
    );
    let replacement = spawned[2];
    assert_eq!(p.spawned[2].1, 0, "in the sick worker's slot");
    assert_eq!(
        p.receiving(),
        [sick, neighbour],
        "the sick worker serves until then"
    );
    assert!(p.signals.is_empty());
    // The sick worker is no longer checked; its neighbour still is.
    let t1 = t0 + 6 * INTERVAL;
    l.on_timers(&mut p, t1 + SEC / 2);
    assert_eq!(
        p.receiving(),
        [sick, neighbour],
        "the sick worker serves until then"
    );
    ready(&mut l, &mut p, &[replacement], t1 + SEC);
    assert_eq!(p.receiving(), [neighbour, replacement]);
    let checks_before = p.health_checks.len();
    check_round(&mut l, &mut p, t1 + INTERVAL, answer);
    assert_eq!(&p.health_checks[checks_before..], [neighbour]);
    assert_eq!(l.phase(), &Phase::Serving);
    // The handover: queue empty after the grace, then the sick worker is drained and stopped.
    p.queued.clear();
    l.on_timers(&mut p, t1 + INTERVAL + SEC);
    l.on_timers(&mut p, t1 + INTERVAL + 2 * SEC);
    assert!(
        p.signals.iter().all(|(pid, _)| *pid == sick),
        "only the sick worker is signalled: {:?}",
        p.signals
    );
    assert!(p.signals.iter().any(|(pid, _)| *pid == sick));
    let row = l
        .snapshot(&mut p, t1 + INTERVAL + 2 * SEC)
        .workers
        .into_iter()
        .find(|w| w.pid == neighbour.as_raw())
        .unwrap();
    assert!(row.health.unwrap().passed);
}

#[test]
fn health_is_not_checked_before_ready_nor_without_the_option() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(health(), t0);
    l.start(&mut p, t0);
    l.on_timers(&mut p, t0 + 2 * INTERVAL);
    assert!(p.health_checks.is_empty());

    let (mut l, mut p, t0) = serving();
    l.on_timers(&mut p, t0 + 2 * INTERVAL);
    assert!(p.health_checks.is_empty());
    assert_eq!(l.next_deadline(), None);
}
