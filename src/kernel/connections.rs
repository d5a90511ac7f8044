//! Counts a worker's open TCP connections on given local ports, read from /proc. It tells when a worker
//! whose listener was taken out of the port's group has finished the requests it had accepted.

use std::collections::HashSet;

use nix::unistd::Pid;

/// TCP states that still carry a client's request or response: ESTABLISHED and CLOSE_WAIT.
const OPEN_STATES: &[&str] = &["01", "08"];

/// Connections of process `pid` (its own file descriptors) whose local port is one of `ports`.
pub fn count_open(pid: Pid, ports: &[u16]) -> usize {
    let inodes = socket_inodes(pid);
    if inodes.is_empty() {
        return 0;
    }
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .map(|text| count_in_table(&text, &inodes, ports))
        .sum()
}

/// Inodes of the sockets among `pid`'s file descriptors.
fn socket_inodes(pid: Pid) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Counts rows of a /proc/net/tcp{,6} table that are open, on one of `ports`, and owned by `inodes`.
fn count_in_table(table: &str, inodes: &HashSet<u64>, ports: &[u16]) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                return false;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            OPEN_STATES.contains(state)
                && port.is_some_and(|p| ports.contains(&p))
                && inode.parse().is_ok_and(|i: u64| inodes.contains(&i))
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
        assert_eq!(count_in_table(TABLE, &inodes, &[8080]), 2);
        assert_eq!(count_in_table(TABLE, &inodes, &[9090]), 0);
    }

    #[test]
    fn reads_this_process_without_error() {
        assert_eq!(count_open(Pid::this(), &[1]), 0);
    }
}
