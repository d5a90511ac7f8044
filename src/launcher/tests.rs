//! Unit tests of the decisions alone: a fake `Processes` records spawns and signals; time is passed in.

use super::*;
use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

mod health_and_lb_drain;
mod health_checks;
mod http_ready;
mod memory_limit;
mod probation;
mod rollout;

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
    /// Every receiving set handed to `steer`, in order.
    steered: Vec<Vec<Pid>>,
    /// Accept queue depth by worker (absent: 0).
    queued: Vec<(Pid, u32)>,
    /// When each worker's UDP flows were last active (absent: none).
    flows: Vec<(Pid, Instant)>,
    /// Processes outside every worker's tree (what a daemonizing worker leaves behind).
    strays: Vec<Pid>,
    /// Strays killed through `kill_left_behind`.
    killed_strays: Vec<Pid>,
    /// Every probe started, in order.
    probes: Vec<Pid>,
    /// Every health check started, in order.
    health_checks: Vec<Pid>,
    /// What `memory` answers, by worker (absent: unreadable).
    memory: Vec<(Pid, u64)>,
    /// Every worker whose memory was read, in order.
    memory_reads: Vec<Pid>,
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
    fn stop_tracking_binds(&mut self, _worker: Pid) {}
    fn steer(&mut self, receiving: &[Pid]) {
        self.steered.push(receiving.to_vec());
    }
    fn queued(&mut self, worker: Pid) -> Option<u32> {
        Some(
            self.queued
                .iter()
                .find(|(p, _)| *p == worker)
                .map_or(0, |q| q.1),
        )
    }
    fn live_flows(&mut self, worker: Pid) -> Option<u32> {
        self.flows.iter().any(|(p, _)| *p == worker).then_some(1)
    }
    fn flow_last_active(&mut self, worker: Pid) -> Option<Instant> {
        self.flows.iter().find(|(p, _)| *p == worker).map(|f| f.1)
    }
    fn left_behind(&mut self, _exited: Pid, _workers: &[Pid]) -> Vec<Pid> {
        self.strays.clone()
    }
    fn probe(&mut self, worker: Pid, check: Check, _timeout: Duration) {
        match check {
            Check::Ready => self.probes.push(worker),
            Check::Health => self.health_checks.push(worker),
        }
    }
    fn memory(&mut self, worker: Pid) -> Option<u64> {
        self.memory_reads.push(worker);
        self.memory.iter().find(|(p, _)| *p == worker).map(|m| m.1)
    }
    fn kill_left_behind(&mut self, pids: &[Pid]) {
        self.killed_strays.extend_from_slice(pids);
        self.strays.retain(|p| !pids.contains(p));
    }
}

impl FakeProcesses {
    /// The receiving set last handed to `steer`.
    fn receiving(&self) -> Vec<Pid> {
        self.steered.last().cloned().unwrap_or_default()
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
        health: None,
        memory: None,
        probation: Duration::ZERO,
        steer: false,
        handover_grace: Duration::from_millis(100),
        udp_flow_idle: Duration::ZERO,
        max_surge: None,
    }
}

