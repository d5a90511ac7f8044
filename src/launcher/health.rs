//! `--health http:PATH|ipc`: ready workers are checked every --health-interval; one that fails
//! --health-failures checks in a row is replaced without losing capacity — its replacement starts in
//! the same slot beside it, and only once that one is ready is the sick worker steered out and drained
//! (replacement.rs). Invariant: at most one check per worker is under way; a worker being replaced is
//! checked no more, and it keeps receiving until its replacement is ready.

use std::time::Instant;

use log::{debug, info, warn};
use nix::unistd::Pid;

use super::{
    describe, Check, Launcher, Phase, ProbeOutcome, Processes, ReplaceReason, WorkerPhase,
};

impl Launcher {
    /// Starts the health checks that are due.
    pub(super) fn start_due_health_checks(&mut self, processes: &mut impl Processes, now: Instant) {
        let Some(health) = self.policy.health else {
            return;
        };
        let (serving, active) = (self.slot_generations.clone(), self.active);
        for worker in &mut self.workers {
            if worker.checking || worker.health_at.is_none_or(|at| at > now) {
                continue;
            }
            worker.health_at = None;
            // Only the generation serving the worker's slot (during and after a batched reload a
            // slot's generation may differ from its neighbours'): a probation's spare is checked again
            // if it serves again.
            if worker.phase != WorkerPhase::Ready
                || worker.replacing.is_some()
                || serving.get(worker.slot).copied().unwrap_or(active) != worker.generation
            {
                continue;
            }
            worker.checking = true;
            processes.probe(worker.pid, Check::Health, health.timeout);
        }
    }

    /// A health check of worker `pid` ended with `outcome`.
    pub(super) fn on_health(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        outcome: ProbeOutcome,
        now: Instant,
    ) {
        let Some(health) = self.policy.health else {
            return;
        };
        let replaceable = matches!(self.phase, Phase::Serving | Phase::Reloading { .. });
        let (serving, active) = (self.slot_generations.clone(), self.active);
        let on_probation = self.probation_generation();
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        worker.checking = false;
        worker.last_health = Some((now, outcome.clone()));
        if worker.phase != WorkerPhase::Ready || worker.replacing.is_some() {
            return;
        }
        worker.health_at = Some(now + health.interval);
        if outcome.passed() {
            if worker.health_failures > 0 {
                info!(
                    "{}: health check passed again ({outcome})",
                    describe(worker)
                );
            }
            worker.health_failures = 0;
            debug!("{}: health check {outcome}", describe(worker));
            return;
        }
        worker.health_failures += 1;
        let failures = worker.health_failures;
        if failures < health.failures {
            warn!(
                "{}: health check failed: {outcome} ({failures}/{} in a row)",
                describe(worker),
                health.failures
            );
            return;
        }
        if !replaceable || serving.get(worker.slot).copied().unwrap_or(active) != worker.generation
        {
            warn!(
                "{}: health check failed: {outcome} ({failures} in a row); not replaced: {}",
                describe(worker),
                if replaceable {
                    "not of the serving generation"
                } else {
                    "the launcher is starting or stopping"
                }
            );
            return;
        }
        let (generation, slot) = (worker.generation, worker.slot);
        if on_probation == Some(generation) {
            let reason = format!(
                "{} failed {failures} health checks in a row (last: {outcome})",
                super::describe(worker)
            );
            return self.roll_back(processes, reason, now);
        }
        warn!(
            "{}: health check failed: {outcome} ({failures} in a row, --health-failures {}); starting \
             its replacement in slot {slot}, and it keeps serving until that one is ready",
            describe(worker),
            health.failures
        );
        if let Err(reason) = self.start_replacement(processes, pid, ReplaceReason::Health, now) {
            warn!("{reason}; the sick worker keeps serving, and the next check tries again");
            if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) {
                worker.health_failures = 0;
                worker.health_at = Some(now + health.interval);
            }
        }
    }
}
