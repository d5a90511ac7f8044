//! Crash-restart policy for the active generation: a worker that exits, misses its ready deadline or
//! falls silent is replaced in its slot after a growing backoff. Invariant: a slot has at most one
//! pending restart, and nothing is restarted while the launcher stops.

use std::time::{Duration, Instant};

use log::{debug, error, warn};
use nix::unistd::Pid;

use super::backoff::{ordinal, Backoff};
use super::{
    describe, format_delay, Announcement, ExitReason, Launcher, Phase, Processes, Worker,
    WorkerPhase,
};

/// Restart bookkeeping of one slot of the active generation.
#[derive(Debug, Clone, Default)]
pub(super) struct Slot {
    pub(super) backoff: Backoff,
    pub(super) restart_at: Option<Instant>,
    pub(super) restarts: u32,
}

impl Launcher {
    /// A child exited (reaped by the event loop).
    pub fn on_exit(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        reason: ExitReason,
        now: Instant,
    ) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            debug!("reaped pid {pid} ({reason}), not a worker");
            return;
        };
        let worker = self.workers.remove(index);
        let name = describe(&worker);
        match (&self.phase, worker.phase) {
            (_, WorkerPhase::Stopping { .. } | WorkerPhase::Draining { .. }) => {
                debug!("{name} exited with {reason} after the stop signal");
                                self.retire_if_gone(worker.generation, now);
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.announce_status();
                }
            }
            (Phase::Starting, _) => {
                let when = if worker.phase == WorkerPhase::Ready { "while generation 1 was starting" } else { "before it was ready" };
                self.fail_start(processes, format!("{name} exited with {reason} {when}"), now);
            }
            (Phase::Reloading { next, .. }, _) if worker.generation == *next => {
                let when = if worker.phase == WorkerPhase::Ready { "before its generation was ready" } else { "before it was ready" };
                self.fail_reload(processes, format!("{name} exited with {reason} {when}"), now);
            }
            _ if worker.generation == self.active => self.schedule_restart(&worker, reason, now),
            _ => error!("{name} exited with {reason} in an unexpected state; this is a bug in reuseport-launch"),
        }
        self.finish_if_stopped();
    }

    /// Stops a misbehaving worker of the active generation and schedules its slot's restart.
    pub(super) fn replace(
        &mut self,
        processes: &mut impl Processes,
        worker: &Worker,
        reason: &str,
        now: Instant,
    ) {
        self.stop_worker(processes, worker.pid, now);
        let slot = &mut self.slots[worker.slot];
        let (delay, in_a_row) = slot.backoff.record_failure(Duration::ZERO);
        slot.restart_at = Some(now + delay);
        warn!(
            "{reason}; replacing it in {} ({} failure in a row)",
            format_delay(delay),
            ordinal(in_a_row)
        );
    }

    pub(super) fn watchdog_overdue(&self, now: Instant) -> Option<Worker> {
        let limit = self.policy.watchdog?;
        self.workers
            .iter()
            .find(|w| {
                w.phase == WorkerPhase::Ready && w.last_watchdog.is_some_and(|at| at + limit <= now)
            })
            .cloned()
    }

    pub(super) fn schedule_restart(&mut self, worker: &Worker, reason: ExitReason, now: Instant) {
        if matches!(
            self.phase,
            Phase::LbDrain { .. } | Phase::Stopping { .. } | Phase::Finished(_)
        ) {
            warn!(
                "{} exited with {reason}; not restarted: the launcher is stopping",
                describe(worker)
            );
            return;
        }
        let slot = &mut self.slots[worker.slot];
        let (delay, in_a_row) = slot
            .backoff
            .record_failure(now.saturating_duration_since(worker.spawned_at));
        slot.restart_at = Some(now + delay);
        let when = if worker.phase == WorkerPhase::Ready {
            ""
        } else {
            " before ready"
        };
        warn!(
            "{} exited with {reason}{when}; restarting in {} ({} failure in a row)",
            describe(worker),
            format_delay(delay),
            ordinal(in_a_row)
        );
        self.announce_status();
    }

    pub(super) fn restart_due(&mut self, processes: &mut impl Processes, now: Instant) {
        if !matches!(self.phase, Phase::Serving | Phase::Reloading { .. }) {
            return;
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].restart_at.is_none_or(|at| at > now) {
                continue;
            }
            self.slots[slot].restart_at = None;
            self.slots[slot].restarts += 1;
            let generation = self.active;
            match self.spawn_worker(processes, generation, slot, now) {
                Ok(()) => self
                    .announcements
                    .push(Announcement::Restarted { generation, slot }),
                Err(reason) => {
                    let (delay, in_a_row) = self.slots[slot].backoff.record_failure(Duration::ZERO);
                    self.slots[slot].restart_at = Some(now + delay);
                    warn!(
                        "{reason}; retrying in {} ({} failure in a row)",
                        format_delay(delay),
                        ordinal(in_a_row)
                    );
                }
            }
        }
    }
}
