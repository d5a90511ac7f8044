//! Processes the workers left behind. The launcher is a child subreaper (PR_SET_CHILD_SUBREAPER), so the
//! orphans of a worker's tree — a server that forked into the background (nginx without `daemon off;`, a
//! classic double-forking daemon), a wrapper script's child that outlived it — become the launcher's
//! children instead of init's, and stay visible and reapable. "Left behind" is read from /proc: every
//! child of the launcher that is not a live worker, with all its descendants. Invariant: this file only
//! reads; supervisor.rs kills.

use std::collections::HashMap;

use nix::unistd::Pid;

/// Makes this process the subreaper of everything it starts (Linux 3.4+).
pub fn become_subreaper() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("unable to become a child subreaper (PR_SET_CHILD_SUBREAPER): {e}"))
}

/// Every process below this one that is neither one of `workers` nor inside one of their trees, plus the
/// children of `exited` (a worker just reaped): right after its reaping /proc may still show them under it
/// for a moment before they are shown as ours. Parents before their children.
pub fn left_behind(workers: &[Pid], exited: Option<Pid>) -> Vec<Pid> {
    let children = children_by_parent();
    let below = |pid: Pid| children.get(&pid).into_iter().flatten().copied();
    let mut found = Vec::new();
    let mut stack: Vec<(Pid, bool)> = below(Pid::this())
        .chain(exited.into_iter().flat_map(below))
        .filter(|(pid, _)| !workers.contains(pid))
        .collect();
    while let Some((pid, running)) = stack.pop() {
        if running {
            found.push(pid);
        }
        stack.extend(below(pid));
    }
    found
}

/// parent -> (child, whether it is still running) of every process in /proc. Zombies stay in the map so
/// that the walk passes through them (a dying parent's children may still be shown under it), but they
/// are not reported: they hold nothing, and the loop reaps them.
fn children_by_parent() -> HashMap<Pid, Vec<(Pid, bool)>> {
    let mut children: HashMap<Pid, Vec<(Pid, bool)>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
        let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after_name.split_whitespace();
        let running = !matches!(fields.next(), Some("Z" | "X") | None);
        let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        children
            .entry(Pid::from_raw(ppid))
            .or_default()
            .push((Pid::from_raw(pid), running));
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_is_not_a_worker_is_left_behind_and_a_worker_is_not() {
        let mut worker = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let worker_pid = Pid::from_raw(worker.id() as i32);
        let other_pid = Pid::from_raw(other.id() as i32);
        let found = left_behind(&[worker_pid], None);
        let _ = worker.kill();
        let _ = other.kill();
        let _ = worker.wait();
        let _ = other.wait();
        assert!(found.contains(&other_pid), "{found:?}");
        assert!(!found.contains(&worker_pid), "{found:?}");
    }
}
