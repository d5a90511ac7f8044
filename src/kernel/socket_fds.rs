//! Which sockets a process holds: the `socket:[inode]` entries of /proc/<pid>/fd. Read-only; joined
//! with the kernel's socket table (sock_diag.rs) by inode.

use std::collections::HashSet;
use std::os::fd::RawFd;

use nix::unistd::Pid;

/// (fd number, socket inode) of every socket among `pid`'s file descriptors.
pub fn socket_fds(pid: Pid) -> Vec<(RawFd, u64)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let entry = e.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, inode_of(target.to_str()?)?))
        })
        .collect()
}

/// The inodes of `pid`'s sockets.
pub fn socket_inodes(pid: Pid) -> HashSet<u64> {
    socket_fds(pid)
        .into_iter()
        .map(|(_, inode)| inode)
        .collect()
}

/// "socket:[4242]" -> 4242.
fn inode_of(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn this_process_sockets_are_found_by_fd() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(socket_fds(Pid::this())
            .iter()
            .any(|(fd, _)| *fd == listener.as_raw_fd()));
        assert_eq!(inode_of("socket:[4242]"), Some(4242));
        assert_eq!(inode_of("pipe:[4242]"), None);
    }
}
