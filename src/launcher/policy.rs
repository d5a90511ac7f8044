//! The parts of the validated configuration the decisions depend on. Built once at start by the layer
//! above; the decisions never see command-line flags.

use std::time::Duration;

use nix::sys::signal::Signal;

/// Timeouts and the stop signal: the parts of the configuration the decisions depend on.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub workers: usize,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    pub stop_signal: Signal,
    /// A worker that sent WATCHDOG=1 once and then stays silent this long is replaced.
    pub watchdog: Option<Duration>,
    /// What counts as ready.
    pub ready: ReadyMode,
    /// How workers are drained.
    pub drain: DrainMode,
    /// The launcher chooses which listeners receive new connections (`--steer`): only the ready
    /// workers of the active generation do.
    pub steer: bool,
    /// With steering: how long a steered-out worker keeps its listener open after its accept queue is
    /// empty, for handshakes already under way (`--handover-grace`).
    pub handover_grace: Duration,
    /// With steering: a steered-out worker is drained only once none of its UDP flows was active for
    /// this long (`--udp-flow-idle`; zero: off).
    pub udp_flow_idle: Duration,
    /// On stop, how long every worker keeps serving while the health check already says 503, so a
    /// load balancer stops sending before the drain begins (`--lb-drain`; zero: drain at once).
    pub lb_drain: Duration,
    /// `--probation`: how long a reload's old generation is kept alive (receiving nothing) after the
    /// new one is ready, to roll back to; zero: off.
    pub probation: Duration,
    /// `--health`: ready workers are checked every `interval`; None: off.
    pub health: Option<HealthPolicy>,
    /// `--max-surge`: how many slots a reload replaces at a time; None: every slot at once (the
    /// whole generation). A reload with `--probation` always replaces every slot at once.
    pub max_surge: Option<usize>,
    /// `--max-memory`: a worker whose memory exceeds the limit is replaced in its slot; None: off.
    pub memory: Option<MemoryPolicy>,
}

/// `--max-memory SIZE` with `--memory-check-interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPolicy {
    /// A worker using more than this many bytes (PSS of its process tree) is replaced.
    pub limit_bytes: u64,
    /// Time between two readings of every serving worker's memory.
    pub interval: Duration,
}

/// `--health http:PATH|ipc` with `--health-interval`, `--health-timeout`, `--health-failures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// From a worker's ready (or its last check's end) to its next check.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Failed checks in a row that get a worker replaced.
    pub failures: u32,
}

/// How a worker is drained before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// Send the stop signal; the server drains itself.
    Signal,
    /// First take its listening sockets out of the port's group, wait until its connections are gone
    /// (at most --stop-timeout), then send the stop signal.
    Listener,
    /// `Listener` for servers that do not speak sd_notify (the same test as ReadyMode::Auto), `Signal`
    /// for those that do.
    Auto,
}

/// What makes a worker ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// READY=1 on the notify socket, nothing else.
    Notify,
    /// A TCP socket of the worker in LISTEN state.
    Listen,
    /// READY=1 when the server speaks sd_notify (any worker ever sent READY=1, or this worker sent any
    /// notify message); listening otherwise.
    Auto,
    /// An HTTP probe that reaches that very worker answers 2xx (`--ready http:PATH`; needs
    /// steering, which routes the probe). Probed once the worker listens, again every
    /// PROBE_RETRY_INTERVAL until it passes or --ready-timeout.
    Http,
}
