//! Reading processes from /proc: liveness (a zombie counts as gone), parents, children, environment,
//! CPU times. Every function tolerates a process vanishing between two reads.

use std::time::Duration;

/// Fields of /proc/<pid>/stat after the command name, parsed; None when the process is gone.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; everything after the last ')' is fields.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z" && state != "X"))
}

/// The parent pid (stat field 4).
pub fn parent(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The process start time in clock ticks since boot (stat field 22): with the pid it names one process.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// utime + stime in clock ticks (stat fields 14 and 15).
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Direct children of `pid` (its main thread's children file).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The environment of `pid` as (name, value) pairs; empty when gone, a zombie, or unreadable.
pub fn environ(pid: i32) -> Vec<(String, String)> {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// One variable of `pid`'s environment.
pub fn env_var(pid: i32, name: &str) -> Option<String> {
    environ(pid)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// Every live process whose environment has `name=value` (zombies have no readable environment).
pub fn processes_with_env(name: &str, value: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| environ(pid).iter().any(|(n, v)| n == name && v == value))
        .filter(|&pid| alive(pid))
        .collect();
    found.sort_unstable();
    found
}

/// A process named by pid and start time, so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub pid: i32,
    pub start_time: u64,
}

/// Identities of the live processes among `pids` (take it before the processes are asked to exit).
pub fn snapshot(pids: &[i32]) -> Vec<Identity> {
    pids.iter()
        .filter_map(|&pid| {
            Some(Identity {
                pid,
                start_time: start_time(pid)?,
            })
        })
        .collect()
}

/// True while the process `who` still runs (same pid, same start time, not a zombie).
pub fn still_running(who: Identity) -> bool {
    alive(who.pid) && start_time(who.pid) == Some(who.start_time)
}

/// Waits until none of `processes` runs; returns the pids still running at the deadline.
pub fn wait_gone(processes: &[Identity], deadline: Duration) -> Vec<i32> {
    super::wait_until(deadline, || !processes.iter().any(|&p| still_running(p)));
    processes
        .iter()
        .filter(|&&p| still_running(p))
        .map(|p| p.pid)
        .collect()
}

/// TCP state LISTEN in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// One TCP socket in LISTEN state, as a row of /proc/<pid>/net/tcp{,6} shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpListen {
    /// Owner of the socket (column 8).
    pub uid: u32,
    /// Socket inode (column 10), the `socket:[N]` a process's fd links to.
    pub inode: u64,
}

/// The TCP sockets in LISTEN state on `port`, in the network namespace of process `in_netns`.
pub fn tcp_listeners(in_netns: i32, port: u16) -> Vec<TcpListen> {
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
                    (local_port == port && *f.get(3)? == TCP_LISTEN).then(|| {
                        Some(TcpListen {
                            uid: f.get(7)?.parse().ok()?,
                            inode: f.get(9)?.parse().ok()?,
                        })
                    })?
                })
                .collect::<Vec<TcpListen>>()
        })
        .collect()
}

/// Inodes of the TCP sockets in LISTEN state on `port`, in the network namespace of process `in_netns`.
pub fn listening_inodes(in_netns: i32, port: u16) -> Vec<u64> {
    tcp_listeners(in_netns, port)
        .iter()
        .map(|l| l.inode)
        .collect()
}
