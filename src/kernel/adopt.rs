//! Copies of the serving sockets of a worker whose binds the launcher did not see (`--no-inject`:
//! the server sets SO_REUSEPORT itself): its fds that are TCP sockets in LISTEN state or bound,
//! unconnected UDP sockets, found in /proc and copied with pidfd_getfd. Invariant: only sockets of the
//! worker itself, never of another process, and only those in a reuseport group (SO_REUSEPORT). The
//! same search tells `--ready listen` when such a worker serves.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use log::debug;
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Pid;
use socket2::SockRef;

use super::pidfd;
use super::sock_diag::{self, LISTEN, UNCONNECTED};
use super::socket_fds;

/// Copies of every listening TCP socket and every bound UDP socket with SO_REUSEPORT among `worker`'s
/// file descriptors (a socket without it, e.g. an admin port or a DNS server's upstream socket, has
/// no group to steer).
pub fn listeners_of(worker: Pid) -> Vec<OwnedFd> {
    match serving_inodes() {
        Ok(serving) => copies(worker, &serving),
        Err(e) => {
            debug!("sock_diag: {e}; worker pid {worker}'s listeners cannot be found");
            Vec::new()
        }
    }
}

/// Which of `workers` serve (for `--ready listen` without injection): they hold a TCP listener or a
/// bound UDP socket with SO_REUSEPORT, on `port` when given. One dump of the kernel's sockets for all.
pub fn serving(workers: &[Pid], port: Option<u16>) -> Vec<Pid> {
    let Ok(serving) = serving_inodes() else {
        return Vec::new();
    };
    let on_port = |copy: &OwnedFd| {
        port.is_none_or(|port| {
            SockRef::from(copy)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a.port() == port)
        })
    };
    workers
        .iter()
        .copied()
        .filter(|&worker| copies(worker, &serving).iter().any(on_port))
        .collect()
}

/// The inodes of this network namespace's TCP listeners and bound, unconnected UDP sockets.
fn serving_inodes() -> std::io::Result<HashSet<u64>> {
    let tcp = sock_diag::tcp_sockets(LISTEN)?;
    let udp = sock_diag::udp_sockets(UNCONNECTED)?;
    Ok(tcp.into_iter().chain(udp).map(|s| s.inode).collect())
}

/// Copies of `worker`'s sockets among `serving` that have SO_REUSEPORT.
fn copies(worker: Pid, serving: &HashSet<u64>) -> Vec<OwnedFd> {
    socket_fds::socket_fds(worker)
        .into_iter()
        .filter(|(_, inode)| serving.contains(inode))
        .filter_map(|(fd, _)| match pidfd::copy_fd(worker.as_raw(), fd) {
            Ok(copy) => Some(copy),
            Err(e) => {
                debug!("worker pid {worker}: unable to copy its socket (fd {fd}): {e}");
                None
            }
        })
        .filter(|copy| getsockopt(copy, sockopt::ReusePort).unwrap_or(false))
        .collect()
}
