//! Time passing: every deadline the decisions keep (ready timeouts, drains, kill timeouts, watchdogs,
//! restarts, memory checks) is acted on here, and the nearest one bounds the event loop's wait.

use std::time::Instant;

use super::{describe, Launcher, Phase, Processes, ReadyMode, WorkerPhase};

impl Launcher {
    /// Acts on every deadline that has passed: ready timeouts, kill timeouts, due restarts.
    pub fn on_timers(&mut self, processes: &mut impl Processes, now: Instant) {
        self.end_lb_drain(processes, now);
        self.finish_handovers(processes, now);
        self.signal_drained(processes, now);
        self.kill_overdue(processes, now);
        if let Some(late) = self.workers.iter().find(|w| matches!(w.phase, WorkerPhase::Starting { ready_deadline } if ready_deadline <= now)).cloned() {
            let hint = match (self.policy.ready, late.listening) {
                (ReadyMode::Listen, _) => "check that it listens on every TCP port it binds (one bound but never listening keeps it from counting ready) or binds a UDP port, or raise --ready-timeout",
                (ReadyMode::Http, false) => "it never listened on a TCP port; check its bind, or raise --ready-timeout",
                (ReadyMode::Http, true) => "it listens but its --ready http probe never answered 2xx (see its last probe above), or raise --ready-timeout",
                (_, true) => {
                    "it listens but never sent READY=1; if the server does not speak sd_notify, use --ready listen"
                }
                _ => "check that it listens, or sends READY=1 to $NOTIFY_SOCKET, or raise --ready-timeout",
            };
            let reason = format!(
                "{} not ready after {:.1}s (--ready-timeout); {hint}",
                describe(&late),
                self.policy.ready_timeout.as_secs_f64()
            );
            match self.phase {
                Phase::Starting => self.fail_start(processes, reason, now),
                Phase::Reloading { next, .. } if late.generation == next && self.slot_generation(late.slot) != next => self.fail_reload(processes, reason, now),
                _ if self.is_on_probation(late.generation) => self.roll_back(processes, reason, now),
                _ => self.replace(processes, &late, &reason, now),
            }
        }
        if let Some(silent) = self.watchdog_overdue(now) {
            let reason = format!(
                "{} silent for {:.1}s since its last WATCHDOG=1 (--watchdog)",
                describe(&silent),
                now.saturating_duration_since(silent.last_watchdog.unwrap_or(now))
                    .as_secs_f64()
            );
            self.replace(processes, &silent, &reason, now);
        }
        self.end_probation_if_due(processes, now);
        self.check_memory(processes, now);
        self.restart_due(processes, now);
        self.advance_rollout(processes, now);
        self.start_due_probes(processes, now);
        self.start_due_health_checks(processes, now);
        self.sync_steering(processes);
        self.finish_if_stopped();
    }

    /// The nearest deadline, to bound the event loop's wait.
    pub fn next_deadline(&self) -> Option<Instant> {
        let watchdog = self.policy.watchdog;
        let workers = self.workers.iter().filter_map(move |w| match w.phase {
            WorkerPhase::Starting { ready_deadline } => Some(ready_deadline),
            WorkerPhase::Stopping { kill_at } => kill_at,
            WorkerPhase::Draining { next_check, .. }
            | WorkerPhase::SteeredOut { next_check, .. } => Some(next_check),
            WorkerPhase::Ready => w.last_watchdog.zip(watchdog).map(|(at, limit)| at + limit),
        });
        let restarts = self.slots.iter().filter_map(|s| s.restart_at);
        let lb_drain = match self.phase {
            Phase::LbDrain { drain_at } => Some(drain_at),
            _ => None,
        };
        let probes = self
            .workers
            .iter()
            .filter_map(|w| w.probe_at.into_iter().chain(w.health_at).min());
        workers
            .chain(restarts)
            .chain(lb_drain)
            .chain(probes)
            .chain(self.probation_deadline())
            .chain(self.memory.next_check())
            .min()
    }
}
