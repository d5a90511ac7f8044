//! A reload in batches (`--max-surge N`): N new workers start in the slots they replace; once all N
//! are ready they are steered in and the N old workers of those slots are handed over and drained; the
//! next batch starts once those old workers have exited; and so on until every slot runs the new
//! generation. Without `--max-surge` the one batch is every slot: today's whole-generation reload.
//! Which generation serves a slot is kept per slot (`slot_generations`): receiving, crash restarts
//! and health all follow it. Invariant: during a batched reload at most `workers + N` workers are
//! alive (every live worker counts, draining ones included), and a slot switches to the new generation
//! only when its new worker is ready.

use std::time::Instant;

use log::{debug, error, info};

use super::{Launcher, Phase, Processes, WorkerPhase};

/// A reload under way: which slots are still to be replaced, and which are being replaced now.
#[derive(Debug, Clone)]
pub(super) struct Rollout {
    /// The generation the reload starts.
    pub(super) generation: u32,
    /// Slots replaced at a time (1 ..= workers).
    pub(super) surge: usize,
    /// Slots not yet on `generation` and not in the batch, in the order they will be replaced.
    pub(super) pending: Vec<usize>,
    /// Slots whose new workers are starting; empty while the next batch waits for room.
    pub(super) batch: Vec<usize>,
    /// Batches started so far, for the log.
    pub(super) batches: usize,
}

impl Launcher {
    /// The generation that serves `slot` (its worker receives and is restarted after a crash).
    pub(super) fn slot_generation(&self, slot: usize) -> u32 {
        self.slot_generations
            .get(slot)
            .copied()
            .unwrap_or(self.active)
    }

    /// The surge a reload uses: `reload --max-surge` if given, else `--max-surge`, else every slot;
    /// never more than the workers, and every slot at once with `--probation`: a roll-back needs the
    /// whole old generation kept as a spare (README, "Probation").
    fn surge_for_reload(&self, asked: Option<usize>) -> usize {
        let workers = self.policy.workers.max(1);
        if !self.policy.probation.is_zero() {
            return workers;
        }
        asked
            .or(self.policy.max_surge)
            .unwrap_or(workers)
            .clamp(1, workers)
    }

    /// Checks `reload --max-surge N` before the reload is requested: N ≥ 1, and no batches with
    /// `--probation`.
    pub fn check_surge(&self, asked: usize) -> Result<(), String> {
        if asked == 0 {
            return Err(
                "--max-surge 0 would never start a new worker; give at least 1 (1: one slot at a time)"
                    .into(),
            );
        }
        if !self.policy.probation.is_zero() && asked < self.policy.workers {
            return Err(format!(
                "--max-surge {asked} cannot be used with --probation: probation keeps the whole old \
                 generation to roll back to, so a reload replaces all {} workers at once; reload without \
                 --max-surge",
                self.policy.workers
            ));
        }
        Ok(())
    }

    /// Starts the rollout of generation `next` (the phase is already Reloading).
    pub(super) fn begin_rollout(
        &mut self,
        processes: &mut impl Processes,
        next: u32,
        now: Instant,
    ) {
        let asked = self.next_surge.take();
        let surge = self.surge_for_reload(asked);
        let pending: Vec<usize> = (0..self.policy.workers)
            .filter(|&slot| self.slot_generation(slot) != next)
            .collect();
        if surge < self.policy.workers {
            info!(
                "reload: generation {next} replaces {} slots {surge} at a time (--max-surge {surge})",
                pending.len()
            );
        }
        self.rollout = Some(Rollout {
            generation: next,
            surge,
            pending,
            batch: Vec::new(),
            batches: 0,
        });
        self.advance_rollout(processes, now);
    }

    /// Starts the next batch when none is starting and there is room for it: in a batched reload the
    /// live workers plus the batch stay within `workers + surge`, so the old workers of the previous
    /// batch must have exited first. Called after every exit.
    pub(super) fn advance_rollout(&mut self, processes: &mut impl Processes, now: Instant) {
        if !matches!(self.phase, Phase::Reloading { .. }) {
            return;
        }
        let Some(rollout) = &self.rollout else {
            return;
        };
        if !rollout.batch.is_empty() || rollout.pending.is_empty() {
            return;
        }
        let size = rollout.surge.min(rollout.pending.len());
        let whole = rollout.surge >= self.policy.workers;
        if let Some((alive, most)) = self.surge_exceeded_by(size) {
            debug!(
                "reload to generation {}: next batch waits for room ({alive} workers alive, at most \
                 {most} with --max-surge {})",
                rollout.generation, rollout.surge
            );
            return;
        }
        let Some(rollout) = &mut self.rollout else {
            return;
        };
        let batch: Vec<usize> = rollout.pending.drain(..size).collect();
        rollout.batch = batch.clone();
        rollout.batches += 1;
        let (generation, number) = (rollout.generation, rollout.batches);
        if !whole {
            info!(
                "reload to generation {generation}: batch {number}: starting slot{} {}",
                if batch.len() == 1 { "" } else { "s" },
                join(&batch)
            );
        }
        for slot in batch {
            if let Err(reason) = self.spawn_worker(processes, generation, slot, now) {
                return self.fail_reload(processes, reason, now);
            }
        }
    }

