//! Checks the kernel settings a zero-error reload depends on, and says how to fix them.

use log::{debug, warn};

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Warns when net.ipv4.tcp_migrate_req is 0: closing an old worker's SO_REUSEPORT listener then resets
/// the connections still queued on it, instead of moving them to a listener of the new generation.
pub fn warn_if_migrate_req_off() {
    match std::fs::read_to_string(MIGRATE_REQ) {
        Ok(value) if value.trim() == "0" => warn!(
            "net.ipv4.tcp_migrate_req is 0: connections still queued on an old worker's listener are reset when \
             it closes it during a reload. Fix: sysctl -w net.ipv4.tcp_migrate_req=1 (persist it with \
             systemd/99-reuseport-launch.conf in /etc/sysctl.d/)"
        ),
        Ok(_) => debug!("net.ipv4.tcp_migrate_req is on"),
        Err(e) => warn!(
            "unable to read {MIGRATE_REQ} ({e}); this kernel may be older than 5.14, where queued connections \
             of a closing listener are reset during a reload"
        ),
    }
}
