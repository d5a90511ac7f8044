//! Unit tests of the decisions alone: a fake `Processes` records spawns and signals; time is passed in.

use super::*;
use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

#[derive(Default)]
struct FakeProcesses {
    next_pid: i32,
    spawned: Vec<(u32, usize, Pid)>,
    signals: Vec<(Pid, Signal)>,
    fail_spawns: bool,
    /// Workers whose listeners the fake "holds" (for listener drain).
    listeners: Vec<Pid>,
    /// Workers that still have open connections.
    busy: Vec<Pid>,
}

impl Processes for FakeProcesses {
    fn spawn(&mut self, generation: u32, slot: usize) -> io::Result<Pid> {
        if self.fail_spawns {
            return Err(io::Error::from_raw_os_error(2));
        }
        self.next_pid += 1;
        let pid = Pid::from_raw(1000 + self.next_pid);
        self.spawned.push((generation, slot, pid));
        Ok(pid)
    }
    fn signal(&mut self, worker: Pid, signal: Signal) {
        self.signals.push((worker, signal));
    }
    fn ask_to_stop(&mut self, worker: Pid, signal: Signal) {
        self.signals.push((worker, signal));
    }
    fn close_listeners(&mut self, worker: Pid) -> bool {
        self.listeners.contains(&worker)
    }
    fn has_connections(&mut self, worker: Pid) -> bool {
        self.busy.contains(&worker)
    }
    fn release_listeners(&mut self, worker: Pid) {
        self.listeners.retain(|&p| p != worker);
    }
}

const SEC: Duration = Duration::from_secs(1);

fn policy() -> Policy {
    Policy {
        workers: 2,
        ready_timeout: 5 * SEC,
        stop_timeout: 3 * SEC,
        stop_signal: Signal::SIGTERM,
        watchdog: None,
        ready: ReadyMode::Auto,
        drain: DrainMode::Auto,
        lb_drain: Duration::ZERO,
    }
}

fn pids_of(p: &FakeProcesses, generation: u32) -> Vec<Pid> {
    p.spawned
        .iter()
        .filter(|s| s.0 == generation)
        .map(|s| s.2)
        .collect()
}

fn ready(l: &mut Launcher, p: &mut FakeProcesses, pids: &[Pid], now: Instant) {
    let msg = NotifyMessage {
        ready: true,
        ..Default::default()
    };
    for &pid in pids {
        l.on_notify(p, pid, &msg, now);
    }
}

/// A launcher whose generation 1 serves.
fn serving() -> (Launcher, FakeProcesses, Instant) {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1, t0);
    assert_eq!(l.phase(), &Phase::Serving);
    (l, p, t0)
}

#[test]
fn generation_one_serves_only_when_every_worker_is_ready() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1[..1], t0);
    assert_eq!(l.phase(), &Phase::Starting);
    assert!(!l.take_announcements().contains(&Announcement::Ready));
    ready(&mut l, &mut p, &gen1[1..], t0);
    assert_eq!(l.phase(), &Phase::Serving);
    assert!(l.take_announcements().contains(&Announcement::Ready));
}

#[test]
fn reload_signals_old_generation_only_after_new_one_is_ready() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    assert_eq!(gen2.len(), 2);
    ready(&mut l, &mut p, &gen2[..1], t0);
    assert!(
        p.signals.is_empty(),
        "old generation signalled before the new one was ready"
    );
    ready(&mut l, &mut p, &gen2[1..], t0);
    assert_eq!(
        p.signals,
        gen1.iter()
            .map(|&pid| (pid, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    assert_eq!(l.phase(), &Phase::Serving);
}

#[test]
fn new_worker_exiting_before_ready_rolls_back_and_keeps_old() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    l.on_exit(&mut p, gen2[0], ExitReason::Exited(3), t0);
    assert_eq!(l.phase(), &Phase::Serving);
    assert_eq!(
        p.signals,
        vec![(gen2[1], Signal::SIGTERM)],
        "only the failed generation is stopped"
    );
    assert!(gen1.iter().all(|&pid| l.is_worker(pid)));
    assert!(
        matches!(&l.last_reload, Some(ReloadResult::Failed { reason, .. }) if reason.contains("status 3"))
    );
    // The next reload tries again, with a fresh generation number.
    l.request_reload(&mut p, t0);
    assert_eq!(pids_of(&p, 3).len(), 2);
}

#[test]
fn ready_timeout_rolls_back_a_reload() {
    let (mut l, mut p, t0) = serving();
    l.request_reload(&mut p, t0);
    assert_eq!(l.next_deadline(), Some(t0 + 5 * SEC));
    l.on_timers(&mut p, t0 + 5 * SEC);
    assert_eq!(l.phase(), &Phase::Serving);
    assert_eq!(p.signals.len(), 2);
    assert!(pids_of(&p, 2)
        .iter()
        .all(|pid| p.signals.contains(&(*pid, Signal::SIGTERM))));
}

#[test]
fn reloads_requested_during_a_reload_coalesce_into_one() {
    let (mut l, mut p, t0) = serving();
    l.request_reload(&mut p, t0);
    l.request_reload(&mut p, t0);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0);
    assert!(matches!(l.phase(), Phase::Reloading { next: 3, .. }));
    let gen3 = pids_of(&p, 3);
    ready(&mut l, &mut p, &gen3, t0);
    assert_eq!(l.phase(), &Phase::Serving);
    assert!(pids_of(&p, 4).is_empty());
}

