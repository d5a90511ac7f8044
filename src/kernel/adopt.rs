//! Copies of the listening sockets of a worker whose binds the launcher did not see (`--no-inject`:
//! the server sets SO_REUSEPORT itself): its fds that are TCP sockets in LISTEN state, found in /proc
//! and copied with pidfd_getfd. Invariant: only sockets of the worker itself, never of another process.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use log::debug;
use nix::unistd::Pid;

use super::pidfd;
use super::tcp_table::{self, STATE_LISTEN};

/// Copies of every listening TCP socket among `worker`'s file descriptors.
pub fn listeners_of(worker: Pid) -> Vec<OwnedFd> {
    let listening: HashSet<u64> = tcp_table::rows(Some(worker))
        .into_iter()
        .filter(|r| r.state == STATE_LISTEN)
        .map(|r| r.inode)
        .collect();
    tcp_table::socket_fds(worker)
        .into_iter()
        .filter(|(_, inode)| listening.contains(inode))
        .filter_map(|(fd, _)| match pidfd::copy_fd(worker.as_raw(), fd) {
            Ok(copy) => Some(copy),
            Err(e) => {
                debug!("worker pid {worker}: unable to copy its listener (fd {fd}): {e}");
                None
            }
        })
        .collect()
}
