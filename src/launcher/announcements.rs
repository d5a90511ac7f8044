//! What the decisions tell the outside world: the service manager (systemd) and control clients hear
//! these; the decisions never talk to either directly.

use std::time::Duration;

/// Something the service manager (systemd) and control clients should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// Generation 1 is serving.
    Ready,
    /// Reload number `seq` (see `request_reload`) ended, either way.
    ReloadEnded { seq: u64, result: ReloadResult },
    /// A reload started.
    Reloading,
    /// The launcher is stopping and expects to be done within `within` (a service manager's stop
    /// timeout must cover it): the load-balancer wait, if any, plus the longest drain.
    Stopping { within: Duration },
    /// A crashed (or hung) worker of the active generation was started again in its slot.
    Restarted { generation: u32, slot: usize },
    /// A replacement of a serving worker started in its slot, beside it (`--health`, `--max-memory`).
    Replacing {
        generation: u32,
        slot: usize,
        reason: super::ReplaceReason,
    },
    /// A new one-line status.
    Status(String),
}

/// The result of the latest reload, for status lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new generation serves; it took this long from the request to all workers ready.
    Succeeded { generation: u32, took: Duration },
    /// Rolled back; the reason names the worker.
    Failed { generation: u32, reason: String },
}
