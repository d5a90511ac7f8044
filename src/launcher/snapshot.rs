//! A point-in-time view of the launcher for `status` and systemd's STATUS= line. Read-only: nothing
//! here changes a decision.

use std::time::{Duration, Instant};

use super::{Launcher, Phase, Processes, ReloadResult, ReplaceReason, WorkerPhase};

/// A point-in-time view of the launcher for `status`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: &'static str,
    pub active: u32,
    pub wanted: usize,
    pub status_line: String,
    pub last_reload: Option<ReloadResult>,
    pub workers: Vec<WorkerRow>,
    /// The generation that serves each slot, by slot: during a batched reload (`--max-surge`), and
    /// after one that failed part-way, slots serve different generations.
    pub slots: Vec<u32>,
}

/// One worker in a `Snapshot`.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub generation: u32,
    pub slot: usize,
    pub pid: i32,
    /// starting, ready, handover (steered out, its queue being accepted), draining (its listener taken
    /// out, connections ending) or stopping (signalled)
    pub state: &'static str,
    pub uptime: Duration,
    /// Restarts of this slot in the active generation.
    pub restarts: u32,
    pub ready_after: Option<Duration>,
    /// The worker's last STATUS= line.
    pub status: Option<String>,
    /// With steering: whether its listeners receive new connections.
    pub receiving: Option<bool>,
    /// What waits to be received by it (`Processes::queued`), when the launcher holds its sockets.
    pub accept_queue: Option<u32>,
    /// With `--udp-flow-idle`: its live UDP flows; None when flows are off or it has no UDP socket.
    pub udp_flows: Option<u32>,
    /// `--health`: its last check; None before the first one ends.
    pub health: Option<HealthRow>,
    /// With `--max-memory`: the PSS of its process tree in bytes (`Processes::memory`, read now);
    /// None without the flag, or when it cannot be read.
    pub memory_bytes: Option<u64>,
    /// Why it is being replaced in its slot (`health`, `memory`); None: it is not.
    pub replacing: Option<&'static str>,
}

/// A worker's last health check, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    pub passed: bool,
    /// What it answered or what failed: `answered 200`, `no answer within 2.0s`, ...
    pub result: String,
    /// How long ago it ended.
    pub ago: Duration,
    /// Failed checks in a row, this one included.
    pub failures_in_a_row: u32,
}

impl Launcher {
    /// Everything `reuseport-launch status` shows; `processes` tells the accept queue depths.
    pub fn snapshot(&self, processes: &mut impl Processes, now: Instant) -> Snapshot {
        let mut workers: Vec<WorkerRow> = self
            .workers
            .iter()
            .map(|w| WorkerRow {
                generation: w.generation,
                slot: w.slot,
                pid: w.pid.as_raw(),
                state: match w.phase {
                    WorkerPhase::Starting { .. } => "starting",
                    WorkerPhase::Ready => "ready",
                    WorkerPhase::SteeredOut { .. } => "handover",
                    WorkerPhase::Draining { .. } => "draining",
                    WorkerPhase::Stopping { .. } => "stopping",
                },
                uptime: now.saturating_duration_since(w.spawned_at),
                restarts: if w.generation == self.slot_generation(w.slot) {
                    self.slots.get(w.slot).map_or(0, |s| s.restarts)
                } else {
                    0
                },
                ready_after: w.ready_after,
                status: w.status.clone(),
                receiving: self.policy.steer.then(|| self.is_receiving(w.pid)),
                accept_queue: processes.queued(w.pid),
                udp_flows: processes.live_flows(w.pid),
                health: w.last_health.as_ref().map(|(at, outcome)| HealthRow {
                    passed: outcome.passed(),
                    result: outcome.to_string(),
                    ago: now.saturating_duration_since(*at),
                    failures_in_a_row: w.health_failures,
                }),
                memory_bytes: self.policy.memory.and_then(|_| processes.memory(w.pid)),
                replacing: w.replacing.map(|r| match r {
                    ReplaceReason::Health => "health",
                    ReplaceReason::Memory => "memory",
                }),
            })
            .collect();
        workers.sort_by_key(|w| (w.generation, w.slot, w.pid));
        Snapshot {
            phase: match self.phase {
                Phase::Starting => "starting",
                Phase::Serving => "serving",
                Phase::Reloading { .. } => "reloading",
                Phase::LbDrain { .. } | Phase::Stopping { .. } | Phase::Finished(_) => "stopping",
            },
            active: self.active,
            wanted: self.policy.workers,
            status_line: self.status_line(),
            last_reload: self.last_reload.clone(),
            workers,
            slots: (0..self.policy.workers)
                .map(|slot| self.slot_generation(slot))
                .collect(),
        }
    }

