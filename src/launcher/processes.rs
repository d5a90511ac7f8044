//! The one way the decisions act on the world. The kernel layer implements it (kernel/supervisor.rs);
//! the unit tests implement it with a recording fake. Invariant: nothing else in launcher/ causes a side
//! effect.

use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Check;

/// What the launcher's decisions need from the operating system.
pub trait Processes {
    /// Starts PROGRAM as worker `slot` of `generation`.
    fn spawn(&mut self, generation: u32, slot: usize) -> io::Result<Pid>;
    /// Sends `signal` to the worker's process group.
    fn signal(&mut self, worker: Pid, signal: Signal);
    /// Asks a worker to drain and exit: `--stop-message` over its Node IPC channel when set, else `signal`.
    fn ask_to_stop(&mut self, worker: Pid, signal: Signal);
    /// Takes the worker's listening sockets out of the port's SO_REUSEPORT group; false when the
    /// launcher holds none of them.
    fn close_listeners(&mut self, worker: Pid) -> bool;
    /// Whether the worker still has open connections on the ports it listened on.
    fn has_connections(&mut self, worker: Pid) -> bool;
    /// Forgets the copies of the worker's sockets: it drains itself.
    fn release_listeners(&mut self, worker: Pid);
    /// The worker is ready: the sockets it bound until now are the ones it serves on (to steer and
    /// drain); the binds it makes from now on are left as they are.
    fn stop_tracking_binds(&mut self, worker: Pid);
    /// With steering: makes the listeners of exactly these workers receive the port's new connections;
    /// every other socket of the port's group gets none.
    fn steer(&mut self, receiving: &[Pid]);
    /// What waits for the worker in the kernel: connections in the accept queues of its TCP
    /// listeners, plus one for each of its UDP sockets with at least one datagram in its receive queue
    /// (the kernel tells whether a UDP queue is empty, not how many datagrams it holds); None when the
    /// launcher holds none of its sockets.
    fn queued(&mut self, worker: Pid) -> Option<u32>;
    /// With `--udp-flow-idle`: when a datagram of one of the worker's UDP flows last came; None when
    /// it has none (or flows are off).
    fn flow_last_active(&mut self, worker: Pid) -> Option<std::time::Instant>;
    /// With `--udp-flow-idle`: how many of the worker's UDP flows are live (seen within the idle
    /// time); None when flows are off or it has no UDP socket.
    fn live_flows(&mut self, worker: Pid) -> Option<u32>;
    /// Processes that are neither one of `workers` nor in one of their trees, and that the launcher
    /// adopted as subreaper (or is adopting from `exited`, the worker just reaped): what exited workers
    /// left behind (a server that forked into the background).
    fn left_behind(&mut self, exited: Pid, workers: &[Pid]) -> Vec<Pid>;
    /// Starts an HTTP probe (`--ready http:PATH`) over a connection routed to this very worker; its
    /// outcome comes back through `Launcher::on_probe` within `timeout`.
    fn probe(&mut self, worker: Pid, check: Check, timeout: Duration);
    /// `--max-memory`: the memory the worker uses, in bytes: the PSS of its whole process tree; None
    /// when it cannot be read (the worker is gone, or its memory maps are closed to the launcher).
    fn memory(&mut self, worker: Pid) -> Option<u64>;
    /// Kills each of `pids` with SIGKILL, by pid.
    fn kill_left_behind(&mut self, pids: &[Pid]);
}
