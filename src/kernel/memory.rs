//! How much memory a worker uses, for `--max-memory`: the PSS (proportional set size) of the worker's
//! whole process tree, read from `/proc/PID/smaps_rollup` of the worker and of each of its
//! descendants (process_tree.rs). PSS counts a page shared by k processes
//! as 1/k in each, so forked workers that share their parent's copy-on-write pages and the shared
//! libraries are not charged k times, and the sum over every worker is the memory they really use; a
//! worker's leak is private memory and counts in full. Invariant: reading only, never a signal; a
//! process that vanishes while it is read counts 0.

use nix::unistd::Pid;

use super::process_tree::descendants;

/// The PSS of `worker` and every descendant of it, in bytes; None when the worker's own
/// `smaps_rollup` cannot be read (it has exited, or is not dumpable and the launcher is not root).
pub fn tree_pss_bytes(worker: Pid) -> Option<u64> {
    let mut total = pss_bytes(worker)?;
    for pid in descendants(worker) {
        total += pss_bytes(pid).unwrap_or(0);
    }
    Some(total)
}

/// The `Pss:` line of `/proc/PID/smaps_rollup`, in bytes.
fn pss_bytes(pid: Pid) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss_kb(&text).map(|kb| kb * 1024)
}

/// `Pss:  1234 kB` -> 1234.
fn parse_pss_kb(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|line| {
        let value = line.strip_prefix("Pss:")?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn reads_the_pss_line_and_only_it() {
        let text = "00400000-7fff [rollup]\nRss:  1684 kB\nPss:   423 kB\nPss_Dirty:  112 kB\n";
        assert_eq!(parse_pss_kb(text), Some(423));
        assert_eq!(parse_pss_kb("Rss: 10 kB\n"), None);
    }

    #[test]
    fn a_process_tree_counts_its_children() {
        // A shell that holds a child `sleep`: the tree's PSS is more than the shell's own.
        let mut shell = Command::new("sh")
            .args(["-c", "sleep 30 & echo started; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(shell.id() as i32);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let children = descendants(pid);
        let own = pss_bytes(pid);
        let tree = tree_pss_bytes(pid);
        for child in &children {
            let _ = nix::sys::signal::kill(*child, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = shell.kill();
        let _ = shell.wait();
        assert_eq!(children.len(), 1, "the shell's one child: {children:?}");
        let (own, tree) = (own.unwrap(), tree.unwrap());
        assert!(own > 0 && tree > own, "own {own}, tree {tree}");
        assert_eq!(tree_pss_bytes(pid), None, "a reaped process has no figure");
    }
}
