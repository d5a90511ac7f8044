//! Unit tests of batched reloads (rollout.rs, `--max-surge`): one batch at a time, never more than
//! `workers + surge` alive, a failed batch keeps the mix, the next reload completes every slot, and
//! `--probation` always reloads the whole generation. With the fake `Processes` and helpers of the
//! parent test module.

use super::*;

/// 4 workers, steering on, replacing `surge` slots at a time; generation 1 serves.
fn batched(surge: usize) -> (Launcher, FakeProcesses, Instant) {
    serving_with(Policy {
        workers: 4,
        max_surge: Some(surge),
        ..steering()
    })
}

/// 2 workers, steering on, one slot at a time, health checks every `interval` that replace a worker
/// after `failures` failed ones.
fn two_slots_one_at_a_time_with_health(interval: Duration, failures: u32) -> Policy {
    Policy {
        workers: 2,
        max_surge: Some(1),
        health: Some(HealthPolicy {
            interval,
            timeout: 2 * SEC,
            failures,
        }),
        ..steering()
    }
}

/// The pid of the live worker of `generation` in `slot`.
fn in_slot(l: &Launcher, generation: u32, slot: usize) -> Pid {
    l.workers
        .iter()
        .find(|w| w.generation == generation && w.slot == slot)
        .map(|w| w.pid)
        .unwrap_or_else(|| panic!("no worker of generation {generation} in slot {slot}"))
}

/// Lets the handover of every steered-out worker end (grace passed, queue empty), and every worker
/// that got the stop signal exit; returns the time afterwards and the pids that exited.
fn finish_stops(l: &mut Launcher, p: &mut FakeProcesses, now: Instant) -> (Instant, Vec<Pid>) {
    let now = now + SEC;
    l.on_timers(p, now);
    let signalled: Vec<Pid> = l
        .workers
        .iter()
        .filter(|w| matches!(w.phase, WorkerPhase::Stopping { .. }))
        .map(|w| w.pid)
        .collect();
    for &pid in &signalled {
        l.on_exit(p, pid, ExitReason::Exited(0), now);
    }
    (now, signalled)
}

fn reload_result(l: &mut Launcher) -> Option<ReloadResult> {
    l.take_announcements().into_iter().find_map(|a| match a {
        Announcement::ReloadEnded { result, .. } => Some(result),
        _ => None,
    })
}

#[test]
fn a_batched_reload_replaces_one_slot_at_a_time_with_at_most_workers_plus_surge_alive() {
    let (mut l, mut p, t0) = batched(1);
    let gen1 = pids_of(&p, 1);
    l.take_announcements();
    l.request_reload(&mut p, t0);
    let mut now = t0;
    let mut most_alive = l.workers.len();
    for slot in 0..4 {
        let gen2 = pids_of(&p, 2);
        assert_eq!(
            gen2.len(),
            slot + 1,
            "batch {slot}: one new worker at a time"
        );
        assert_eq!(p.spawned.last().map(|s| (s.0, s.1)), Some((2, slot)));
        most_alive = most_alive.max(l.workers.len());
        // Its slot's old worker receives until the new one is ready.
        assert!(p.receiving().contains(&gen1[slot]));
        now += SEC;
        ready(&mut l, &mut p, &gen2[slot..], now);
        assert!(p.receiving().contains(&gen2[slot]));
        assert!(!p.receiving().contains(&gen1[slot]));
        assert_eq!(
            p.receiving().len(),
            4,
            "every slot keeps one receiving worker"
        );
        if slot < 3 {
            assert_eq!(
                l.phase(),
                &Phase::Reloading {
                    next: 2,
                    started: t0
                }
            );
            assert!(l
                .status_line()
                .contains(&format!("{} of 4 slots on generation 2", slot + 1)));
            // The next batch waits until the old worker of this one is gone.
            assert_eq!(pids_of(&p, 2).len(), slot + 1);
        }
        most_alive = most_alive.max(l.workers.len());
        let (later, exited) = finish_stops(&mut l, &mut p, now);
        assert_eq!(
            exited,
            vec![gen1[slot]],
            "only the replaced slot's old worker stops"
        );
        now = later;
    }
    assert_eq!(l.phase(), &Phase::Serving);
    assert!(
        most_alive <= 5,
        "{most_alive} workers alive at once, more than 4 + 1"
    );
    assert!(matches!(
        reload_result(&mut l),
        Some(ReloadResult::Succeeded { generation: 2, .. })
    ));
    assert_eq!(p.receiving(), pids_of(&p, 2));
    assert_eq!(l.snapshot(&mut p, now).slots, vec![2, 2, 2, 2]);
}

