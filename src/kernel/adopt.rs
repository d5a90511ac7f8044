//! Copies of the serving sockets of a worker whose binds the launcher did not see (`--no-inject`:
//! the server sets SO_REUSEPORT itself): its fds that are TCP sockets in LISTEN state or bound,
//! unconnected UDP sockets, found in /proc and copied with pidfd_getfd. Invariant: only sockets of the
//! worker itself, never of another process, and only those in a reuseport group (SO_REUSEPORT). The
//! same search tells `--ready listen` when such a worker serves (`Settling`).

use std::collections::{HashMap, HashSet};
use std::os::fd::{OwnedFd, RawFd};
use std::time::Instant;

use log::debug;
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Pid;

use super::pidfd;
use super::sock_diag::{self, LISTEN, UNCONNECTED};
use super::socket_fds;
use super::socket_state::{self, local_port, waits_to_listen, SETTLE};

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

/// `--ready listen` without injection: the starting workers that serve (see `serving`), counted ready
/// once their serving sockets have stayed the same for `SETTLE` (a server listens on its ports one
/// after the other, and the look must not fall between two of them).
#[derive(Default)]
pub struct Settling {
    /// Serving workers not counted ready yet: their serving sockets' inodes, and since when.
    since: HashMap<Pid, (Vec<u64>, Instant)>,
}

impl Settling {
    /// Which of `starting` are ready at `now`; the flag says whether one of them must be looked at
    /// again.
    pub fn ready(&mut self, starting: &[Pid], port: Option<u16>, now: Instant) -> (Vec<Pid>, bool) {
        self.since.retain(|pid, _| starting.contains(pid));
        if starting.is_empty() {
            return (Vec::new(), false);
        }
        let serving = serving(starting, port);
        let mut again = serving.len() < starting.len();
        let mut ready = Vec::new();
        for (worker, sockets) in serving {
            let since = match self.since.get(&worker) {
                Some((seen, since)) if *seen == sockets => *since,
                _ => {
                    self.since.insert(worker, (sockets, now));
                    now
                }
            };
            if now.duration_since(since) >= SETTLE {
                self.since.remove(&worker);
                ready.push(worker);
            } else {
                again = true;
            }
        }
        (ready, again)
    }
}

/// Which of `workers` serve, each with the inodes of its serving sockets: they hold a TCP listener or
/// a bound UDP socket with SO_REUSEPORT, on `port` when given, and no TCP socket bound to a port (that
/// port, when given) that waits to listen — a server with two ports, with IPv4 and IPv6 sockets, or a
/// DNS server with UDP and TCP on 53 must not refuse on one of them once the old generation is
/// stopped; with injection, inject.rs waits the same way. One dump of the kernel's sockets for all
/// workers, one walk of each worker's fds.
fn serving(workers: &[Pid], port: Option<u16>) -> Vec<(Pid, Vec<u64>)> {
    let Ok(serving) = serving_inodes() else {
        return Vec::new();
    };
    workers
        .iter()
        .filter_map(|&worker| Some((worker, serving_sockets(worker, &serving, port)?)))
        .collect()
}

/// The inodes of `worker`'s serving sockets when it serves (see `serving`), sorted.
fn serving_sockets(worker: Pid, serving: &HashSet<u64>, port: Option<u16>) -> Option<Vec<u64>> {
    let on_port =
        |copy: &OwnedFd| local_port(copy).is_some_and(|p| port.is_none_or(|port| p == port));
    let (in_group, others): (Vec<_>, Vec<_>) = socket_fds::socket_fds(worker)
        .into_iter()
        .partition(|(_, inode)| serving.contains(inode));
    let mut inodes: Vec<u64> = copies(worker, in_group)
        .iter()
        .filter(|copy| on_port(copy))
        .filter_map(socket_state::inode)
        .collect();
    let waiting = others
        .into_iter()
        .filter_map(|(fd, _)| pidfd::copy_fd(worker.as_raw(), fd).ok())
        .any(|copy| waits_to_listen(&copy) && on_port(&copy));
    if inodes.is_empty() || waiting {
        return None;
    }
    inodes.sort_unstable();
    Some(inodes)
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
