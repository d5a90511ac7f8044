//! `--ready http:PATH`: when a starting worker is probed and what a probe's outcome means. A worker
//! is probed once it listens, then again PROBE_RETRY_INTERVAL after each failed probe, one probe at
//! a time, until one answers 2xx (it is ready) or --ready-timeout gives up on it (timers.rs).
//! Invariant: at most one probe per worker is under way, and only a Starting worker is probed.

use std::time::{Duration, Instant};

use log::debug;
use nix::unistd::Pid;

use super::{describe, Check, Launcher, ProbeOutcome, Processes, WorkerPhase};

/// Time between a failed readiness probe and the next: a server warming up is seen ready within
/// this of being so, at one connection per interval.
pub const PROBE_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// How long one readiness probe may take: a worker that accepts but does not answer for this long
/// is probed again (and --ready-timeout still bounds the whole wait).
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Launcher {
    /// Starts the probes that are due.
    pub(super) fn start_due_probes(&mut self, processes: &mut impl Processes, now: Instant) {
        for worker in &mut self.workers {
            if worker.probing || worker.probe_at.is_none_or(|at| at > now) {
                continue;
            }
            worker.probe_at = None;
            if !matches!(worker.phase, WorkerPhase::Starting { .. }) {
                continue;
            }
            worker.probing = true;
            processes.probe(worker.pid, Check::Ready, READY_PROBE_TIMEOUT);
        }
    }

    /// A probe of worker `pid` for `check` ended with `outcome`.
    pub fn on_probe(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        check: Check,
        outcome: ProbeOutcome,
        now: Instant,
    ) {
        if check == Check::Health {
            return self.on_health(processes, pid, outcome, now);
        }
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        worker.probing = false;
        let answered_by = match &outcome {
            ProbeOutcome::Answered { excerpt, .. } if !excerpt.is_empty() => {
                format!(" (body: {excerpt:?})")
            }
            _ => String::new(),
        };
        debug!("{}: ready probe {outcome}{answered_by}", describe(worker));
        let passed = outcome.passed();
        let starting = matches!(worker.phase, WorkerPhase::Starting { .. });
        worker.last_probe = Some((now, outcome.clone()));
        if !starting {
            return;
        }
        if passed {
            let signal = format!("http probe {outcome}");
            self.mark_ready(processes, pid, &signal, now);
        } else {
            worker.probe_at = Some(now + PROBE_RETRY_INTERVAL);
        }
    }
}
