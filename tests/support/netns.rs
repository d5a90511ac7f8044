//! A private network namespace for the calling test thread: its own `lo`, its own ports and its own
//! net.ipv4.tcp_migrate_req, so tests never clash on ports and never change the host's sysctls.

use std::process::Command;

use nix::sched::{unshare, CloneFlags};

/// The per-netns sysctl the launcher checks. /proc/sys/net resolves to the netns of the thread that opens
/// it (unlike /proc/net, which follows the main thread), so writing it from the test thread after
/// unshare changes only the private netns; the read-back below proves it.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Moves the calling thread (and every process and thread it spawns afterwards) into a new network
/// namespace, brings `lo` up and sets net.ipv4.tcp_migrate_req there. Needs root.
pub fn private_netns(migrate_req: bool) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the reuseport-launch integration tests need root: each test runs in a private network namespace \
         (unshare CLONE_NEWNET) with its own net.ipv4.tcp_migrate_req; run `cargo test` as root (CI does)"
    );
    unshare(CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
        panic!("unshare(CLONE_NEWNET) failed: {e}; the tests need root and a kernel with network namespaces")
    });
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap_or_else(|e| {
            panic!("unable to run `ip link set lo up`: {e} (is iproute2 installed?)")
        });
    assert!(
        status.success(),
        "`ip link set lo up` in the private netns failed: {status}"
    );
    let wanted = if migrate_req { "1" } else { "0" };
    std::fs::write(MIGRATE_REQ, wanted)
        .unwrap_or_else(|e| panic!("unable to write {MIGRATE_REQ} in the private netns: {e}"));
    let read_back = std::fs::read_to_string(MIGRATE_REQ)
        .unwrap_or_else(|e| panic!("unable to read {MIGRATE_REQ}: {e}"));
    assert_eq!(
        read_back.trim(),
        wanted,
        "{MIGRATE_REQ} did not keep the value written"
    );
    // What a spawned process (the launcher) sees must agree with what this thread sees.
    let output = Command::new("sysctl")
        .args(["-n", "net.ipv4.tcp_migrate_req"])
        .output()
        .unwrap_or_else(|e| panic!("unable to run `sysctl -n net.ipv4.tcp_migrate_req`: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        wanted,
        "a child process does not see the private netns's tcp_migrate_req"
    );
}
