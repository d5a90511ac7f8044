//! The kernel's TCP socket tables (/proc/<pid>/net/tcp and tcp6, as seen from a process's network
//! namespace) and which sockets a process holds (/proc/<pid>/fd). Read-only parsing: the callers
//! decide what a row means.

use std::collections::HashSet;
use std::os::fd::RawFd;

use nix::unistd::Pid;

/// TCP_LISTEN in the tables' `st` column.
pub const STATE_LISTEN: u8 = 0x0A;
/// ESTABLISHED and CLOSE_WAIT: states that still carry a client's request or response.
pub const OPEN_STATES: &[u8] = &[0x01, 0x08];

/// One socket of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub local_port: u16,
    pub state: u8,
    pub inode: u64,
}

/// Every TCP socket (IPv4 and IPv6) of the network namespace `pid` lives in; None: the launcher's.
pub fn rows(seen_from: Option<Pid>) -> Vec<Row> {
    let dir = seen_from.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("{dir}/net/{table}")).ok())
        .flat_map(|text| parse(&text))
        .collect()
}

/// The rows of one table's text.
pub fn parse(table: &str) -> Vec<Row> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let local_port = fields
                .get(1)?
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())?;
            let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            Some(Row {
                local_port,
                state,
                inode,
            })
        })
        .collect()
}

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
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
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

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn rows_carry_port_state_and_inode() {
        assert_eq!(
            parse(TABLE),
            vec![
                Row {
                    local_port: 8080,
                    state: STATE_LISTEN,
                    inode: 4242
                },
                Row {
                    local_port: 8080,
                    state: 0x01,
                    inode: 4343
                },
            ]
        );
    }

    #[test]
    fn this_process_sockets_are_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mine = socket_inodes(Pid::this());
        assert!(rows(None)
            .iter()
            .any(|r| r.local_port == port && r.state == STATE_LISTEN && mine.contains(&r.inode)));
    }
}
