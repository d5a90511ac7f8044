//! Unit tests of `--probation` (probation.rs): the old generation is kept, receiving nothing, until the
//! probation ends; a failure of the new generation meanwhile rolls back to the very same old workers.
//! With the fake `Processes` and helpers of the parent test module.

use super::*;

const PROBATION: Duration = Duration::from_secs(5);

/// Generation 1 serves, generation 2 just got ready and is on probation.
fn on_probation() -> (Launcher, FakeProcesses, Instant, Vec<Pid>, Vec<Pid>) {
    let (mut l, mut p, t0) = serving_with(Policy {
        steer: true,
        probation: PROBATION,
        ..policy()
    });
    let gen1 = pids_of(&p, 1);
    l.take_announcements();
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0 + SEC);
    (l, p, t0 + SEC, gen1, gen2)
}

fn reload_result(l: &mut Launcher) -> Option<ReloadResult> {
    l.take_announcements().into_iter().find_map(|a| match a {
        Announcement::ReloadEnded { result, .. } => Some(result),
        _ => None,
    })
}

#[test]
fn the_old_generation_waits_unsignalled_and_receiving_nothing_then_drains_after_a_clean_probation()
{
    let (mut l, mut p, ready_at, gen1, gen2) = on_probation();
    assert_eq!(p.receiving(), gen2);
    assert!(p.signals.is_empty(), "nothing signalled on probation");
    assert!(l.status_line().contains("on probation"));
    assert_eq!(reload_result(&mut l), None, "the reload has not ended yet");
    assert_eq!(l.next_deadline(), Some(ready_at + PROBATION));
    l.on_timers(&mut p, ready_at + PROBATION - SEC);
    assert!(p.signals.is_empty());
    l.on_timers(&mut p, ready_at + PROBATION);
    assert!(matches!(
        reload_result(&mut l),
        Some(ReloadResult::Succeeded { generation: 2, .. })
    ));
    // Drained as after any reload: by listener (the fake holds none) or signal.
    l.on_timers(&mut p, ready_at + PROBATION + 5 * SEC);
    let signalled: Vec<Pid> = p.signals.iter().map(|s| s.0).collect();
    assert!(
        gen1.iter().all(|pid| signalled.contains(pid)),
        "{signalled:?}"
    );
    assert!(gen2.iter().all(|pid| !signalled.contains(pid)));
}

#[test]
fn a_new_worker_exiting_on_probation_rolls_back_to_the_same_old_workers() {
    let (mut l, mut p, ready_at, gen1, gen2) = on_probation();
    l.on_exit(&mut p, gen2[1], ExitReason::Exited(1), ready_at + SEC);
    assert_eq!(
        p.receiving(),
        gen1,
        "steered back to the very same old pids"
    );
    let Some(ReloadResult::Failed {
        generation: 2,
        reason,
    }) = reload_result(&mut l)
    else {
        panic!("the reload is not reported failed");
    };
    assert!(reason.contains("rolled back to generation 1"), "{reason}");
    assert!(reason.contains("exited with status 1"), "{reason}");
    l.on_timers(&mut p, ready_at + 10 * SEC);
    let signalled: Vec<Pid> = p.signals.iter().map(|s| s.0).collect();
    assert!(
        signalled.contains(&gen2[0]),
        "the rest of the new generation is stopped"
    );
    assert!(gen1.iter().all(|pid| !signalled.contains(pid)));
    assert_eq!(
        pids_of(&p, 1).len(),
        2,
        "no old worker was restarted or replaced"
    );
    assert!(pids_of(&p, 3).is_empty());
    assert!(l.status_line().contains("failed"), "{}", l.status_line());
    assert_eq!(l.phase(), &Phase::Serving);
}

#[test]
fn a_new_worker_failing_its_health_checks_on_probation_rolls_back_and_the_spare_is_not_checked() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let interval = Duration::from_millis(500);
    let mut l = Launcher::new(
        Policy {
            steer: true,
            probation: PROBATION,
            health: Some(HealthPolicy {
                interval,
                timeout: SEC,
                failures: 2,
            }),
            ..policy()
        },
        t0,
    );
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1, t0);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0);
    let failed = ProbeOutcome::TimedOut(SEC);
    for round in 1..=2 {
        let before = p.health_checks.len();
        l.on_timers(&mut p, t0 + round * interval);
        let checked = p.health_checks[before..].to_vec();
        assert!(
            checked.iter().all(|pid| gen2.contains(pid)),
            "the spare is not checked: {checked:?}"
        );
        for pid in checked {
            l.on_probe(
                &mut p,
                pid,
                Check::Health,
                failed.clone(),
                t0 + round * interval,
            );
        }
    }
    assert_eq!(
        p.receiving(),
        gen1,
        "rolled back on the second failed check"
    );
    let Some(ReloadResult::Failed { reason, .. }) = reload_result(&mut l) else {
        panic!("the reload is not reported failed");
    };
    assert!(
        reason.contains("failed 2 health checks in a row (last: no answer within 1.0s)"),
        "{reason}"
    );
    assert!(
        pids_of(&p, 2).len() == 2,
        "no replacement is started on probation"
    );
}
