//! Stopping workers: the drain (by listener or by signal), the SIGKILL after --stop-timeout, and the
//! launcher's own stop. Invariant: every stop ends in the worker's exit; a worker told to stop is never
//! counted as serving again.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{
    describe, Announcement, DrainMode, Launcher, Outcome, Phase, Processes, Worker, WorkerPhase,
};

/// How often a draining worker's open connections are counted: one sock_diag dump and a read of its
/// fd table, cheap enough to keep a drain's end within a few ms of its last connection.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(20);

impl Launcher {
    /// SIGTERM/SIGINT: drain and stop everything — after the --lb-drain wait, if one is set and the
    /// active generation serves; a second request skips that wait, and one during the drain kills at
    /// once.
    pub fn request_stop(&mut self, processes: &mut impl Processes, now: Instant) {
        self.probation = None;
        match self.phase {
            Phase::Serving | Phase::Reloading { .. } if !self.policy.lb_drain.is_zero() => {
                self.start_lb_drain(processes, now)
            }
            Phase::LbDrain { .. } => {
                info!("second stop request: skipping the rest of --lb-drain");
                self.stop_all(processes, Outcome::Stopped, now);
            }
            Phase::Stopping { .. } => {
                warn!(
                    "second stop request: killing {} workers now",
                    self.workers.len()
                );
                for worker in &mut self.workers {
                    processes.signal(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Stopping { kill_at: None };
                }
            }
            Phase::Finished(_) => {}
            _ => self.stop_all(processes, Outcome::Stopped, now),
        }
    }

    /// The stop's first step with --lb-drain: health turns 503 now, the serving workers go on serving
    /// until the load balancer has noticed; a reload in progress is given up (its workers stop).
    fn start_lb_drain(&mut self, processes: &mut impl Processes, now: Instant) {
        let lb_drain = self.policy.lb_drain;
        if let Phase::Reloading { next, .. } = self.phase {
            // Slots a batched reload already switched keep serving with their new workers.
            let doomed: Vec<Pid> = self
                .workers
                .iter()
                .filter(|w| w.generation == next && self.slot_generation(w.slot) != next)
                .map(|w| w.pid)
                .collect();
            self.rollout = None;
            info!(
                "stop requested during the reload to generation {next}: stopping its {} workers",
                doomed.len()
            );
            for pid in doomed {
                self.stop_worker(processes, pid, now);
            }
        }
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        self.reload_queued = false;
        info!(
            "stopping: health check unavailable from now; generation {} keeps serving for {:.1}s (--lb-drain), then drains",
            self.active,
            lb_drain.as_secs_f64()
        );
        self.phase = Phase::LbDrain {
            drain_at: now + lb_drain,
        };
        self.announcements.push(Announcement::Stopping {
            within: lb_drain + self.longest_drain(),
        });
        self.announce_status();
    }

    /// The longest a drain can take: --stop-timeout for the connections to end (listener drain), then
    /// --stop-timeout until SIGKILL.
    fn longest_drain(&self) -> Duration {
        match self.policy.drain {
            DrainMode::Signal => self.policy.stop_timeout,
            DrainMode::Listener | DrainMode::Auto => 2 * self.policy.stop_timeout,
        }
    }

    /// The --lb-drain wait is over: the usual stop.
    pub(super) fn end_lb_drain(&mut self, processes: &mut impl Processes, now: Instant) {
        if matches!(self.phase, Phase::LbDrain { drain_at } if drain_at <= now) {
            info!("--lb-drain over");
            self.stop_all(processes, Outcome::Stopped, now);
        }
    }

    pub(super) fn fail_start(
        &mut self,
        processes: &mut impl Processes,
        reason: String,
        now: Instant,
    ) {
        error!("generation 1 failed to start: {reason}");
        self.stop_all(processes, Outcome::StartFailed(reason), now);
    }

    pub(super) fn stop_all(
        &mut self,
        processes: &mut impl Processes,
        outcome: Outcome,
        now: Instant,
    ) {
        let live: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        if outcome == Outcome::Stopped {
            info!(
                "stopping {} workers ({} after their drain; SIGKILL {:.1}s later)",
                live.len(),
                self.policy.stop_signal.as_str(),
                self.policy.stop_timeout.as_secs_f64()
            );
        }
        // Before the workers are told: a stop has no successor to steer connections to.
        self.phase = Phase::Stopping { outcome };
        for pid in live {
            self.stop_worker(processes, pid, now);
        }
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        self.reload_queued = false;
        self.announcements.push(Announcement::Stopping {
            within: self.longest_drain(),
        });
        self.announce_status();
        self.finish_if_stopped();
    }

    /// Starts stopping a worker: with steering, a handover first where another worker takes over its
    /// new connections; then the listener drain where it applies, else the stop signal.
    pub(super) fn stop_worker(&mut self, processes: &mut impl Processes, pid: Pid, now: Instant) {
        if !self.steer_out(pid, now) {
            self.drain(processes, pid, now);
        }
    }

    /// Drains a worker that is not steered out (or whose handover is over): it waits for its
    /// connections to end when the launcher drains it by its listener (shutting the listener down
    /// unless steering already keeps new connections away), else it gets the stop signal.
    pub(super) fn drain(&mut self, processes: &mut impl Processes, pid: Pid, now: Instant) {
        let Some(worker) = self.workers.iter().find(|w| w.pid == pid) else {
            return;
        };
        let handed_over = matches!(worker.phase, WorkerPhase::SteeredOut { .. });
        let drain_listener = (worker.phase == WorkerPhase::Ready || handed_over)
            && self.keeps_listeners(worker)
            && (handed_over || processes.close_listeners(pid));
        let phase = if drain_listener {
            debug!(
                "{}: {}; draining its connections",
                describe(worker),
                if handed_over {
                    "handed over"
                } else {
                    "listener closed"
                }
            );
            WorkerPhase::Draining {
                signal_at: now + self.policy.stop_timeout,
                // Handed over, its queue is already empty: its connections may be gone too.
                next_check: if handed_over {
                    now
                } else {
                    now + DRAIN_CHECK_INTERVAL
                },
            }
        } else {
            processes.ask_to_stop(pid, self.policy.stop_signal);
            WorkerPhase::Stopping {
                kill_at: Some(now + self.policy.stop_timeout),
            }
        };
        if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) {
            worker.phase = phase;
        }
    }

