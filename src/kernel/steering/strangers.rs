//! Finds sockets on the launcher's steered ports that are not its workers' ("strangers"): TCP
//! listeners on its TCP ports and bound UDP sockets on its UDP ports (sock_diag dumps), then the
//! processes whose fd tables hold them. Read-only; cheap when there is none (one dump per protocol),
//! a walk of /proc only when there is one.

use std::collections::HashSet;

use nix::unistd::Pid;

use crate::kernel::process_tree;
use crate::kernel::sock_diag::{self, LISTEN, UNCONNECTED};
use crate::kernel::socket_fds;

/// Set in every worker's environment by a launcher (see supervisor.rs).
const ENV_WORKER_PREFIX: &[u8] = b"REUSEPORT_LAUNCH_WORKER=";

/// A process listening on one of the ports, or with a UDP socket on one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranger {
    pub pid: i32,
    pub command: String,
    pub port: u16,
    /// Its socket is a UDP socket (on a steered UDP port) rather than a TCP listener.
    pub datagram: bool,
    /// The pid of the other launcher, when it is a worker of one.
    pub other_launcher: Option<i32>,
}

/// Listeners on `tcp_ports` and bound UDP sockets on `udp_ports` held by processes that are neither
/// ours (`is_ours` holds for the process or an ancestor) nor the launcher itself. `known` are the
/// inodes of sockets the launcher holds copies of: when every socket on the ports is one of them,
/// /proc is not walked at all.
pub fn find(
    tcp_ports: &[u16],
    udp_ports: &[u16],
    known: &HashSet<u64>,
    is_ours: impl Fn(Pid) -> bool,
) -> Vec<Stranger> {
    let on = |sockets: Vec<sock_diag::Socket>, ports: &[u16], datagram: bool| {
        sockets
            .into_iter()
            .filter(|s| ports.contains(&s.local_port))
            .map(|s| (s.local_port, s.inode, datagram))
            .collect::<Vec<_>>()
    };
    let mut listening = Vec::new();
    if !tcp_ports.is_empty() {
        let tcp = sock_diag::tcp_sockets(LISTEN).unwrap_or_default();
        listening.extend(on(tcp, tcp_ports, false));
    }
    if !udp_ports.is_empty() {
        let udp = sock_diag::udp_sockets(UNCONNECTED).unwrap_or_default();
        listening.extend(on(udp, udp_ports, true));
    }
    if listening.iter().all(|(_, inode, _)| known.contains(inode)) {
        return Vec::new();
    }
    let me = Pid::this();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for pid in process_tree::all_pids() {
        if pid == me || !seen.insert(pid) {
            continue;
        }
        let inodes = socket_fds::socket_inodes(pid);
        let Some(&(port, _, datagram)) = listening
            .iter()
            .find(|(_, inode, _)| !known.contains(inode) && inodes.contains(inode))
        else {
            continue;
        };
        if process_tree::find_ancestor(pid, &is_ours).is_some() {
            continue;
        }
        found.push(Stranger {
            pid: pid.as_raw(),
            command: process_tree::command_line(pid),
            port,
            datagram,
            other_launcher: other_launcher(pid),
        });
    }
    found
}

/// A worker of another launcher has REUSEPORT_LAUNCH_WORKER in its environment; its launcher is the
/// nearest ancestor without it.
fn other_launcher(pid: Pid) -> Option<i32> {
    let has_worker_env = |p: Pid| {
        std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|var| var.starts_with(ENV_WORKER_PREFIX))
        })
    };
    if !has_worker_env(pid) {
        return None;
    }
    let mut current = pid;
    while let Some(parent) = process_tree::parent_of(current) {
        if parent.as_raw() <= 1 {
            return None;
        }
        if !has_worker_env(parent) {
            return Some(parent.as_raw());
        }
        current = parent;
    }
    None
}
