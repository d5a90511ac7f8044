//! Finds listeners on the launcher's ports that are not its workers' ("strangers"): the LISTEN rows
//! of /proc/net/tcp{,6} on those ports, then the processes whose fd tables hold them. Read-only; cheap
//! when there is none (one read of the tables), a walk of /proc only when there is one.

use std::collections::HashSet;

use nix::unistd::Pid;

use crate::kernel::process_tree;
use crate::kernel::sock_diag::{self, LISTEN};
use crate::kernel::socket_fds;

/// Set in every worker's environment by a launcher (see supervisor.rs).
const ENV_WORKER_PREFIX: &[u8] = b"REUSEPORT_LAUNCH_WORKER=";

/// A process listening on one of the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranger {
    pub pid: i32,
    pub command: String,
    pub port: u16,
    /// The pid of the other launcher, when it is a worker of one.
    pub other_launcher: Option<i32>,
}

/// Listeners on `ports` held by processes that are neither ours (`is_ours` holds for the process or
/// an ancestor) nor the launcher itself. `known` are the inodes of listeners the launcher holds copies
/// of: when every listener on the ports is one of them, /proc is not walked at all.
pub fn find(ports: &[u16], known: &HashSet<u64>, is_ours: impl Fn(Pid) -> bool) -> Vec<Stranger> {
    let listening: Vec<(u16, u64)> = sock_diag::tcp_sockets(LISTEN)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| ports.contains(&s.local_port))
        .map(|s| (s.local_port, s.inode))
        .collect();
    if listening.iter().all(|(_, inode)| known.contains(inode)) {
        return Vec::new();
    }
    let me = Pid::this();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for pid in all_pids() {
        if pid == me || !seen.insert(pid) {
            continue;
        }
        let inodes = socket_fds::socket_inodes(pid);
        let Some(&(port, _)) = listening
            .iter()
            .find(|(_, inode)| !known.contains(inode) && inodes.contains(inode))
        else {
            continue;
        };
        if process_tree::find_ancestor(pid, &is_ours).is_some() {
            continue;
        }
        found.push(Stranger {
            pid: pid.as_raw(),
            command: command_line(pid),
            port,
            other_launcher: other_launcher(pid),
        });
    }
    found
}

fn all_pids() -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .map(Pid::from_raw)
        .collect()
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

/// A process's command line with spaces between arguments.
fn command_line(pid: Pid) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if words.is_empty() {
        "?".into()
    } else {
        words.join(" ")
    }
}