    /// Whether the launcher drains this worker by its listener (and so keeps copies of its listeners).
    pub(super) fn keeps_listeners(&self, worker: &Worker) -> bool {
        match self.policy.drain {
            DrainMode::Signal => false,
            DrainMode::Listener => true,
            DrainMode::Auto => !self.server_speaks_notify && !worker.spoke_notify,
        }
    }

    /// Draining workers whose connections are gone, or whose time is up, get the stop signal.
    pub(super) fn signal_drained(&mut self, processes: &mut impl Processes, now: Instant) {
        for worker in &mut self.workers {
            let WorkerPhase::Draining {
                signal_at,
                next_check,
            } = worker.phase
            else {
                continue;
            };
            if next_check > now {
                continue;
            }
            let idle = !processes.has_connections(worker.pid);
            if idle || signal_at <= now {
                // Counting connections reads /proc and may take a while on a loaded machine: the
                // SIGKILL grace period starts when the signal is really sent.
                let signalled_at = now.max(Instant::now());
                let why = if idle {
                    "no connections left"
                } else {
                    "--stop-timeout passed"
                };
                debug!(
                    "{}: {why}; sending {}",
                    describe(worker),
                    self.policy.stop_signal.as_str()
                );
                processes.ask_to_stop(worker.pid, self.policy.stop_signal);
                worker.phase = WorkerPhase::Stopping {
                    kill_at: Some(signalled_at + self.policy.stop_timeout),
                };
            } else {
                worker.phase = WorkerPhase::Draining {
                    signal_at,
                    next_check: now + DRAIN_CHECK_INTERVAL,
                };
            }
        }
    }

    pub(super) fn kill_overdue(&mut self, processes: &mut impl Processes, now: Instant) {
        for worker in &mut self.workers {
            if let WorkerPhase::Stopping { kill_at: Some(at) } = worker.phase {
                if at <= now {
                    warn!(
                        "{} still running {:.1}s after {}; sending SIGKILL",
                        describe(worker),
                        self.policy.stop_timeout.as_secs_f64(),
                        self.policy.stop_signal.as_str()
                    );
                    processes.signal(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Stopping { kill_at: None };
                }
            }
        }
    }

    pub(super) fn finish_if_stopped(&mut self) {
        if let Phase::Stopping { outcome } = &self.phase {
            if self.workers.is_empty() {
                self.phase = Phase::Finished(outcome.clone());
            }
        }
    }
}
