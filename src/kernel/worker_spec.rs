//! What the spawner needs to start a worker, built once from the validated configuration by the layer
//! above: PROGRAM and its arguments, the sockets it gets, whom it runs as. Invariant: plain data, resolved
//! before the first fork (the child only makes raw syscalls with it).

use std::ffi::OsString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

use super::listen::ListenAddress;

/// Everything about a worker that is the same for every worker of every generation.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// PROGRAM, resolved on PATH the way execvp would.
    pub program: PathBuf,
    /// Arguments passed to every worker.
    pub args: Vec<OsString>,
    /// Set SO_REUSEPORT on workers' binds (seccomp user notification, see inject.rs).
    pub inject: bool,
    /// Limit injection (and listen readiness) to this port.
    pub inject_port: Option<u16>,
    /// `--listen` addresses, bound anew for every worker; empty: the worker binds.
    pub listen: Vec<ListenAddress>,
    /// Whom workers run as; None: the launcher's own user.
    pub run_as: Option<RunAs>,
    /// Give workers a Node IPC channel (NODE_CHANNEL_FD).
    pub node_ipc: bool,
    /// Sent over the IPC channel instead of the stop signal.
    pub stop_message: Option<String>,
}

/// Whom workers run as: resolved once at start, so the child only makes raw set*id calls.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// None with --group alone: the uid stays the launcher's.
    pub uid: Option<Uid>,
    /// The only group (setgroups([gid]) and setgid).
    pub gid: Gid,
    /// For USER, LOGNAME and HOME in the worker's environment (as systemd's User= sets them).
    pub user: Option<User>,
    /// What --user/--group said, for messages.
    pub shown: String,
}