#[test]
fn a_surge_of_two_starts_two_slots_per_batch() {
    let (mut l, mut p, t0) = batched(2);
    l.request_reload(&mut p, t0);
    assert_eq!(pids_of(&p, 2).len(), 2);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0 + SEC);
    assert_eq!(l.snapshot(&mut p, t0).slots, vec![2, 2, 1, 1]);
    let (now, exited) = finish_stops(&mut l, &mut p, t0 + SEC);
    assert_eq!(exited.len(), 2);
    assert_eq!(
        pids_of(&p, 2).len(),
        4,
        "the second batch starts both remaining slots"
    );
    let rest = pids_of(&p, 2)[2..].to_vec();
    ready(&mut l, &mut p, &rest, now);
    assert_eq!(l.phase(), &Phase::Serving);
}

#[test]
fn a_batch_that_fails_keeps_the_mix_serving_and_the_next_reload_replaces_every_slot() {
    let (mut l, mut p, t0) = batched(1);
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let mut now = t0;
    for slot in 0..2 {
        now += SEC;
        let pid = in_slot(&l, 2, slot);
        ready(&mut l, &mut p, &[pid], now);
        now = finish_stops(&mut l, &mut p, now).0;
    }
    l.take_announcements();
    // The third batch's worker exits before it is ready.
    let failing = in_slot(&l, 2, 2);
    l.on_exit(&mut p, failing, ExitReason::Exited(1), now);
    assert_eq!(l.phase(), &Phase::Serving);
    let Some(ReloadResult::Failed {
        generation: 2,
        reason,
    }) = reload_result(&mut l)
    else {
        panic!("the reload should have failed");
    };
    assert!(reason.contains("status 1"), "{reason}");
    assert!(reason.contains("2 of 4 slots on generation 2"), "{reason}");
    assert!(
        l.status_line().contains("2 of 4 slots on generation 2"),
        "{}",
        l.status_line()
    );
    // Slots 0 and 1 keep their new workers, 2 and 3 their old ones, untouched.
    let mut receiving = p.receiving();
    receiving.sort();
    let mut expected = vec![in_slot(&l, 2, 0), in_slot(&l, 2, 1), gen1[2], gen1[3]];
    expected.sort();
    assert_eq!(receiving, expected);
    assert!(!p
        .signals
        .iter()
        .any(|(pid, _)| *pid == gen1[2] || *pid == gen1[3]));
    assert_eq!(l.snapshot(&mut p, now).slots, vec![2, 2, 1, 1]);
    assert!(l.health().is_ok(), "every slot is served: {:?}", l.health());

    // A crash in the mix is restarted by the generation that serves its slot.
    l.on_exit(&mut p, gen1[3], ExitReason::Exited(1), now);
    l.on_timers(&mut p, now + SEC);
    assert_eq!(p.spawned.last().map(|s| (s.0, s.1)), Some((1, 3)));
    let refill = p.spawned.last().unwrap().2;
    ready(&mut l, &mut p, &[refill], now + SEC);
    now += 2 * SEC;

    // The next reload replaces every slot, those on generation 2 too.
    l.request_reload(&mut p, now);
    for slot in 0..4 {
        now += SEC;
        let pid = in_slot(&l, 3, slot);
        ready(&mut l, &mut p, &[pid], now);
        now = finish_stops(&mut l, &mut p, now).0;
    }
    assert_eq!(l.phase(), &Phase::Serving);
    assert!(matches!(
        reload_result(&mut l),
        Some(ReloadResult::Succeeded { generation: 3, .. })
    ));
    assert!(
        l.workers.iter().all(|w| w.generation == 3),
        "{:?}",
        l.workers
    );
    assert_eq!(l.snapshot(&mut p, now).slots, vec![3, 3, 3, 3]);
    assert!(
        l.status_line().starts_with("gen 3: 4/4 ready"),
        "{}",
        l.status_line()
    );
}

#[test]
fn a_batch_that_misses_the_ready_timeout_fails_the_same_way() {
    let (mut l, mut p, t0) = batched(1);
    l.request_reload(&mut p, t0);
    let pid = in_slot(&l, 2, 0);
    ready(&mut l, &mut p, &[pid], t0 + SEC);
    let (now, _) = finish_stops(&mut l, &mut p, t0 + SEC);
    let late = in_slot(&l, 2, 1);
    l.on_timers(&mut p, now + 5 * SEC);
    assert_eq!(l.phase(), &Phase::Serving);
    assert!(
        p.signals.contains(&(late, Signal::SIGTERM)),
        "the late worker is stopped"
    );
    assert!(
        matches!(&l.last_reload, Some(ReloadResult::Failed { reason, .. })
        if reason.contains("--ready-timeout") && reason.contains("1 of 4 slots on generation 2"))
    );
}

#[test]
fn a_new_worker_that_crashes_in_a_switched_slot_is_restarted_and_the_rollout_goes_on() {
    let (mut l, mut p, t0) = batched(1);
    l.request_reload(&mut p, t0);
    let first = in_slot(&l, 2, 0);
    ready(&mut l, &mut p, &[first], t0 + SEC);
    let (now, _) = finish_stops(&mut l, &mut p, t0 + SEC);
    l.on_exit(&mut p, first, ExitReason::Exited(1), now);
    assert!(
        matches!(l.phase(), Phase::Reloading { .. }),
        "not a failed batch"
    );
    l.on_timers(&mut p, now + SEC);
    assert!(p.spawned.iter().filter(|s| s.0 == 2 && s.1 == 0).count() == 2);
}