    /// Err when a batched reload is under way and one more worker would take the live workers past
    /// `workers + surge`: a replacement (health.rs, memory.rs) then waits, and its check tries again.
    pub(super) fn room_for_one_more(&self) -> Result<(), String> {
        let (Some(rollout), Some((alive, most))) = (&self.rollout, self.surge_exceeded_by(1))
        else {
            return Ok(());
        };
        Err(format!(
            "no room for a replacement while the reload to generation {} runs: {alive} workers \
             alive, at most {most} with --max-surge {}",
            rollout.generation, rollout.surge
        ))
    }

    /// In a batched reload (surge below `--workers`), whether `extra` more workers would take the
    /// live ones (draining ones included) past `workers + surge`: then Some((alive, most)).
    fn surge_exceeded_by(&self, extra: usize) -> Option<(usize, usize)> {
        let rollout = self
            .rollout
            .as_ref()
            .filter(|r| r.surge < self.policy.workers)?;
        let (alive, most) = (self.workers.len(), self.policy.workers + rollout.surge);
        (alive + extra > most).then_some((alive, most))
    }

    /// A worker of the reload's generation got ready: when that completes the batch, its slots switch
    /// to the new generation, the old workers of those slots are steered out and drained, and the next
    /// batch follows (or, after the last one, the new generation is promoted).
    pub(super) fn on_rollout_worker_ready(&mut self, processes: &mut impl Processes, now: Instant) {
        let Some(rollout) = &self.rollout else {
            error!("a reload without a rollout; this is a bug in reuseport-launch");
            return;
        };
        let (generation, batch) = (rollout.generation, rollout.batch.clone());
        let whole = rollout.surge >= self.policy.workers;
        let ready = batch
            .iter()
            .filter(|&&slot| self.ready_in_slot(generation, slot))
            .count();
        if whole {
            info!(
                "generation {generation}: {ready}/{} workers ready",
                self.policy.workers
            );
        } else {
            info!(
                "generation {generation}: {ready}/{} workers of batch {} ready",
                batch.len(),
                rollout.batches
            );
        }
        if batch.is_empty() || ready < batch.len() {
            self.announce_status();
            return;
        }
        for &slot in &batch {
            self.slot_generations[slot] = generation;
        }
        let last = self.rollout.as_ref().is_some_and(|r| r.pending.is_empty());
        if last {
            self.rollout = None;
            return self.promote(processes, generation, now);
        }
        if let Some(rollout) = &mut self.rollout {
            rollout.batch.clear();
        }
        let old: Vec<_> = self
            .workers
            .iter()
            .filter(|w| batch.contains(&w.slot) && w.generation != generation && !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        info!(
            "reload to generation {generation}: {}; stopping the {} old workers of slot{} {}",
            self.slots_on(generation),
            old.len(),
            if batch.len() == 1 { "" } else { "s" },
            join(&batch)
        );
        for pid in old {
            self.stop_worker(processes, pid, now);
        }
        self.announce_status();
        self.advance_rollout(processes, now);
    }

    /// Whether a worker of `generation` in `slot` is ready.
    fn ready_in_slot(&self, generation: u32, slot: usize) -> bool {
        self.workers
            .iter()
            .any(|w| w.generation == generation && w.slot == slot && w.phase == WorkerPhase::Ready)
    }

    /// Slots on `generation`, of all.
    pub(super) fn slots_on_count(&self, generation: u32) -> usize {
        (0..self.policy.workers)
            .filter(|&slot| self.slot_generation(slot) == generation)
            .count()
    }

    /// "2 of 4 slots on generation 3".
    pub(super) fn slots_on(&self, generation: u32) -> String {
        format!(
            "{} of {} slots on generation {generation}",
            self.slots_on_count(generation),
            self.policy.workers
        )
    }

    /// Whether the slots serve more than one generation (a batched reload under way, or one that
    /// failed part-way).
    pub(super) fn is_mixed(&self) -> bool {
        let first = self.slot_generation(0);
        (0..self.policy.workers).any(|slot| self.slot_generation(slot) != first)
    }

    /// "2 of 4 slots on generation 3, 2 on generation 2": every generation that serves a slot, newest
    /// first.
    pub(super) fn slots_summary(&self) -> String {
        let mut generations: Vec<u32> = self.slot_generations[..self.policy.workers].to_vec();
        generations.sort_unstable_by(|a, b| b.cmp(a));
        generations.dedup();
        let mut parts = Vec::new();
        for (i, &generation) in generations.iter().enumerate() {
            let n = self.slots_on_count(generation);
            parts.push(if i == 0 {
                self.slots_on(generation)
            } else {
                format!("{n} on generation {generation}")
            });
        }
        parts.join(", ")
    }

    /// Every slot now serves `generation` (generation 1's start, a completed reload, a roll-back).
    pub(super) fn all_slots_on(&mut self, generation: u32) {
        self.slot_generations = vec![generation; self.policy.workers];
    }
}

/// "1, 2, 3"
fn join(slots: &[usize]) -> String {
    slots
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
