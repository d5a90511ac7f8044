//! The events the decisions react to that come from outside the launcher's own requests: how a worker
//! process ended, and what a worker said on the notify socket. Plain data, filled in by the kernel layer.

use std::fmt;

use nix::sys::signal::Signal;

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// exit(code)
    Exited(i32),
    /// Killed by a signal.
    Signaled(Signal),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "status {code}"),
            ExitReason::Signaled(signal) => {
                write!(f, "signal {} ({})", *signal as i32, signal.as_str())
            }
        }
    }
}

/// What a worker said in one sd_notify datagram. Unknown keys are ignored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    /// READY=1: the worker is serving.
    pub ready: bool,
    /// STOPPING=1: the worker is shutting down.
    pub stopping: bool,
    /// WATCHDOG=1: the worker is alive.
    pub watchdog: bool,
    /// STATUS=...: a free-form one-line status.
    pub status: Option<String>,
    /// ERRNO=...: the worker's failure reason as an errno number.
    pub errno: Option<i32>,
}

/// What a probe of a worker is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `--ready http:PATH`: is the starting worker ready?
    Ready,
    /// `--health http:PATH|ipc`: is the ready worker still healthy?
    Health,
}

/// How one probe of one worker (`--ready http:PATH`, `--health`) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The worker answered with this status code; `excerpt` is the start of the body, for the log.
    Answered { status: u16, excerpt: String },
    /// No status line came: the connection failed, was refused or closed, or the answer was not HTTP.
    Failed(String),
    /// No status line (or IPC reply) within the probe's timeout.
    TimedOut(std::time::Duration),
    /// `--health ipc`: the worker's reply to `healthcheck`.
    Replied(String),
}

impl ProbeOutcome {
    /// A 2xx answer.
    pub fn passed(&self) -> bool {
        match self {
            ProbeOutcome::Answered { status, .. } => (200..300).contains(status),
            ProbeOutcome::Replied(reply) => reply == "healthy",
            _ => false,
        }
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Answered { status, .. } => write!(f, "answered {status}"),
            ProbeOutcome::Failed(why) => f.write_str(why),
            ProbeOutcome::Replied(reply) => write!(f, "replied {reply:?}"),
            ProbeOutcome::TimedOut(after) => {
                write!(f, "no answer within {:.1}s", after.as_secs_f64())
            }
        }
    }
}
