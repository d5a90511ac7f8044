//! The reload sequence: a new generation starts beside the active one (in batches of slots with
//! `--max-surge`, rollout.rs), is promoted when every slot's new worker is ready, or is given up when
//! one fails. Invariant: an old worker is never told to stop until the new worker of its slot is
//! ready, and a failed reload leaves every slot it had not switched serving untouched.

use std::time::Instant;

use log::{error, info, warn};
use nix::unistd::Pid;

use super::restarts::Slot;
use super::{Announcement, Launcher, Phase, Processes, ReloadResult};

/// An old generation that was told to stop because its successor is ready.
#[derive(Debug, Clone)]
pub(super) struct Retiring {
    pub(super) generation: u32,
    pub(super) successor: u32,
    pub(super) reload_requested: Instant,
    pub(super) signalled: Instant,
}

impl Launcher {
    /// SIGHUP: start a new generation, or queue one reload if one is running. Returns the sequence
    /// number of the reload that will carry out this request (None while stopping).
    pub fn request_reload(&mut self, processes: &mut impl Processes, now: Instant) -> Option<u64> {
        self.request_reload_with_surge(processes, None, now)
    }

    /// `reload --max-surge N`: as `request_reload`, the reload that carries it out replacing `surge`
    /// slots at a time (checked with `check_surge` first). A coalesced reload takes the latest surge.
    pub fn request_reload_with_surge(
        &mut self,
        processes: &mut impl Processes,
        surge: Option<usize>,
        now: Instant,
    ) -> Option<u64> {
        if surge.is_some() {
            self.next_surge = surge;
        }
        match self.phase {
            Phase::Serving if self.probation.is_some() => {
                if !self.reload_queued {
                    info!("reload requested while generation {} is on probation; it follows the probation", self.active);
                }
                self.reload_queued = true;
                Some(self.reloads_started + 1)
            }
            Phase::Serving => {
                self.start_reload(processes, now);
                Some(self.reloads_started)
            }
            Phase::Starting | Phase::Reloading { .. } => {
                if !self.reload_queued {
                    info!("reload requested while generation {} is starting; one more reload will follow", self.newest);
                }
                self.reload_queued = true;
                Some(self.reloads_started + 1)
            }
            Phase::LbDrain { .. } | Phase::Stopping { .. } | Phase::Finished(_) => {
                info!("reload requested while stopping; ignored");
                self.next_surge = None;
                None
            }
        }
    }

    /// Grows or shrinks the active generation to `workers` without a reload.
    pub fn scale(
        &mut self,
        processes: &mut impl Processes,
        workers: usize,
        now: Instant,
    ) -> Result<(), String> {
        if workers == 0 {
            return Err("cannot scale to 0 workers; use stop to stop the service".into());
        }
        if self.phase != Phase::Serving || self.probation.is_some() {
            return Err(format!(
                "cannot scale now ({}); try again when the reload has ended",
                self.status_line()
            ));
        }
        let before = self.policy.workers;
        info!(
            "scaling generation {} from {before} to {workers} workers",
            self.active
        );
        self.policy.workers = workers;
        self.slots.resize_with(workers, Slot::default);
        self.slot_generations.resize(workers, self.active);
        for slot in before..workers {
            self.spawn_worker(processes, self.active, slot, now)?;
        }
        let surplus: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.slot >= workers && !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        for pid in surplus {
            self.stop_worker(processes, pid, now);
        }
        self.announce_status();
        self.sync_steering(processes);
        Ok(())
    }

    /// Every worker of `generation` is ready: it becomes the active generation.
    pub(super) fn promote(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        now: Instant,
    ) {
        let (requested, previous) = match self.phase {
            Phase::Reloading { started, .. } => (started, Some(self.active)),
            _ => (self.started, None),
        };
        let took = now.saturating_duration_since(requested);
        info!(
            "generation {generation} serving: {} workers ready in {} ms",
            self.policy.workers,
            took.as_millis()
        );
        self.active = generation;
        self.slots = vec![Slot::default(); self.policy.workers];
        self.all_slots_on(generation);
        self.rollout = None;
        self.phase = Phase::Serving;
        if let Some(old) = previous {
            if self.start_probation(old, requested, now) {
                self.announce_status();
                return;
            }
            let result = ReloadResult::Succeeded { generation, took };
            self.last_reload = Some(result.clone());
            self.announcements.push(Announcement::ReloadEnded {
                seq: self.reloads_started,
                result,
            });
            // Every older generation still serving a slot: `old`, and those a failed batched reload
            // left in some slots.
            let mut older: Vec<u32> = self
                .workers
                .iter()
                .filter(|w| w.generation != generation && !w.is_stopping())
                .map(|w| w.generation)
                .chain([old])
                .collect();
            older.sort_unstable();
            older.dedup();
            for old in older {
                self.stop_generation(processes, old, generation, requested, now);
            }
        } else {
            self.announcements.push(Announcement::Ready);
        }
        self.announce_status();
        if std::mem::take(&mut self.reload_queued) {
            self.start_reload(processes, now);
        }
    }

    pub(super) fn start_reload(&mut self, processes: &mut impl Processes, now: Instant) {
        self.newest += 1;
        self.reloads_started += 1;
        let next = self.newest;
        info!(
            "reload: starting generation {next} ({} workers) beside generation {}",
            self.policy.workers, self.active
        );
        self.phase = Phase::Reloading { next, started: now };
        self.announcements.push(Announcement::Reloading);
        self.announce_status();
        self.begin_rollout(processes, next, now);
    }

    pub(super) fn fail_reload(
        &mut self,
        processes: &mut impl Processes,
        reason: String,
        now: Instant,
    ) {
        let Phase::Reloading { next, .. } = self.phase else {
            error!("reload failure outside a reload ({reason}); this is a bug in reuseport-launch");
            return;
        };
        self.rollout = None;
        // The batch's new workers stop; slots a batch already switched keep their new workers.
        let doomed: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.generation == next && self.slot_generation(w.slot) != next)
            .filter(|w| !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        for pid in doomed {
            self.stop_worker(processes, pid, now);
        }
        let reason = if self.is_mixed() {
            let reason = format!("{reason}; {}", self.slots_summary());
            warn!("reload to generation {next} failed: {reason}; the other slots keep their workers serving");
            reason
        } else {
            warn!(
                "reload to generation {next} failed: {reason}; generation {} keeps serving",
                self.slot_generation(0)
            );
            reason
        };
        let result = ReloadResult::Failed {
            generation: next,
            reason,
        };
        self.last_reload = Some(result.clone());
        self.announcements.push(Announcement::ReloadEnded {
            seq: self.reloads_started,
            result,
        });
        self.phase = Phase::Serving;
        self.announce_status();
        if std::mem::take(&mut self.reload_queued) {
            self.start_reload(processes, now);
        }
    }

    /// Logs the end of a reload once the last process of the retired generation is gone.
    pub(super) fn retire_if_gone(&mut self, generation: u32, now: Instant) {
        if self.workers.iter().any(|w| w.generation == generation) {
            return;
        }
        if let Some(index) = self
            .retiring
            .iter()
            .position(|r| r.generation == generation)
        {
            let r = self.retiring.remove(index);
            info!(
                "generation {} gone {} ms after the stop signal; reload to generation {} done in {} ms",
                r.generation,
                now.saturating_duration_since(r.signalled).as_millis(),
                r.successor,
                now.saturating_duration_since(r.reload_requested).as_millis()
            );
        }
    }
}
