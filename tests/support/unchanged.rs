//! Helpers for tests that run unchanged third-party servers (python3 http.server, node, a static C binary)
//! under the launcher: the real python interpreter, one reload waited for to the end, and a census of the
//! sockets listening on a port with the worker that holds each (read from /proc, no connection made).

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{procfs, wait_until, Launcher};

/// TCP state LISTEN in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";
/// How long after the old pids are gone the launcher may take to log `reload to generation G done`
/// (it reaps them first; on a loaded 2-core machine its loop can lag).
const LOG_LINE_DEADLINE: Duration = Duration::from_secs(5);

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

/// Sends SIGHUP and waits until the launcher's workers are exactly `workers` of `generation`, every
/// process of generation `generation - 1` is gone and the log says the reload is done. `on_poll` runs at every check (to sample state during
/// the reload). Panics, naming what is missing, after `deadline`.
pub fn reload_and_wait(
    launcher: &Launcher,
    workers: usize,
    generation: u32,
    deadline: Duration,
    mut on_poll: impl FnMut(),
) {
    let old = procfs::snapshot(&launcher.workers_of(generation - 1));
    assert_eq!(
        old.len(),
        workers,
        "before reload {generation}, generation {} has {} workers, not {workers}: {:?}",
        generation - 1,
        old.len(),
        launcher.workers()
    );
    launcher.signal(Signal::SIGHUP);
    let done = wait_until(deadline, || {
        on_poll();
        let current = launcher.workers();
        current.len() == workers
            && current.iter().all(|&(_, g)| g == generation)
            && !old.iter().any(|&p| procfs::still_running(p))
    });
    assert!(
        done,
        "reload to generation {generation} did not finish within {deadline:?}: workers now {:?}, old still \
         running {:?}",
        launcher.workers(),
        old.iter()
            .filter(|&&p| procfs::still_running(p))
            .map(|p| p.pid)
            .collect::<Vec<_>>()
    );
    // The launcher reaps the old processes, then says so: the line follows their exit closely.
    let line = format!("reload to generation {generation} done");
    assert!(
        launcher.wait_for_log(&line, LOG_LINE_DEADLINE),
        "the old pids are gone but the log never says `{line}`"
    );
}

/// Inodes of the TCP sockets in LISTEN state on `port`, in the network namespace of process `in_netns`.
pub fn listening_inodes(in_netns: i32, port: u16) -> Vec<u64> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{in_netns}/net/{t}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|row| {
                    let f: Vec<&str> = row.split_whitespace().collect();
                    let local_port = f
                        .get(1)?
                        .rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())?;
                    (local_port == port && *f.get(3)? == TCP_LISTEN)
                        .then(|| f.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
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
