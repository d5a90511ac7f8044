//! Worker bookkeeping: spawning a generation's workers, what their notify messages and listening
//! sockets mean, and when a worker counts as ready. Invariant: a worker is ready at most once, and only
//! by the signal `--ready` names.

use std::time::Instant;

use log::{debug, info, warn};
use nix::unistd::Pid;

use super::{describe, Launcher, NotifyMessage, Phase, Processes, ReadyMode, Worker, WorkerPhase};

impl Launcher {
    /// Spawns generation 1.
    pub fn start(&mut self, processes: &mut impl Processes, now: Instant) {
        info!("generation 1: starting {} workers", self.policy.workers);
        if let Err(reason) = self.spawn_generation(processes, 1, now) {
            self.fail_start(processes, reason, now);
        }
    }

    /// A notify message attributed to the worker `pid`.
    pub fn on_notify(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        message: &NotifyMessage,
        now: Instant,
    ) {
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        if let Some(status) = &message.status {
            debug!("{}: STATUS={status}", describe(worker));
            worker.status = Some(status.clone());
        }
        if let Some(errno) = message.errno {
            warn!(
                "{} reports ERRNO={errno} ({})",
                describe(worker),
                nix::errno::Errno::from_raw(errno).desc()
            );
        }
        if message.watchdog {
            worker.last_watchdog = Some(now);
        }
        if message.stopping {
            debug!("{} sent STOPPING=1", describe(worker));
        }
        worker.spoke_notify = true;
        if message.ready {
            self.server_speaks_notify = true;
            if !matches!(self.policy.ready, ReadyMode::Listen | ReadyMode::Http) {
                self.mark_ready(processes, pid, "READY=1", now);
            }
        }
    }

    /// The worker `pid` was seen with a TCP socket in LISTEN state (or a bound UDP socket).
    pub fn on_listening(&mut self, processes: &mut impl Processes, pid: Pid, now: Instant) {
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        let first = !worker.listening;
        worker.listening = true;
        let counts = match self.policy.ready {
            ReadyMode::Http => {
                if first && matches!(worker.phase, WorkerPhase::Starting { .. }) {
                    worker.probe_at = Some(now);
                    self.start_due_probes(processes, now);
                }
                false
            }
            ReadyMode::Notify => false,
            ReadyMode::Listen => true,
            ReadyMode::Auto => !self.server_speaks_notify && !worker.spoke_notify,
        };
        if counts {
            self.mark_ready(processes, pid, "listening", now);
        }
    }

    /// Workers that have not become ready yet.
    pub fn starting_workers(&self) -> Vec<Pid> {
        self.workers
            .iter()
            .filter(|w| matches!(w.phase, WorkerPhase::Starting { .. }))
            .map(|w| w.pid)
            .collect()
    }

    pub(super) fn mark_ready(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        signal: &str,
        now: Instant,
    ) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        if !matches!(self.workers[index].phase, WorkerPhase::Starting { .. }) {
            return;
        }
        processes.stop_tracking_binds(pid);
        // Steering keeps the copies for the worker's whole life: the kernel map and the queue checks need them.
        if !self.policy.steer && !self.keeps_listeners(&self.workers[index]) {
            processes.release_listeners(pid);
        }
        let worker = &mut self.workers[index];
        worker.phase = WorkerPhase::Ready;
        worker.health_at = self.policy.health.map(|h| now + h.interval);
        let took = now.saturating_duration_since(worker.spawned_at);
        worker.ready_after = Some(took);
        debug!(
            "{} ready ({signal}) after {} ms",
            describe(worker),
            took.as_millis()
        );
        let generation = worker.generation;
        let slot = worker.slot;
        self.retire_replaced(processes, generation, slot, now);
        self.on_worker_ready(processes, generation, now);
        self.sync_steering(processes);
    }

    pub(super) fn spawn_generation(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        now: Instant,
    ) -> Result<(), String> {
        for slot in 0..self.policy.workers {
            self.spawn_worker(processes, generation, slot, now)?;
        }
        Ok(())
    }

    pub(super) fn spawn_worker(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        slot: usize,
        now: Instant,
    ) -> Result<(), String> {
        let pid = processes.spawn(generation, slot).map_err(|e| {
            format!("unable to spawn worker {slot} of generation {generation}: {e}")
        })?;
        debug!("worker {slot} (pid {pid}, gen {generation}) spawned");
        self.workers.push(Worker {
            slot,
            generation,
            pid,
            phase: WorkerPhase::Starting {
                ready_deadline: now + self.policy.ready_timeout,
            },
            spawned_at: now,
            ready_after: None,
            status: None,
            last_watchdog: None,
            spoke_notify: false,
            listening: false,
            probe_at: None,
            probing: false,
            last_probe: None,
            health_at: None,
            checking: false,
            health_failures: 0,
            last_health: None,
            replacing: None,
        });
        Ok(())
    }

    pub(super) fn on_worker_ready(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        now: Instant,
    ) {
        let ready = self.count(generation, |p| p == WorkerPhase::Ready);
        let total = self.policy.workers;
        match self.phase {
            Phase::Starting if generation == self.newest => {
                info!("generation {generation}: {ready}/{total} workers ready");
                if ready == total {
                    self.promote(processes, generation, now);
                } else {
                    self.announce_status();
                }
            }
            // A worker of the reload's own batch; one the new generation restarted in a slot it
            // already serves is a refill, below.
            Phase::Reloading { next, .. }
                if generation == next
                    && self.rollout.as_ref().is_some_and(|r| {
                        self.workers.iter().any(|w| {
                            w.generation == next
                                && w.phase == WorkerPhase::Ready
                                && r.batch.contains(&w.slot)
                        })
                    }) =>
            {
                self.on_rollout_worker_ready(processes, now)
            }
            _ if (0..total).any(|slot| self.slot_generation(slot) == generation) => {
                info!(
                    "generation {generation}: {ready}/{} workers ready (slot refilled)",
                    self.slots_on_count(generation)
                )
            }
            _ => {}
        }
    }
}
