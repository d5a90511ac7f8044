//! Replacing a serving worker in its slot without losing capacity: health.rs decides it for a worker
//! that fails its checks, memory.rs for one that outgrew `--max-memory`. The replacement starts in the
//! same slot beside it while the old worker keeps serving; only once the replacement is ready is the
//! old one steered out (its queue handed over) and drained, as in a reload. Invariant: at most one
//! replacement per worker is under way; the old worker leaves the receiving set only when a ready
//! worker of its slot takes its place, so a replacement that fails to get ready (restarted in the slot
//! with the crash-restart backoff) leaves it serving.

use std::time::Instant;

use log::{error, info};
use nix::unistd::Pid;

use super::{describe, Announcement, Launcher, Processes, ReplaceReason, WorkerPhase};

impl Launcher {
    /// Starts a replacement for worker `pid` in its slot, for `reason`. Err with the reason when the
    /// spawn failed or a batched reload leaves no room for it: then nothing changed, and the worker is
    /// not marked.
    pub(super) fn start_replacement(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        reason: ReplaceReason,
        now: Instant,
    ) -> Result<(), String> {
        let Some(worker) = self.workers.iter().find(|w| w.pid == pid) else {
            error!(
                "pid {pid} is to be replaced but is no worker; this is a bug in reuseport-launch"
            );
            return Ok(());
        };
        if worker.replacing.is_some() {
            return Ok(());
        }
        let (generation, slot) = (worker.generation, worker.slot);
        self.room_for_one_more()?;
        self.spawn_worker(processes, generation, slot, now)?;
        if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) {
            worker.replacing = Some(reason);
            worker.health_at = None;
        }
        self.announcements.push(Announcement::Replacing {
            generation,
            slot,
            reason,
        });
        Ok(())
    }

    /// A worker of `generation` got ready in `slot`: the workers it replaces are steered out (then
    /// drained once their queue is accepted), or drained at once when nothing was steered.
    pub(super) fn retire_replaced(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        slot: usize,
        now: Instant,
    ) {
        let replaced: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.replacing.is_some() && w.generation == generation && w.slot == slot)
            .filter(|w| w.phase == WorkerPhase::Ready)
            .map(|w| w.pid)
            .collect();
        for pid in replaced {
            if let Some(worker) = self.workers.iter().find(|w| w.pid == pid) {
                info!(
                    "{}: its replacement is ready; steering it out",
                    describe(worker)
                );
            }
            if !self.steer_out(pid, now) {
                self.drain(processes, pid, now);
            }
        }
    }

    /// Whether a worker other than `pid` is alive in its slot and generation, not told to stop: the
    /// replacement of `pid`, under way.
    pub(super) fn has_replacement(&self, pid: Pid, generation: u32, slot: usize) -> bool {
        self.workers.iter().any(|w| {
            w.pid != pid && w.generation == generation && w.slot == slot && !w.is_stopping()
        })
    }

    /// For the log line of a replacement that failed in `slot`: "; worker 0 (pid 41, gen 1), which it
    /// was to replace (--max-memory), keeps serving", or nothing when no worker there is being replaced.
    pub(super) fn replaced_note(&self, generation: u32, slot: usize) -> String {
        self.workers
            .iter()
            .find(|w| w.generation == generation && w.slot == slot && w.replacing.is_some())
            .map_or_else(String::new, |w| {
                format!(
                    "; {}, which it was to replace ({}), keeps serving",
                    describe(w),
                    w.replacing.map_or("", |r| r.flag())
                )
            })
    }
}
