//! Parent links between processes, read from /proc. Used to accept a notify message from a descendant
//! of a worker (a wrapper script's child, say) and nobody else.

use nix::unistd::Pid;

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
