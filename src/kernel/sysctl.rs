//! Checks the kernel settings a zero-error reload depends on, and says how to fix them.

use log::{debug, info, warn};

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Says what net.ipv4.tcp_migrate_req means for this launcher. Without steering, 0 means that closing
/// an old worker's SO_REUSEPORT listener resets the connections still queued on it, instead of moving
/// them to a listener of the new generation. With steering (SELECT_OR_MIGRATE) the kernel migrates
/// them whatever the sysctl says.
pub fn report_migrate_req(steering: bool) {
    let value = std::fs::read_to_string(MIGRATE_REQ);
    match (value, steering) {
        (Ok(value), true) => info!(
            "net.ipv4.tcp_migrate_req is {}: it does not matter with steering, which migrates a closing \
             listener's queue itself",
            value.trim()
        ),
        (Ok(value), false) if value.trim() == "0" => warn!(
            "net.ipv4.tcp_migrate_req is 0 and steering is off: connections still queued on an old worker's \
             listener are reset when it closes it during a reload. Fix: run as root for --steer, or \
             sysctl -w net.ipv4.tcp_migrate_req=1 (persist it with systemd/99-reuseport-launch.conf in /etc/sysctl.d/)"
        ),
        (Ok(_), false) => debug!("net.ipv4.tcp_migrate_req is on"),
        (Err(e), _) => warn!(
            "unable to read {MIGRATE_REQ} ({e}); this kernel may be older than 5.14, where queued connections \
             of a closing listener are reset during a reload"
        ),
    }
}
