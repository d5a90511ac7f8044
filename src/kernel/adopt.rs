//! Copies of the serving sockets of a worker whose binds the launcher did not see (`--no-inject`:
//! the server sets SO_REUSEPORT itself): its fds that are TCP sockets in LISTEN state or bound,
//! unconnected UDP sockets, found in /proc and copied with pidfd_getfd. Invariant: only sockets of the
//! worker itself, never of another process, and only those in a reuseport group (SO_REUSEPORT). The
//! same search tells `--ready listen` when such a worker serves.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use socket2::SockRef;

use log::debug;
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Pid;

use super::pidfd;
use super::sock_diag::{self, LISTEN, UNCONNECTED};
use super::socket_fds;

/// Copies of every listening TCP socket and every bound UDP socket with SO_REUSEPORT among `worker`'s
/// file descriptors (a socket without it, e.g. an admin port or a DNS server's upstream socket, has
/// no group to steer).
pub fn listeners_of(worker: Pid) -> Vec<OwnedFd> {
    let serving: HashSet<u64> = match (
        sock_diag::tcp_sockets(LISTEN),
        sock_diag::udp_sockets(UNCONNECTED),
    ) {
        (Ok(tcp), Ok(udp)) => tcp.into_iter().chain(udp).map(|s| s.inode).collect(),
        (Err(e), _) | (_, Err(e)) => {
            debug!("sock_diag: {e}; worker pid {worker}'s listeners cannot be found");
            return Vec::new();
        }
    };
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

/// Whether `worker` serves (for `--ready listen` without injection): it holds a TCP listener or a bound
/// UDP socket with SO_REUSEPORT, on `port` when given.
pub fn serves(worker: Pid, port: Option<u16>) -> bool {
    listeners_of(worker).iter().any(|copy| {
        port.is_none_or(|port| {
            SockRef::from(copy)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a.port() == port)
        })
    })
}
