//! Which workers receive new connections when the launcher steers them (`--steer`): the ready workers
//! of the active generation, and no other socket of the port's group. A worker that leaves that set
//! while others receive is steered out first (the handover) and drained only once the connections the
//! kernel had already queued for it are accepted and `--handover-grace` has passed. Invariant: the set
//! handed to `Processes::steer` is recomputed at the end of every event, and a handover never empties it.

use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::unistd::Pid;

use super::{describe, Launcher, Phase, Processes, WorkerPhase};

/// How often a steered-out worker's queues are looked at: one getsockopt (or peek) per socket, and a
/// handover waits for at most a few of these.
const HANDOVER_CHECK_INTERVAL: Duration = Duration::from_millis(5);

impl Launcher {
    /// Hands the current receiving set to the kernel when it changed. Called at the end of every event.
    pub(super) fn sync_steering(&mut self, processes: &mut impl Processes) {
        if !self.policy.steer || matches!(self.phase, Phase::Finished(_)) {
            return;
        }
        let receiving = self.receiving();
        if receiving != self.steered {
            debug!("steering new connections to pids {receiving:?}");
            processes.steer(&receiving);
            self.steered = receiving;
        }
    }

    /// Whether new connections go to this worker (with steering on).
    pub(super) fn is_receiving(&self, pid: Pid) -> bool {
        self.steered.contains(&pid)
    }

    /// The workers that should receive new connections: the ready ones of the generation serving
    /// their slot (the active generation, except in a batched reload's mix).
    fn receiving(&self) -> Vec<Pid> {
        if matches!(self.phase, Phase::Stopping { .. }) {
            // No successor: a stop leaves the set alone; the workers' listeners close as they exit.
            return self.steered.clone();
        }
        self.workers
            .iter()
            .filter(|w| {
                w.generation == self.slot_generation(w.slot) && w.phase == WorkerPhase::Ready
            })
            .map(|w| w.pid)
            .collect()
    }

    /// Steers `pid` out when it receives connections and another worker will take them over; false
    /// when there is nothing to hand over (steering off, it never received, or no one else receives).
    pub(super) fn steer_out(&mut self, pid: Pid, now: Instant) -> bool {
        if !self.policy.steer
            || matches!(self.phase, Phase::Stopping { .. })
            || !self.steered.contains(&pid)
            || !self.receiving().iter().any(|&p| p != pid)
        {
            return false;
        }
        let grace = self.policy.handover_grace;
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return false;
        };
        if worker.phase != WorkerPhase::Ready {
            return false;
        }
        worker.phase = WorkerPhase::SteeredOut {
            since: now,
            next_check: now + grace,
        };
        debug!("{}: steered out; handing over its queue", describe(worker));
        true
    }

    /// Steered-out workers are drained once the grace has passed, their queues (accept queues, UDP
    /// receive queues) are empty and (with `--udp-flow-idle`) none of their UDP flows was active for
    /// the idle time; one whose queue or flows never go quiet is drained after --stop-timeout anyway.
    pub(super) fn finish_handovers(&mut self, processes: &mut impl Processes, now: Instant) {
        let due: Vec<(Pid, Instant)> = self
            .workers
            .iter()
            .filter_map(|w| match w.phase {
                WorkerPhase::SteeredOut { since, next_check } if next_check <= now => {
                    Some((w.pid, since))
                }
                _ => None,
            })
            .collect();
        for (pid, since) in due {
            let queued = processes.queued(pid).unwrap_or(0);
            let deadline = since + self.policy.stop_timeout;
            let overdue = now >= deadline;
            let flows_until = self.flows_active_until(processes, pid, now);
            if (queued > 0 || flows_until.is_some()) && !overdue {
                // A queue is looked at again soon; live flows when the last of them may go idle.
                let next_check = match flows_until {
                    _ if queued > 0 => now + HANDOVER_CHECK_INTERVAL,
                    Some(until) => until.min(deadline),
                    None => now + HANDOVER_CHECK_INTERVAL,
                };
                if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) {
                    worker.phase = WorkerPhase::SteeredOut { since, next_check };
                }
                continue;
            }
            if let Some(worker) = self.workers.iter().find(|w| w.pid == pid) {
                let after = now.saturating_duration_since(since).as_millis();
                if flows_until.is_some() && queued == 0 {
                    warn!(
                        "{}: UDP flows still active {after} ms after it was steered out \
                         (--stop-timeout); draining it anyway",
                        describe(worker)
                    );
                } else if queued > 0 {
                    warn!(
                        "{}: {queued} connections still queued {after} ms after it was steered out \
                         (--stop-timeout); draining it anyway",
                        describe(worker)
                    );
                } else {
                    debug!(
                        "{}: queue empty {after} ms after it was steered out",
                        describe(worker)
                    );
                }
            }
            self.drain(processes, pid, now);
        }
    }

    /// With `--udp-flow-idle`: until when the worker's most recent UDP flow counts as active; None
    /// when it has none active now (or flows are off).
    fn flows_active_until(
        &self,
        processes: &mut impl Processes,
        pid: Pid,
        now: Instant,
    ) -> Option<Instant> {
        let idle = self.policy.udp_flow_idle;
        if idle.is_zero() {
            return None;
        }
        let until = processes.flow_last_active(pid)? + idle;
        (until > now).then_some(until)
    }
}