    /// Whether a load balancer should send this host traffic: Ok (with the status line) while every slot
    /// is served by a ready worker of the active generation and no stop is under way; Err with the
    /// reason otherwise. A reload in progress is healthy: the active generation still serves.
    pub fn health(&self) -> Result<String, String> {
        match self.phase {
            Phase::Starting => return Err(self.status_line()),
            Phase::LbDrain { .. } | Phase::Stopping { .. } | Phase::Finished(_) => {
                return Err(self.status_line())
            }
            Phase::Serving | Phase::Reloading { .. } => {}
        }
        let missing: Vec<String> = (0..self.policy.workers)
            .filter(|&slot| {
                !self.workers.iter().any(|w| {
                    w.generation == self.slot_generation(slot)
                        && w.slot == slot
                        && w.phase == WorkerPhase::Ready
                })
            })
            .map(|slot| slot.to_string())
            .collect();
        if missing.is_empty() {
            Ok(self.status_line())
        } else {
            Err(format!(
                "{}; no ready worker in slot {}",
                self.status_line(),
                missing.join(", ")
            ))
        }
    }

    /// A one-line summary for humans and for systemd's STATUS=.
    pub fn status_line(&self) -> String {
        let ready = self.count(self.active, |p| p == WorkerPhase::Ready);
        let base = if self.is_mixed() {
            // Slots of several generations: each slot counts when its serving worker is ready.
            let serving = (0..self.policy.workers)
                .filter(|&slot| {
                    self.workers.iter().any(|w| {
                        w.slot == slot
                            && w.generation == self.slot_generation(slot)
                            && w.phase == WorkerPhase::Ready
                    })
                })
                .count();
            format!(
                "{}: {serving}/{} ready",
                self.slots_summary(),
                self.policy.workers
            )
        } else {
            format!(
                "gen {}: {}/{} ready",
                self.active, ready, self.policy.workers
            )
        };
        match (&self.phase, &self.last_reload) {
            (Phase::Serving, _) if self.probation.is_some() => {
                let old = self.probation.as_ref().map_or(0, |p| p.old);
                format!("{base}; on probation (--probation), gen {old} kept to roll back to")
            }
            (Phase::Starting, _) => {
                format!("gen 1 starting: {}/{} ready", ready, self.policy.workers)
            }
            (Phase::Reloading { next, .. }, _)
                if self
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.surge < self.policy.workers) =>
            {
                let rollout = self.rollout.as_ref().expect("checked above");
                let batch_ready = rollout
                    .batch
                    .iter()
                    .filter(|&&slot| {
                        self.workers.iter().any(|w| {
                            w.generation == *next && w.slot == slot && w.phase == WorkerPhase::Ready
                        })
                    })
                    .count();
                let batch = if rollout.batch.is_empty() {
                    format!(
                        "batch {} waits for the old workers of batch {} to exit",
                        rollout.batches + 1,
                        rollout.batches
                    )
                } else {
                    format!(
                        "batch {}: {batch_ready}/{} ready",
                        rollout.batches,
                        rollout.batch.len()
                    )
                };
                format!(
                    "{base}; reloading to gen {next}, {} at a time (--max-surge): {}, {batch}",
                    rollout.surge,
                    self.slots_on(*next),
                )
            }
            (Phase::Reloading { next, .. }, _) => {
                let next_ready = self.count(*next, |p| p == WorkerPhase::Ready);
                format!(
                    "{base}; reloading to gen {next}: {next_ready}/{} ready",
                    self.policy.workers
                )
            }
            (Phase::LbDrain { .. }, _) => format!(
                "stopping: {base}, serving until the load balancer has noticed (--lb-drain {:.1}s), then draining",
                self.policy.lb_drain.as_secs_f64()
            ),
            (Phase::Stopping { .. } | Phase::Finished(_), _) => {
                format!("stopping: {} workers left", self.workers.len())
            }
            (_, Some(ReloadResult::Succeeded { took, .. })) => {
                format!("{base}; last reload ok in {} ms", took.as_millis())
            }
            (_, Some(ReloadResult::Failed { generation, reason })) => {
                format!("{base}; reload to gen {generation} failed: {reason}")
            }
            (_, None) => base,
        }
    }
}
