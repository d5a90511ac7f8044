//! Counts a worker's open TCP connections on given local ports, read from /proc. It tells when a worker
//! whose listener was taken out of the port's group has finished the requests it had accepted.

use std::collections::HashSet;

use nix::unistd::Pid;

use super::tcp_table::{self, Row, OPEN_STATES};

/// Connections of process `pid` (its own file descriptors) whose local port is one of `ports`.
pub fn count_open(pid: Pid, ports: &[u16]) -> usize {
    let inodes = tcp_table::socket_inodes(pid);
    if inodes.is_empty() {
        return 0;
    }
    count_in(&tcp_table::rows(Some(pid)), &inodes, ports)
}

/// Counts rows that are open, on one of `ports`, and owned by `inodes`.
fn count_in(rows: &[Row], inodes: &HashSet<u64>, ports: &[u16]) -> usize {
    rows.iter()
        .filter(|row| {
            OPEN_STATES.contains(&row.state)
                && ports.contains(&row.local_port)
                && inodes.contains(&row.inode)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D2F2 08 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   3: 0100007F:D2F0 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:D2F4 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_only_open_connections_of_the_port_and_the_process() {
        let inodes: HashSet<u64> = [100, 101, 102, 103].into_iter().collect();
        // Port 0x1F90 = 8080: the listener (0A) does not count, nor the client socket on port 53999 (row 3),
        // nor row 4 owned by another process.
        assert_eq!(count_in(&tcp_table::parse(TABLE), &inodes, &[8080]), 2);
        assert_eq!(count_in(&tcp_table::parse(TABLE), &inodes, &[9090]), 0);
    }

    #[test]
    fn reads_this_process_without_error() {
        assert_eq!(count_open(Pid::this(), &[1]), 0);
    }
}