fn steering() -> Policy {
    Policy {
        steer: true,
        ..policy()
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
    serving_with(policy())
}

/// A launcher with `policy` whose generation 1 serves.
fn serving_with(policy: Policy) -> (Launcher, FakeProcesses, Instant) {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy, t0);
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
fn a_worker_that_daemonizes_fails_the_start_and_its_leftovers_are_killed() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(policy(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    // Worker 0 forked a daemon (now the launcher's child as subreaper) and exited 0.
    let daemon = Pid::from_raw(4242);
    p.strays.push(daemon);
    l.on_exit(&mut p, gen1[0], ExitReason::Exited(0), t0);
    assert_eq!(p.killed_strays, vec![daemon]);
    l.on_exit(&mut p, gen1[1], ExitReason::Signaled(Signal::SIGTERM), t0);
    // The daemon's own exit, reaped by the launcher, is not a worker's and changes nothing.
    l.on_exit(&mut p, daemon, ExitReason::Signaled(Signal::SIGKILL), t0);
    match l.phase() {
        Phase::Finished(Outcome::StartFailed(reason)) => assert!(
            reason.contains("status 0")
                && reason.contains("pid 4242")
                && reason.contains("forked into the background")
                && reason.contains("daemon off;"),
            "{reason}"
        ),
        other => panic!("unexpected phase {other:?}"),
    }
}

#[test]
fn a_worker_that_daemonizes_right_after_generation_one_served_fails_the_start() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    let daemon = Pid::from_raw(4343);
    p.strays.push(daemon);
    l.on_exit(&mut p, gen1[0], ExitReason::Exited(0), t0 + SEC);
    assert_eq!(p.killed_strays, vec![daemon]);
    l.on_exit(
        &mut p,
        gen1[1],
        ExitReason::Signaled(Signal::SIGTERM),
        t0 + SEC,
    );
    match l.phase() {
        Phase::Finished(Outcome::StartFailed(reason)) => {
            assert!(reason.contains("forked into the background"), "{reason}")
        }
        other => panic!("unexpected phase {other:?}"),
    }
}

#[test]
fn a_long_serving_worker_that_leaves_children_is_restarted_and_they_are_killed() {
    let (mut l, mut p, t0) = serving();
    let gen1 = pids_of(&p, 1);
    let child = Pid::from_raw(4444);
    p.strays.push(child);
    l.on_exit(
        &mut p,
        gen1[0],
        ExitReason::Signaled(Signal::SIGSEGV),
        t0 + 60 * SEC,
    );
    assert_eq!(p.killed_strays, vec![child]);
    assert_eq!(l.phase(), &Phase::Serving);
    l.on_timers(&mut p, t0 + 61 * SEC);
    assert_eq!(pids_of(&p, 1).len(), 3, "slot 0 restarted");
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

/// A launcher with steering whose generation 1 serves (sd_notify servers: drained by signal).
fn steered_serving() -> (Launcher, FakeProcesses, Instant) {
    serving_with(steering())
}

#[test]
fn steering_sends_connections_only_to_ready_workers_of_the_active_generation() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(steering(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    assert!(p.steered.is_empty(), "nobody is ready: nothing to steer to");
    ready(&mut l, &mut p, &gen1[..1], t0);
    assert_eq!(p.receiving(), gen1[..1]);
    ready(&mut l, &mut p, &gen1[1..], t0);
    assert_eq!(p.receiving(), gen1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2[..1], t0);
    assert_eq!(
        p.receiving(),
        gen1,
        "a generation receives nothing before all of it is ready"
    );
}

#[test]
fn handover_signals_the_old_generation_only_after_its_queue_is_empty_and_the_grace_passed() {
    let (mut l, mut p, t0) = steered_serving();
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    p.queued.push((gen1[0], 3));
    ready(&mut l, &mut p, &gen2, t0);
    assert_eq!(
        p.receiving(),
        gen2,
        "promotion steers to the new generation at once"
    );
    assert!(
        p.signals.is_empty(),
        "old workers are signalled before their handover"
    );
    let grace = t0 + Duration::from_millis(100);
    assert_eq!(l.next_deadline(), Some(grace));
    l.on_timers(&mut p, grace);
    assert_eq!(
        p.signals,
        vec![(gen1[1], Signal::SIGTERM)],
        "the worker with an empty queue is stopped after the grace, the one with a queue is not"
    );
    p.queued.clear();
    let later = grace + Duration::from_millis(5);
    assert_eq!(l.next_deadline(), Some(later));
    l.on_timers(&mut p, later);
    assert!(p.signals.contains(&(gen1[0], Signal::SIGTERM)));
    assert_eq!(
        p.receiving(),
        gen2,
        "the receiving set was never changed back"
    );
}

#[test]
fn udp_flows_keep_a_steered_out_worker_until_they_are_idle() {
    let idle = Duration::from_millis(800);
    let (mut l, mut p, t0) = serving_with(Policy {
        udp_flow_idle: idle,
        ..steering()
    });
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    // gen1[0] has a session whose last datagram came 100 ms after the new generation got ready.
    let last = t0 + Duration::from_millis(100);
    p.flows.push((gen1[0], last));
    ready(&mut l, &mut p, &gen2, t0);
    l.on_timers(&mut p, t0 + Duration::from_millis(100));
    assert_eq!(
        p.signals,
        vec![(gen1[1], Signal::SIGTERM)],
        "a worker without flows goes after the grace, the one with a live flow stays"
    );
    assert_eq!(
        l.next_deadline(),
        Some(last + idle),
        "checked again when its flow goes idle"
    );
    l.on_timers(&mut p, last + idle);
    assert!(p.signals.contains(&(gen1[0], Signal::SIGTERM)));
}

#[test]
fn a_queue_that_never_empties_is_drained_after_the_stop_timeout() {
    let (mut l, mut p, t0) = steered_serving();
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    p.queued.push((gen1[0], 1));
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0);
    l.on_timers(&mut p, t0 + 2 * SEC);
    assert!(!p.signals.contains(&(gen1[0], Signal::SIGTERM)));
    l.on_timers(&mut p, t0 + 3 * SEC);
    assert!(p.signals.contains(&(gen1[0], Signal::SIGTERM)));
}

#[test]
fn steered_out_unchanged_servers_are_drained_by_their_connections_without_a_shutdown() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(steering(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    for &pid in &gen1 {
        l.on_listening(&mut p, pid, t0);
    }
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    p.busy.push(gen1[0]);
    for &pid in &gen2 {
        l.on_listening(&mut p, pid, t0);
    }
    assert_eq!(p.receiving(), gen2);
    let grace = t0 + Duration::from_millis(100);
    l.on_timers(&mut p, grace);
    assert_eq!(
        p.signals,
        vec![(gen1[1], Signal::SIGTERM)],
        "the idle handed-over worker is stopped at once, the busy one waited for"
    );
    p.busy.clear();
    l.on_timers(&mut p, l.next_deadline().unwrap());
    assert_eq!(p.signals.len(), 2, "{:?}", p.signals);
}

#[test]
fn a_crashed_worker_leaves_the_receiving_set_and_its_replacement_enters_when_ready() {
    let (mut l, mut p, t0) = steered_serving();
    let gen1 = pids_of(&p, 1);
    l.on_exit(&mut p, gen1[0], ExitReason::Signaled(Signal::SIGSEGV), t0);
    assert_eq!(p.receiving(), gen1[1..]);
    l.on_timers(&mut p, l.next_deadline().unwrap());
    let replacement = *pids_of(&p, 1).last().unwrap();
    assert_eq!(
        p.receiving(),
        gen1[1..],
        "the replacement receives only once ready"
    );
    ready(&mut l, &mut p, &[replacement], t0 + SEC);
    assert_eq!(p.receiving(), vec![gen1[1], replacement]);
}

#[test]
fn a_failed_reload_never_steers_to_the_new_generation() {
    let (mut l, mut p, t0) = steered_serving();
    let gen1 = pids_of(&p, 1);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2[..1], t0);
    l.on_exit(&mut p, gen2[1], ExitReason::Exited(1), t0);
    assert!(
        p.steered.iter().flatten().all(|pid| gen1.contains(pid)),
        "{:?}",
        p.steered
    );
    assert!(
        p.signals.contains(&(gen2[0], Signal::SIGTERM)),
        "the ready new worker is stopped at once"
    );
}

#[test]
fn stop_signals_every_worker_at_once_even_with_steering() {
    let (mut l, mut p, t0) = steered_serving();
    let gen1 = pids_of(&p, 1);
    l.request_stop(&mut p, t0);
    assert_eq!(p.signals.len(), 2);
    assert!(gen1
        .iter()
        .all(|pid| p.signals.contains(&(*pid, Signal::SIGTERM))));
    assert_eq!(p.receiving(), gen1, "stopping leaves the map alone");
}
