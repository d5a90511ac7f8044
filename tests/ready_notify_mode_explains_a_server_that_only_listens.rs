//! `--ready notify` with a server that listens but never sends READY=1 (`python3 -m http.server`):
//! generation 1 is given up after --ready-timeout, the launcher exits with code 4, and its message
//! names the worker, says it listens but never sent READY=1, and suggests `--ready listen`.

mod support;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use support::unchanged::python3;
use support::*;

/// The --ready-timeout given to the launcher.
const READY_TIMEOUT_SECS: &str = "2";
/// The launcher gives up after 2 s; python's start on a loaded 2-core machine and the stop take the rest.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn ready_notify_mode_explains_a_server_that_only_listens() {
    private_netns(true);
    let dir = TempDir::new("ready_notify");
    let python = python3();
    let port = free_port().to_string();
    let args: Vec<&OsStr> = [
        "--workers",
        "2",
        "--ready",
        "notify",
        "--ready-timeout",
        READY_TIMEOUT_SECS,
        "--stop-timeout",
        "5",
        "--",
        &python,
        "-m",
        "http.server",
        &port,
        "--bind",
        "127.0.0.1",
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    let started = Instant::now();
    let (status, output) = run_launcher_to_exit(&dir, &args, EXIT_DEADLINE);
    eprintln!(
        "launcher exited with {status} after {} ms; output:\n{output}",
        started.elapsed().as_millis()
    );
    assert_eq!(
        status.code(),
        Some(4),
        "generation 1 of a server that never sends READY=1 must fail with exit 4 under --ready notify"
    );
    let error = output
        .lines()
        .find(|l| l.contains("reuseport-launch: error:"))
        .unwrap_or_else(|| panic!("no `reuseport-launch: error:` line in: {output}"));
    for mention in [
        "not ready after 2.0s",
        "listens but never sent READY=1",
        "--ready listen",
    ] {
        assert!(
            error.contains(mention),
            "the error does not say {mention:?}: {error}"
        );
    }
    assert!(
        error.contains("worker "),
        "the error does not name the worker: {error}"
    );
}
