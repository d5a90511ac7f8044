//! Helpers for tests that run unchanged third-party servers (python3 http.server, node, a static C binary)
//! under the launcher: the real python interpreter and a census of the sockets listening on a port with
//! the worker that holds each (read from /proc, no connection made).

use std::collections::HashSet;
use std::process::Command;

use super::procfs::listening_inodes;
use super::Launcher;

/// The python3 interpreter itself (`sys.executable`), not a version-manager shim that execs it: the
/// worker's pid is then the server's pid from the start.
pub fn python3() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| panic!("unable to run python3 (these tests need it on PATH): {e}"));
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && !path.is_empty(),
        "python3 did not print sys.executable: {output:?}"
    );
    path
}

/// Inodes of the sockets among `pid`'s file descriptors (empty when it is gone).
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// One listening socket on the port and the worker whose file descriptors hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub inode: u64,
    pub pid: i32,
    pub generation: u32,
}

/// The listeners on `port` held by the launcher's workers right now (the launcher's own copies of
/// them are not counted twice: a socket is one inode).
pub fn worker_listeners(launcher: &Launcher, port: u16) -> Vec<Listener> {
    let inodes = listening_inodes(launcher.pid(), port);
    let mut found = Vec::new();
    for (pid, generation) in launcher.workers() {
        let held = socket_inodes(pid);
        for &inode in &inodes {
            if held.contains(&inode) {
                found.push(Listener {
                    inode,
                    pid,
                    generation,
                });
            }
        }
    }
    found
}