#[test]
fn reload_max_surge_overrides_the_flag_for_one_reload() {
    let (mut l, mut p, t0) = serving_with(Policy {
        workers: 4,
        ..steering()
    });
    assert!(l.check_surge(0).unwrap_err().contains("at least 1"));
    l.check_surge(1).unwrap();
    l.request_reload_with_surge(&mut p, Some(1), t0);
    assert_eq!(pids_of(&p, 2).len(), 1, "one slot at a time");
    let (mut now, mut slot) = (t0, 0);
    while l.phase() != &Phase::Serving {
        now += SEC;
        let pid = in_slot(&l, 2, slot);
        ready(&mut l, &mut p, &[pid], now);
        now = finish_stops(&mut l, &mut p, now).0;
        slot += 1;
    }
    // The next reload is the whole generation again.
    l.request_reload(&mut p, now);
    assert_eq!(pids_of(&p, 3).len(), 4);
}

#[test]
fn a_surge_above_the_workers_is_the_whole_generation() {
    let (mut l, mut p, t0) = batched(9);
    l.request_reload(&mut p, t0);
    assert_eq!(pids_of(&p, 2).len(), 4);
    assert!(!l.status_line().contains("at a time"));
}

#[test]
fn with_probation_a_reload_always_replaces_the_whole_generation() {
    let (mut l, mut p, t0) = serving_with(Policy {
        workers: 4,
        max_surge: Some(1),
        probation: 5 * SEC,
        ..steering()
    });
    let err = l.check_surge(1).unwrap_err();
    assert!(err.contains("--probation"), "{err}");
    l.request_reload(&mut p, t0);
    assert_eq!(
        pids_of(&p, 2).len(),
        4,
        "probation keeps the whole old generation as a spare"
    );
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0 + SEC);
    assert!(l.status_line().contains("on probation"));
    assert!(
        p.signals.is_empty(),
        "the spare generation is not signalled"
    );
}

#[test]
fn after_a_failed_batch_the_health_checks_cover_both_generations_of_the_mix() {
    let interval = 10 * SEC;
    let (mut l, mut p, t0) = serving_with(two_slots_one_at_a_time_with_health(interval, 3));
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let mut now = t0 + SEC;
    let switched = in_slot(&l, 2, 0);
    ready(&mut l, &mut p, &[switched], now);
    now = finish_stops(&mut l, &mut p, now).0;
    let failing = in_slot(&l, 2, 1);
    l.on_exit(&mut p, failing, ExitReason::Exited(1), now);
    assert_eq!(l.snapshot(&mut p, now).slots, vec![2, 1]);

    let before = p.health_checks.len();
    l.on_timers(&mut p, now + interval);
    let mut checked = p.health_checks[before..].to_vec();
    checked.sort();
    let mut serving = vec![switched, gen1[1]];
    serving.sort();
    assert_eq!(checked, serving, "each slot's serving worker is checked");
}

#[test]
fn a_sick_worker_during_a_batched_reload_waits_for_room_instead_of_exceeding_workers_plus_surge() {
    let interval = 10 * SEC;
    let (mut l, mut p, t0) = serving_with(Policy {
        ready_timeout: 60 * SEC,
        ..two_slots_one_at_a_time_with_health(interval, 1)
    });
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let starting = in_slot(&l, 2, 0);
    assert_eq!(l.workers.len(), 3, "the first batch: 2 old + 1 new");
    // The checks run while the first batch starts; slot 1's old worker fails its check.
    let before = p.health_checks.len();
    let now = t0 + interval;
    l.on_timers(&mut p, now);
    let checked = p.health_checks[before..].to_vec();
    assert!(checked.contains(&gen1[1]), "slot 1 is checked: {checked:?}");
    for pid in checked {
        let outcome = if pid == gen1[1] {
            ProbeOutcome::Answered {
                status: 500,
                excerpt: String::new(),
            }
        } else {
            ProbeOutcome::Replied("healthy".into())
        };
        l.on_probe(&mut p, pid, Check::Health, outcome, now);
    }
    assert_eq!(
        l.workers.len(),
        3,
        "no replacement beyond workers + surge = 3"
    );
    // The reload goes on and replaces the sick worker's slot in its turn.
    ready(&mut l, &mut p, &[starting], now + SEC);
    let (now, _) = finish_stops(&mut l, &mut p, now + SEC);
    let next = in_slot(&l, 2, 1);
    assert!(l.workers.len() <= 3);
    ready(&mut l, &mut p, &[next], now);
    finish_stops(&mut l, &mut p, now);
    assert_eq!(l.snapshot(&mut p, now).slots, vec![2, 2]);
}
