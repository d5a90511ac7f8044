//! Counts a worker's open TCP connections on given local ports, read from /proc. It tells when a worker
//! whose listener was taken out of the port's group has finished the requests it had accepted.

use std::collections::HashSet;

use log::debug;
use nix::unistd::Pid;

use super::sock_diag::{self, Socket, CLOSE_WAIT, ESTABLISHED};
use super::socket_fds;

/// Connections of process `pid` (its own file descriptors) whose local port is one of `ports`:
/// ESTABLISHED and CLOSE_WAIT, the states that still carry a client's request or response.
pub fn count_open(pid: Pid, ports: &[u16]) -> usize {
    let inodes = socket_fds::socket_inodes(pid);
    if inodes.is_empty() {
        return 0;
    }
    match sock_diag::tcp_sockets(ESTABLISHED | CLOSE_WAIT) {
        Ok(sockets) => count_in(&sockets, &inodes, ports),
        Err(e) => {
            debug!("sock_diag: {e}; counting worker pid {pid}'s connections as none");
            0
        }
    }
}

/// Counts the sockets on one of `ports` owned by `inodes`.
fn count_in(sockets: &[Socket], inodes: &HashSet<u64>, ports: &[u16]) -> usize {
    sockets
        .iter()
        .filter(|s| ports.contains(&s.local_port) && inodes.contains(&s.inode))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(local_port: u16, inode: u64) -> Socket {
        Socket {
            local_port,
            state: 1,
            inode,
            receive_queue: 0,
        }
    }

    #[test]
    fn counts_only_connections_of_the_port_and_the_process() {
        let inodes: HashSet<u64> = [100, 101, 102].into_iter().collect();
        let sockets = [
            socket(8080, 100),
            socket(8080, 101),
            socket(53999, 102),
            socket(8080, 999),
        ];
        assert_eq!(count_in(&sockets, &inodes, &[8080]), 2);
        assert_eq!(count_in(&sockets, &inodes, &[9090]), 0);
    }

    #[test]
    fn reads_this_process_without_error() {
        assert_eq!(count_open(Pid::this(), &[1]), 0);
    }
}
