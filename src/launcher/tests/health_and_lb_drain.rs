//! Unit tests of /healthz's verdict (`Launcher::health`) and of the --lb-drain phase of a stop, with the
//! fake `Processes` and helpers of the parent test module.

use super::*;

#[test]
fn health_needs_every_slot_ready_in_the_active_generation() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy(), t0);
    l.start(&mut p, t0);
    assert!(l.health().unwrap_err().contains("starting"));
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1, t0);
    assert!(l.health().is_ok());
    // A reload in progress is healthy: generation 1 still serves every slot.
    l.request_reload(&mut p, t0);
    assert!(l.health().is_ok());
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0);
    l.on_exit(&mut p, gen2[1], ExitReason::Signaled(Signal::SIGKILL), t0);
    assert!(l.health().unwrap_err().contains("slot 1"));
    l.on_timers(&mut p, t0 + SEC);
    let restarted = pids_of(&p, 2)[2];
    ready(&mut l, &mut p, &[restarted], t0 + SEC);
    assert!(l.health().is_ok());
    assert!(l.take_announcements().contains(&Announcement::Restarted {
        generation: 2,
        slot: 1
    }));
    l.request_stop(&mut p, t0 + SEC);
    assert!(l.health().unwrap_err().contains("stopping"));
}

#[test]
fn lb_drain_keeps_workers_serving_while_unhealthy_then_drains() {
    let (mut l, mut p, t0) = serving_with(Policy {
        lb_drain: 4 * SEC,
        ..policy()
    });
    let gen1 = pids_of(&p, 1);
    // A reload in progress is given up: its workers stop, generation 1 keeps serving.
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    l.take_announcements();
    l.request_stop(&mut p, t0);
    assert_eq!(
        l.phase(),
        &Phase::LbDrain {
            drain_at: t0 + 4 * SEC
        }
    );
    assert_eq!(
        p.signals,
        gen2.iter()
            .map(|&pid| (pid, Signal::SIGTERM))
            .collect::<Vec<_>>(),
        "only the unfinished generation is stopped"
    );
    assert!(l.health().unwrap_err().contains("lb-drain"));
    assert!(l.take_announcements().contains(&Announcement::Stopping {
        // 4 s of --lb-drain, then a listener drain (up to 3 s) and the stop timeout (3 s).
        within: 10 * SEC
    }));
    assert_eq!(
        l.request_reload(&mut p, t0),
        None,
        "no reload while stopping"
    );
    // A crash meanwhile is not restarted.
    l.on_exit(&mut p, gen1[1], ExitReason::Exited(1), t0 + SEC);
    l.on_timers(&mut p, t0 + 2 * SEC);
    assert_eq!(p.spawned.len(), 4, "nothing is spawned during --lb-drain");
    assert_eq!(
        l.next_deadline(),
        Some(t0 + 3 * SEC),
        "gen 2's kill timeout"
    );
    l.on_timers(&mut p, t0 + 3 * SEC);
    for &pid in &gen2 {
        l.on_exit(
            &mut p,
            pid,
            ExitReason::Signaled(Signal::SIGKILL),
            t0 + 3 * SEC,
        );
    }
    assert_eq!(l.next_deadline(), Some(t0 + 4 * SEC));
    assert!(!p.signals.contains(&(gen1[0], Signal::SIGTERM)));
    l.on_timers(&mut p, t0 + 4 * SEC);
    assert!(matches!(l.phase(), Phase::Stopping { .. }));
    assert!(p.signals.contains(&(gen1[0], Signal::SIGTERM)));
    l.on_exit(&mut p, gen1[0], ExitReason::Exited(0), t0 + 4 * SEC);
    assert_eq!(l.phase(), &Phase::Finished(Outcome::Stopped));
}

#[test]
fn a_second_stop_request_skips_the_rest_of_lb_drain() {
    let (mut l, mut p, t0) = serving_with(Policy {
        lb_drain: 30 * SEC,
        ..policy()
    });
    l.request_stop(&mut p, t0);
    assert!(p.signals.is_empty());
    l.request_stop(&mut p, t0 + SEC);
    assert!(matches!(l.phase(), Phase::Stopping { .. }));
    assert_eq!(p.signals.len(), 2);
}
