//! The lifecycles the decisions track: one worker's (`WorkerPhase`), the launcher's (`Phase`) and how
//! it ends (`Outcome`). Plain data: every transition is made by the `Launcher` methods in this folder.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// The lifecycle of one worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPhase {
    /// Spawned; has until `ready_deadline` to send READY=1.
    Starting { ready_deadline: Instant },
    /// Sent READY=1.
    Ready,
    /// Steering no longer sends it new connections (its successor receives them); it is left alone
    /// until its listeners' accept queues are empty and `--handover-grace` has passed since `since`
    /// (checked at `next_check`), then drained like any other worker.
    SteeredOut { since: Instant, next_check: Instant },
    /// Receives no new connections: its listening sockets were taken out of the port's group
    /// (`--drain listener`), or steered out; it gets the stop signal once its connections are gone,
    /// checked at `next_check`, or at `signal_at` at the latest.
    Draining {
        signal_at: Instant,
        next_check: Instant,
    },
    /// Sent the stop signal; gets SIGKILL at `kill_at` (None once SIGKILL was sent).
    Stopping { kill_at: Option<Instant> },
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub slot: usize,
    pub generation: u32,
    pub pid: Pid,
    pub phase: WorkerPhase,
    pub spawned_at: Instant,
    /// Time from spawn to READY=1.
    pub ready_after: Option<Duration>,
    /// Last STATUS= the worker sent.
    pub status: Option<String>,
    /// Last WATCHDOG=1 the worker sent.
    pub last_watchdog: Option<Instant>,
    /// The worker has sent at least one notify message.
    pub spoke_notify: bool,
    /// The worker was seen with a TCP socket in LISTEN state (or a bound UDP socket).
    pub listening: bool,
    /// `--ready http`: when its next probe starts; None while one is under way or none is due.
    pub probe_at: Option<Instant>,
    /// A probe of it is under way.
    pub probing: bool,
    /// Its last probe's outcome and when it ended.
    pub last_probe: Option<(Instant, super::ProbeOutcome)>,
    /// `--health`: when its next check starts (None: under way, or not ready).
    pub health_at: Option<Instant>,
    /// A health check of it is under way.
    pub checking: bool,
    /// Failed health checks in a row.
    pub health_failures: u32,
    /// Its last health check's outcome and when it ended.
    pub last_health: Option<(Instant, super::ProbeOutcome)>,
    /// Why it is being replaced (it failed --health-failures checks in a row, or outgrew
    /// --max-memory): a replacement is starting in its slot, and it keeps serving until that one is
    /// ready, then it is steered out and drained. None: not being replaced.
    pub replacing: Option<ReplaceReason>,
}

/// Why a serving worker is replaced in its slot while it keeps serving (replacement.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceReason {
    /// It failed `--health-failures` health checks in a row.
    Health,
    /// Its memory exceeded `--max-memory`.
    Memory,
}

impl ReplaceReason {
    /// The flag that made the launcher replace it, for log lines.
    pub fn flag(self) -> &'static str {
        match self {
            ReplaceReason::Health => "--health-failures",
            ReplaceReason::Memory => "--max-memory",
        }
    }
}

impl Worker {
    /// Told to stop already (draining or signalled).
    pub fn is_stopping(&self) -> bool {
        matches!(
            self.phase,
            WorkerPhase::Stopping { .. }
                | WorkerPhase::Draining { .. }
                | WorkerPhase::SteeredOut { .. }
        )
    }
}

/// The lifecycle of the launcher as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Generation 1 is starting; nothing is reported ready yet.
    Starting,
    /// The active generation serves; no reload is running.
    Serving,
    /// Generation `next` is starting beside the active one.
    Reloading { next: u32, started: Instant },
    /// A stop was requested with --lb-drain: every worker of the active generation keeps serving, and
    /// the health check says 503, until `drain_at`; then the launcher stops as in `Stopping`. Nothing
    /// is started meanwhile (no reload, no restart).
    LbDrain { drain_at: Instant },
    /// Every worker was told to stop; the launcher ends with `outcome` once none is left.
    Stopping { outcome: Outcome },
    /// Nothing left to do; the event loop returns `Outcome`.
    Finished(Outcome),
}

/// How the launcher ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A stop was requested and every worker has exited.
    Stopped,
    /// Generation 1 never got ready; the reason names the worker.
    StartFailed(String),
}
