//! Copies of the serving sockets of a worker whose binds the launcher did not see (`--no-inject`:
//! the server sets SO_REUSEPORT itself): its fds that are TCP sockets in LISTEN state or bound,
//! unconnected UDP sockets, found in /proc and copied with pidfd_getfd. Invariant: only sockets of the
//! worker itself, never of another process, and only those in a reuseport group (SO_REUSEPORT). The
//! same search tells `--ready listen` when such a worker serves.

use std::collections::HashSet;
use std::os::fd::{OwnedFd, RawFd};

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
        Ok(serving) => {
            let fds = socket_fds::socket_fds(worker);
            copies(
                worker,
                fds.into_iter().filter(|(_, inode)| serving.contains(inode)),
            )
        }
        Err(e) => {
            debug!("sock_diag: {e}; worker pid {worker}'s listeners cannot be found");
            Vec::new()
        }
    }
}

/// Which of `workers` serve (for `--ready listen` without injection): they hold a TCP listener or a
/// bound UDP socket with SO_REUSEPORT, on `port` when given — and a worker whose only such sockets
/// are UDP ones does not serve while it holds a TCP socket bound to one of their ports that does not
/// listen yet (a DNS server binds UDP and TCP on 53: its TCP port must not refuse once the old
/// generation is stopped; with injection, inject.rs waits the same way). One dump of the kernel's
/// sockets for all workers, one walk of each worker's fds.
pub fn serving(workers: &[Pid], port: Option<u16>) -> Vec<Pid> {
    let Ok(serving) = serving_inodes() else {
        return Vec::new();
    };
    workers
        .iter()
        .copied()
        .filter(|&worker| serves(worker, &serving, port))
        .collect()
}

fn serves(worker: Pid, serving: &HashSet<u64>, port: Option<u16>) -> bool {
    let (in_group, others): (Vec<_>, Vec<_>) = socket_fds::socket_fds(worker)
        .into_iter()
        .partition(|(_, inode)| serving.contains(inode));
    let on_port: Vec<(u16, bool)> = copies(worker, in_group)
        .iter()
        .filter_map(|copy| Some((local_port(copy)?, is_listener(copy))))
        .filter(|&(p, _)| port.is_none_or(|port| p == port))
        .collect();
    if on_port.iter().any(|&(_, listens)| listens) {
        return true;
    }
    let udp_ports: Vec<u16> = on_port.iter().map(|&(p, _)| p).collect();
    !udp_ports.is_empty() && !binds_tcp_not_yet_listening(worker, others, &udp_ports)
}

/// Whether one of `worker`'s sockets `fds` (those outside the dumps: a starting worker has few) is a
/// TCP socket bound to one of `ports` that neither listens nor is connected.
fn binds_tcp_not_yet_listening(worker: Pid, fds: Vec<(RawFd, u64)>, ports: &[u16]) -> bool {
    fds.into_iter()
        .filter_map(|(fd, _)| pidfd::copy_fd(worker.as_raw(), fd).ok())
        .any(|copy| {
            let socket = SockRef::from(&copy);
            socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
                && !is_listener(&copy)
                && socket.peer_addr().is_err()
                && local_port(&copy).is_some_and(|p| ports.contains(&p))
        })
}

fn local_port(socket: &OwnedFd) -> Option<u16> {
    let address = SockRef::from(socket).local_addr().ok()?.as_socket()?;
    Some(address.port()).filter(|&p| p != 0)
}

fn is_listener(socket: &OwnedFd) -> bool {
    getsockopt(socket, sockopt::AcceptConn).unwrap_or(false)
}

/// The inodes of this network namespace's TCP listeners and bound, unconnected UDP sockets.
fn serving_inodes() -> std::io::Result<HashSet<u64>> {
    let tcp = sock_diag::tcp_sockets(LISTEN)?;
    let udp = sock_diag::udp_sockets(UNCONNECTED)?;
    Ok(tcp.into_iter().chain(udp).map(|s| s.inode).collect())
}

/// Copies of `worker`'s sockets `fds` that have SO_REUSEPORT.
fn copies(worker: Pid, fds: impl IntoIterator<Item = (RawFd, u64)>) -> Vec<OwnedFd> {
    fds.into_iter()
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
