//! The launcher's decisions, pure: which generation serves, which workers should exist, when a reload
//! succeeds or rolls back, when a crashed worker is restarted, when a slow one is killed. They react to
//! events (reload/stop requested, a worker exited, a worker said READY=1, time passed) and act only
//! through the `Processes` trait they own, so they are tested without real processes. Invariant: no file
//! in this folder does I/O or imports a module that does; the active generation is never signalled by a
//! reload until every worker of its successor is ready.
//!
//! The `Launcher` is one struct whose methods are split by concern: workers.rs (bookkeeping and
//! readiness), reload.rs (the reload/rollback sequence), restarts.rs (crash-restart policy),
//! stopping.rs (drain and kill), timers.rs (deadlines), snapshot.rs (status and health), rollout.rs
//! (a reload's batches, `--max-surge`, and which generation serves each slot), replacement.rs (a
//! serving worker replaced in its slot beside it: health.rs and memory.rs decide when). Beside it,
//! rate_limit.rs decides when a repeated warning is written (the layers above log it).

mod announcements;
mod backoff;
mod events;
mod health;
mod lifecycle;
mod memory;
mod policy;
mod probation;
mod probes;
mod processes;
mod rate_limit;
mod reload;
mod replacement;
mod restarts;
mod rollout;
mod snapshot;
mod steering;
mod stopping;
mod timers;
mod workers;

use std::time::{Duration, Instant};

use nix::unistd::Pid;

pub use announcements::{Announcement, ReloadResult};
pub use events::{Check, ExitReason, NotifyMessage, ProbeOutcome};
pub use lifecycle::{Outcome, Phase, ReplaceReason, Worker, WorkerPhase};
pub use memory::format_mib;
pub use policy::{DrainMode, HealthPolicy, MemoryPolicy, Policy, ReadyMode};
pub use processes::Processes;
pub use rate_limit::{thousands, RateLimit, Verdict};
pub use snapshot::Snapshot;
#[cfg(test)]
pub use snapshot::WorkerRow;

use reload::Retiring;
use restarts::Slot;

pub struct Launcher {
    policy: Policy,
    phase: Phase,
    /// The generation that serves (or, while Starting, is starting).
    active: u32,
    /// The highest generation number used so far; numbers are never reused.
    newest: u32,
    started: Instant,
    /// Every live worker process, of any generation.
    workers: Vec<Worker>,
    slots: Vec<Slot>,
    retiring: Vec<Retiring>,
    reload_queued: bool,
    /// Some worker has sent READY=1: the server speaks sd_notify (for ReadyMode::Auto).
    server_speaks_notify: bool,
    /// Reloads started so far; a reload's sequence number lets a client wait for that very reload.
    reloads_started: u64,
    last_reload: Option<ReloadResult>,
    announcements: Vec<Announcement>,
    /// The workers whose listeners receive new connections, as last handed to `Processes::steer`.
    steered: Vec<Pid>,
    /// `--probation`: the reload whose old generation is kept as a spare.
    probation: Option<probation::Probation>,
    /// The generation whose workers serve each slot (receive, are crash-restarted); all `active`
    /// except during a batched reload, or after one that failed part-way.
    slot_generations: Vec<u32>,
    /// The reload under way, in batches of slots (`--max-surge`); None outside a reload.
    rollout: Option<rollout::Rollout>,
    /// `reload --max-surge N`: the surge of the next reload to start, when it was given.
    next_surge: Option<usize>,
    /// `--max-memory`: when the workers' memory is read next, and each slot's replacement backoff.
    memory: memory::MemoryWatch,
}

impl Launcher {
    pub fn new(policy: Policy, now: Instant) -> Launcher {
        Launcher {
            policy,
            phase: Phase::Starting,
            active: 1,
            newest: 1,
            started: now,
            workers: Vec::new(),
            slots: vec![Slot::default(); policy.workers],
            retiring: Vec::new(),
            reload_queued: false,
            server_speaks_notify: false,
            reloads_started: 0,
            last_reload: None,
            announcements: Vec::new(),
            steered: Vec::new(),
            probation: None,
            slot_generations: vec![1; policy.workers],
            rollout: None,
            next_surge: None,
            memory: memory::MemoryWatch::new(policy.memory, now),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Workers per generation, as configured or scaled.
    pub fn wanted(&self) -> usize {
        self.policy.workers
    }

    pub fn is_worker(&self, pid: Pid) -> bool {
        self.workers.iter().any(|w| w.pid == pid)
    }

    /// Announcements made since the last call.
    pub fn take_announcements(&mut self) -> Vec<Announcement> {
        std::mem::take(&mut self.announcements)
    }

    /// The pids of every live worker of `generation`.
    fn pids_of_generation(&self, generation: u32) -> Vec<Pid> {
        self.workers
            .iter()
            .filter(|w| w.generation == generation)
            .map(|w| w.pid)
            .collect()
    }

    fn count(&self, generation: u32, phase: impl Fn(WorkerPhase) -> bool) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == generation && phase(w.phase))
            .count()
    }

    fn announce_status(&mut self) {
        self.announcements
            .push(Announcement::Status(self.status_line()));
    }
}

/// "worker 2 (pid 1234, gen 3)"
fn describe(worker: &Worker) -> String {
    format!(
        "worker {} (pid {}, gen {})",
        worker.slot, worker.pid, worker.generation
    )
}

/// "100 ms" below a second, "2.2s" above.
fn format_delay(delay: Duration) -> String {
    if delay < Duration::from_secs(1) {
        format!("{} ms", delay.as_millis())
    } else {
        format!("{:.1}s", delay.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
