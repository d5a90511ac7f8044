//! The kernel's TCP counters of the launcher's network namespace that a reload's outcome depends on,
//! read from /proc/net/netstat (TcpExt): how many queued connections `net.ipv4.tcp_migrate_req` moved
//! from a closing listener to another one of its port, and how many it failed to move. Read-only.

/// /proc/net follows the network namespace of the process's main thread: the launcher has one thread.
const NETSTAT: &str = "/proc/net/netstat";

/// TCPMigrateReqSuccess and TCPMigrateReqFailure, as counted since the namespace was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateReq {
    pub success: u64,
    pub failure: u64,
}

/// The counters now; None when unreadable or absent (a kernel older than 5.14).
pub fn migrate_req() -> Option<MigrateReq> {
    parse(&std::fs::read_to_string(NETSTAT).ok()?)
}

/// Finds the counters in netstat's text: pairs of lines, "TcpExt: NAME..." then "TcpExt: VALUE...".
fn parse(text: &str) -> Option<MigrateReq> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let index = names.iter().position(|n| *n == name)?;
        values.get(index)?.parse().ok()
    };
    Some(MigrateReq {
        success: get("TCPMigrateReqSuccess")?,
        failure: get("TCPMigrateReqFailure")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_migration_counters_by_name() {
        let text = "TcpExt: SyncookiesSent TCPMigrateReqSuccess TCPMigrateReqFailure\n\
                    TcpExt: 0 98 1\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            parse(text),
            Some(MigrateReq {
                success: 98,
                failure: 1
            })
        );
        assert_eq!(parse("TcpExt: SyncookiesSent\nTcpExt: 0\n"), None);
    }

    #[test]
    fn reads_this_namespace_without_error() {
        // Linux 5.14+ (the project's minimum for tcp_migrate_req) has both counters.
        assert!(migrate_req().is_some());
    }
}
