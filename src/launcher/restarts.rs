//! Crash-restart policy for the serving workers: a worker that exits, misses its ready deadline or
//! falls silent is replaced in its slot, by the generation that serves the slot, after a growing backoff. Invariant: a slot has at most one
//! pending restart, and nothing is restarted while the launcher stops.

use std::time::{Duration, Instant};

use log::{debug, error, warn};
use nix::unistd::Pid;

use super::backoff::{ordinal, Backoff, STABLE_UPTIME};
use super::{
    describe, format_delay, Announcement, ExitReason, Launcher, Phase, Processes, Worker,
    WorkerPhase,
};

/// How common servers are kept from forking into the background, for the message about a worker that did.
const FOREGROUND_HINT: &str =
    "e.g. nginx -g 'daemon off;', apachectl -DFOREGROUND, php-fpm --nodaemonize, \
     redis-server --daemonize no, or the server's own --foreground/--no-daemon flag";

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
        // "...exited with status 0 before it was ready; it left 1 process behind (...)"; empty when it
        // left nothing, and not asked after a stop signal (its group got the signal too).
        let left = match worker.phase {
            WorkerPhase::Stopping { .. } | WorkerPhase::Draining { .. } => String::new(),
            phase => match self.stop_left_behind(processes, worker.pid) {
                Some(left) => format!("; it left {left}"),
                // Its daemon may be gone already (its bind failed, say): status 0 before ready still
                // tells the story.
                None if reason == ExitReason::Exited(0) && phase != WorkerPhase::Ready => format!(
                    "; a server that exits with status 0 before it is ready has usually forked into the \
                     background (daemonized): keep it in the foreground ({FOREGROUND_HINT})"
                ),
                None => String::new(),
            },
        };
        match (&self.phase, worker.phase) {
            (_, _) if worker.is_stopping() => {
                debug!("{name} exited with {reason} after the stop signal");
                                self.retire_if_gone(worker.generation, now);
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.announce_status();
                }
            }
            (Phase::Starting, _) => {
                let when = if worker.phase == WorkerPhase::Ready { "while generation 1 was starting" } else { "before it was ready" };
                self.fail_start(processes, format!("{name} exited with {reason} {when}{left}"), now);
            }
            (Phase::Reloading { next, .. }, _)
                if worker.generation == *next && self.slot_generation(worker.slot) != *next =>
            {
                let when = if worker.phase == WorkerPhase::Ready { "before its generation was ready" } else { "before it was ready" };
                self.fail_reload(processes, format!("{name} exited with {reason} {when}{left}"), now);
            }
            // Generation 1 counted ready on its child's listener, then the worker went to the background:
            // restarting it would only fork another daemon. Still generation 1's start, in effect.
            _ if !left.is_empty()
                && worker.generation == 1
                && self.active == 1
                && now.saturating_duration_since(worker.spawned_at) < STABLE_UPTIME =>
            {
                self.fail_start(processes, format!("{name} exited with {reason} right after generation 1 started{left}"), now);
            }
            _ if self.is_on_probation(worker.generation) => {
                self.roll_back(processes, format!("{name} exited with {reason}{left}"), now);
            }
            _ if self.is_probation_spare(worker.generation) => {
                warn!("{name} exited with {reason}{left}; generation {} is on probation, and a roll-back would restart its slot", self.active);
            }
            // Its replacement (--health, --max-memory) is already starting in the slot: no second one.
            _ if worker.generation == self.slot_generation(worker.slot) && worker.replacing.is_some() && self.has_replacement(worker.pid, worker.generation, worker.slot) => {
                warn!("{name} exited with {reason}{left} while its replacement was starting in slot {}; not restarted", worker.slot);
            }
            _ if worker.generation == self.slot_generation(worker.slot) => self.schedule_restart(&worker, reason, &left, now),
            _ => error!("{name} exited with {reason} in an unexpected state; this is a bug in reuseport-launch"),
        }
        self.advance_rollout(processes, now);
        self.sync_steering(processes);
        self.finish_if_stopped();
    }

    /// Kills what exited workers left behind (processes the launcher adopted as subreaper, outside every
    /// live worker's tree) and says what they were, for the exit message; None when there are none.
    /// A worker that exits while its children run on has forked into the background: the children hold
    /// its port beyond the launcher's control, and a restart would only add one more.
    fn stop_left_behind(&mut self, processes: &mut impl Processes, exited: Pid) -> Option<String> {
        let live: Vec<Pid> = self.workers.iter().map(|w| w.pid).collect();
        let left = processes.left_behind(exited, &live);
        if left.is_empty() {
            return None;
        }
        processes.kill_left_behind(&left);
        let pids = left
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "{} process{} behind (pid {pids}, now killed): the server forked into the background \
             (daemonized) or left children running; keep it in the foreground ({FOREGROUND_HINT})",
            left.len(),
            if left.len() == 1 { "" } else { "es" },
        ))
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
            "{reason}; replacing it in {} ({} failure in a row){}",
            format_delay(delay),
            ordinal(in_a_row),
            self.replaced_note(worker.generation, worker.slot)
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

    /// `note` follows the exit reason in the message (what the worker left behind, or nothing).
    pub(super) fn schedule_restart(
        &mut self,
        worker: &Worker,
        reason: ExitReason,
        note: &str,
        now: Instant,
    ) {
        if matches!(
            self.phase,
            Phase::LbDrain { .. } | Phase::Stopping { .. } | Phase::Finished(_)
        ) {
            warn!(
                "{} exited with {reason}{note}; not restarted: the launcher is stopping",
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
            "{} exited with {reason}{when}{note}; restarting in {} ({} failure in a row){}",
            describe(worker),
            format_delay(delay),
            ordinal(in_a_row),
            self.replaced_note(worker.generation, worker.slot)
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
            let generation = self.slot_generation(slot);
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
