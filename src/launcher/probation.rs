//! `--probation SECS`: after a reload's new generation is ready and steered in, the old generation is
//! kept alive for SECS — receiving nothing, not signalled — as a warm spare. If a new worker exits or
//! fails --health-failures checks meanwhile, the launcher steers back to the old generation at once,
//! stops the new one and reports the reload as failed ("rolled back"); after a clean probation the old
//! generation drains as after any reload. Invariant: while on probation exactly one reload is pending
//! (its `ReloadEnded` is announced when probation ends, either way) and the old generation's workers are
//! neither signalled nor restarted.

use std::time::Instant;

use log::{info, warn};
use nix::unistd::Pid;

use super::reload::Retiring;
use super::restarts::Slot;
use super::{Announcement, Launcher, Phase, Processes, ReloadResult, WorkerPhase};

/// A reload whose new generation serves while the old one waits, untouched, until `until`.
#[derive(Debug, Clone)]
pub(super) struct Probation {
    /// The generation that served before the reload: kept alive, receiving nothing.
    pub(super) old: u32,
    /// The new generation, now active.
    pub(super) new: u32,
    /// When the reload was requested, and when the new generation was ready.
    pub(super) requested: Instant,
    pub(super) ready: Instant,
    pub(super) until: Instant,
}

impl Launcher {
    /// Called by `promote` with the generation that served until now: true when probation started
    /// (the caller then neither stops `old` nor announces the reload's end).
    pub(super) fn start_probation(&mut self, old: u32, requested: Instant, now: Instant) -> bool {
        let secs = self.policy.probation;
        if secs.is_zero() {
            return false;
        }
        info!(
            "generation {}: on probation for {:.1}s (--probation); generation {old} stays up, receiving \
             nothing, to roll back to",
            self.active,
            secs.as_secs_f64()
        );
        self.probation = Some(Probation {
            old,
            new: self.active,
            requested,
            ready: now,
            until: now + secs,
        });
        true
    }

    /// Whether `generation` is the old one of a probation (its workers are left alone).
    pub(super) fn is_probation_spare(&self, generation: u32) -> bool {
        self.probation.as_ref().is_some_and(|p| p.old == generation)
    }

    /// Whether `generation` is the new one of a probation (a failure of its workers rolls back).
    pub(super) fn is_on_probation(&self, generation: u32) -> bool {
        self.probation.as_ref().is_some_and(|p| p.new == generation)
    }

    /// The generation on probation, if any.
    pub(super) fn probation_generation(&self) -> Option<u32> {
        self.probation.as_ref().map(|p| p.new)
    }

    pub(super) fn probation_deadline(&self) -> Option<Instant> {
        self.probation.as_ref().map(|p| p.until)
    }

    /// A clean probation is over: the old generation drains, and the reload succeeded.
    pub(super) fn end_probation_if_due(&mut self, processes: &mut impl Processes, now: Instant) {
        let Some(p) = self.probation.clone().filter(|p| p.until <= now) else {
            return;
        };
        self.probation = None;
        info!(
            "generation {}: probation over without a failure; stopping generation {}",
            p.new, p.old
        );
        let result = ReloadResult::Succeeded {
            generation: p.new,
            took: p.ready.saturating_duration_since(p.requested),
        };
        self.last_reload = Some(result.clone());
        self.announcements.push(Announcement::ReloadEnded {
            seq: self.reloads_started,
            result,
        });
        self.stop_generation(processes, p.old, p.new, p.requested, now);
        self.announce_status();
        if std::mem::take(&mut self.reload_queued) && self.phase == Phase::Serving {
            self.start_reload(processes, now);
        }
    }

    /// A worker of the generation on probation failed (`reason` names it): steer back to the old
    /// generation, stop the new one, report the reload as failed.
    pub(super) fn roll_back(
        &mut self,
        processes: &mut impl Processes,
        reason: String,
        now: Instant,
    ) {
        let Some(p) = self.probation.take() else {
            return;
        };
        let reason = format!(
            "{reason} during --probation; rolled back to generation {}",
            p.old
        );
        warn!("reload to generation {} failed: {reason}", p.new);
        self.active = p.old;
        self.slots = vec![Slot::default(); self.policy.workers];
        self.all_slots_on(p.old);
        let health = self.policy.health;
        for worker in self.workers.iter_mut().filter(|w| w.generation == p.old) {
            worker.health_at = health.map(|h| now + h.interval);
        }
        // A spare that died meanwhile leaves its slot to the crash restarts.
        for slot in 0..self.policy.workers {
            let alive = self
                .workers
                .iter()
                .any(|w| w.generation == p.old && w.slot == slot && w.phase == WorkerPhase::Ready);
            if !alive {
                self.slots[slot].restart_at = Some(now);
            }
        }
        // Steer back first, so that the new workers' queues migrate to the old ones as they close.
        self.sync_steering(processes);
        let doomed: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.generation == p.new && !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        for pid in doomed {
            self.drain(processes, pid, now);
        }
        let result = ReloadResult::Failed {
            generation: p.new,
            reason,
        };
        self.last_reload = Some(result.clone());
        self.announcements.push(Announcement::ReloadEnded {
            seq: self.reloads_started,
            result,
        });
        self.announce_status();
        if std::mem::take(&mut self.reload_queued) {
            self.start_reload(processes, now);
        }
    }

    /// Stops every worker of `old`, whose successor `new` serves (after a reload or a probation).
    pub(super) fn stop_generation(
        &mut self,
        processes: &mut impl Processes,
        old: u32,
        new: u32,
        requested: Instant,
        now: Instant,
    ) {
        // Not those already stopping (a batched reload's earlier batches, a sick worker's drain): a
        // second stop would signal them again and put their SIGKILL off.
        let old_pids: Vec<Pid> = self
            .pids_of_generation(old)
            .into_iter()
            .filter(|&pid| {
                self.workers
                    .iter()
                    .any(|w| w.pid == pid && !w.is_stopping())
            })
            .collect();
        info!("generation {old}: stopping {} workers", old_pids.len());
        for pid in old_pids {
            self.stop_worker(processes, pid, now);
        }
        self.retiring.push(Retiring {
            generation: old,
            successor: new,
            reload_requested: requested,
            signalled: now,
        });
        self.retire_if_gone(old, now);
    }
}
