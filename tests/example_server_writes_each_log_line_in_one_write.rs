//! The example server writes each log line with one write(2), so the lines of several workers sharing the
//! launcher's stderr never interleave mid-line. Its stderr here is a unix datagram socket, on which every
//! write(2) arrives as one datagram: each must be exactly one whole line.

mod support;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

/// The server logs that it listens within this of starting, and its drain lines within this of SIGTERM.
const LINE_DEADLINE: Duration = Duration::from_secs(10);
/// The start line, "listening on", the drain lines ("draining ...", "drained, exiting").
const EXPECTED_LINES: usize = 3;

#[test]
fn example_server_writes_each_log_line_in_one_write() {
    private_netns(true);
    let (ours, theirs) = UnixDatagram::pair().expect("socketpair for the server's stderr");
    ours.set_read_timeout(Some(LINE_DEADLINE)).unwrap();
    let port = free_port().to_string();
    let mut guard = ChildGuard::spawn(
        Command::new(example_server())
            .args(["--host", "127.0.0.1", "--port", &port])
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(OwnedFd::from(theirs))),
    );
    let mut writes = Vec::new();
    let mut buffer = [0u8; 4096];
    while writes.len() < EXPECTED_LINES {
        let n = ours.recv(&mut buffer).unwrap_or_else(|e| {
            panic!("no log write within {LINE_DEADLINE:?} (got {writes:?}): {e}")
        });
        let write = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if writes.is_empty() {
            assert!(write.contains("listening on"), "first write: {write:?}");
            guard.signal(Signal::SIGTERM);
        }
        writes.push(write);
    }
    for write in &writes {
        assert!(
            write.ends_with('\n')
                && write.matches('\n').count() == 1
                && write.starts_with("example-server"),
            "a write that is not one whole line: {write:?} (all: {writes:?})"
        );
    }
    assert!(
        guard.wait_exit(LINE_DEADLINE).is_some(),
        "example-server did not exit after SIGTERM"
    );
}