#[test]
fn crashed_worker_restarts_in_its_slot_with_growing_delays() {
    let (mut l, mut p, t0) = serving();
    let mut now = t0 + SEC;
    let mut victim = pids_of(&p, 1)[1];
    let mut delays = Vec::new();
    for _ in 0..4 {
        l.on_exit(&mut p, victim, ExitReason::Signaled(Signal::SIGABRT), now);
        let due = l.next_deadline().unwrap();
        delays.push(due - now);
        now = due;
        let before = p.spawned.len();
        l.on_timers(&mut p, now);
        assert_eq!(p.spawned.len(), before + 1);
        let (generation, slot, pid) = p.spawned[before];
        assert_eq!((generation, slot), (1, 1));
        victim = pid;
    }
    let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, vec![100, 200, 400, 800]);
}

#[test]
fn draining_worker_that_exits_is_not_replaced() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0);
    let spawned = p.spawned.len();
    l.on_exit(&mut p, gen1[0], ExitReason::Exited(0), t0);
    l.on_timers(&mut p, t0 + 10 * SEC);
    assert_eq!(p.spawned.len(), spawned);
}

#[test]
fn stop_escalates_to_sigkill_after_the_stop_timeout_and_on_a_second_request() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    l.request_stop(&mut p, t0);
    assert_eq!(l.next_deadline(), Some(t0 + 3 * SEC));
    l.on_exit(&mut p, gen1[0], ExitReason::Exited(0), t0);
    l.on_timers(&mut p, t0 + 3 * SEC);
    assert!(p.signals.contains(&(gen1[1], Signal::SIGKILL)));
    assert!(!p.signals.contains(&(gen1[0], Signal::SIGKILL)));
    l.on_exit(
        &mut p,
        gen1[1],
        ExitReason::Signaled(Signal::SIGKILL),
        t0 + 3 * SEC,
    );
    assert_eq!(l.phase(), &Phase::Finished(Outcome::Stopped));

    let (mut l, mut p, t0) = serving();
    l.request_stop(&mut p, t0);
    l.request_stop(&mut p, t0);
    assert_eq!(
        p.signals.iter().filter(|s| s.1 == Signal::SIGKILL).count(),
        2
    );
}

#[test]
fn generation_one_failure_stops_everything_with_the_reason() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    l.on_exit(&mut p, gen1[1], ExitReason::Exited(7), t0);
    assert_eq!(p.signals, vec![(gen1[0], Signal::SIGTERM)]);
    l.on_exit(&mut p, gen1[0], ExitReason::Exited(0), t0);
    match l.phase() {
        Phase::Finished(Outcome::StartFailed(reason)) => {
            assert!(
                reason.contains("worker 1") && reason.contains("status 7"),
                "{reason}"
            )
        }
        other => panic!("unexpected phase {other:?}"),
    }
}

#[test]
fn spawn_failure_during_reload_keeps_old_generation() {
    let (mut l, mut p, t0) = serving();
    p.fail_spawns = true;
    l.request_reload(&mut p, t0);
    assert_eq!(l.phase(), &Phase::Serving);
    assert!(p.signals.is_empty());
    assert!(l.status_line().contains("failed"), "{}", l.status_line());
}

#[test]
fn listener_drain_waits_for_connections_before_the_stop_signal() {
    // A server that never speaks sd_notify: ready by listening, drained by its listener (auto).
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    p.listeners = gen1.clone();
    for &pid in &gen1 {
        l.on_listening(&mut p, pid, t0);
    }
    assert_eq!(l.phase(), &Phase::Serving);
    assert_eq!(p.listeners, gen1, "listener copies are kept for the drain");
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    for &pid in &gen2 {
        l.on_listening(&mut p, pid, t0);
    }
    assert!(
        p.signals.is_empty(),
        "the old generation is drained by its listener first"
    );
    p.busy = vec![gen1[0]];
    l.on_timers(&mut p, t0 + SEC);
    assert_eq!(
        p.signals,
        vec![(gen1[1], Signal::SIGTERM)],
        "the idle worker is signalled, the busy one waits"
    );
    p.busy.clear();
    l.on_timers(&mut p, t0 + 2 * SEC);
    assert!(p.signals.contains(&(gen1[0], Signal::SIGTERM)));
}

#[test]
fn sd_notify_servers_keep_the_plain_stop_order() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    p.listeners = gen1.clone();
    l.request_stop(&mut p, t0);
    assert_eq!(
        p.signals.len(),
        2,
        "READY=1 speakers get the stop signal at once"
    );
}

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
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(
        Policy {
            lb_drain: 4 * SEC,
            ..policy()
        },
        t0,
    );
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1, t0);
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
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(
        Policy {
            lb_drain: 30 * SEC,
            ..policy()
        },
        t0,
    );
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    ready(&mut l, &mut p, &gen1, t0);
    l.request_stop(&mut p, t0);
    assert!(p.signals.is_empty());
    l.request_stop(&mut p, t0 + SEC);
    assert!(matches!(l.phase(), Phase::Stopping { .. }));
    assert_eq!(p.signals.len(), 2);
}
