//! Parent and child links between processes, and their command lines, read from /proc. Used to accept a
//! notify message from a descendant of a worker (a wrapper script's child, say) and nobody else, to
//! walk a worker's tree (its memory, the sockets it holds) and to name the process behind a socket.

use std::collections::HashSet;

use nix::unistd::Pid;

/// Processes of one tree that are walked at most: a pre-forking server has tens of children,
/// not thousands; past this the tree is a fork bomb, and what was found is enough (a partial memory sum
/// is already over any limit).
const MAX_TREE_PROCESSES: usize = 4096;

/// How many parent links are followed before giving up; deeper trees are not plausible for a worker.
const MAX_ANCESTRY_DEPTH: usize = 64;

/// The parent of `pid`, or None when the process is gone.
pub fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ppid: i32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(ppid))
}

/// Walks up from `pid` (itself included) and returns the first process for which `is_target` holds.
/// None when no ancestor matches, or when `pid` is gone so its ancestry cannot be known.
pub fn find_ancestor(pid: Pid, is_target: impl Fn(Pid) -> bool) -> Option<Pid> {
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY_DEPTH {
        if is_target(current) {
            return Some(current);
        }
        match parent_of(current) {
            Some(parent) if parent.as_raw() > 1 => current = parent,
            _ => return None,
        }
    }
    None
}

/// A process's command line with spaces between arguments, or its name when that is empty.
pub fn command_line(pid: Pid) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map_or_else(|_| "?".into(), |c| c.trim().to_string())
    } else {
        text
    }
}

/// Every descendant of `root` (not `root` itself), children before grandchildren.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut seen: HashSet<Pid> = HashSet::from([root]);
    let mut found = Vec::new();
    let mut next = 0;
    let mut parents = vec![root];
    while next < parents.len() && found.len() < MAX_TREE_PROCESSES {
        for child in children(parents[next]) {
            if seen.insert(child) {
                found.push(child);
                parents.push(child);
            }
        }
        next += 1;
    }
    found.truncate(MAX_TREE_PROCESSES);
    found
}

/// The children of `pid`, from each of its threads' `children` file (a child belongs to the thread
/// that forked it).
fn children(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every process id in /proc.
pub fn all_pids() -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_parent_through_proc() {
        let me = Pid::this();
        assert_eq!(parent_of(me), Some(Pid::parent()));
        assert_eq!(
            find_ancestor(me, |p| p == Pid::parent()),
            Some(Pid::parent())
        );
        assert_eq!(find_ancestor(me, |_| false), None);
    }
}
