//! `--ready http:PATH` and `--health http:PATH` without steering are refused at start (exit 2) with the
//! reason — a probe cannot choose its worker, so an old worker could answer for a new one — and so are a
//! PATH that is not one and `--health ipc` without the Node IPC channel; no worker is started. So is
//! `--probation` without steering.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use support::*;

/// A usage error exits before any worker starts.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

fn run(dir: &TempDir, args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (status, output) = run_launcher_to_exit(dir, &args, EXIT_DEADLINE);
    (status.code(), output)
}

#[test]
fn http_probes_without_steering_are_a_start_error_saying_why() {
    private_netns(true);
    let dir = TempDir::new("ready_http_needs_steering");
    let port = free_port().to_string();
    let server = example_server();
    let (code, output) = run(
        &dir,
        &[
            "--ready",
            "http:/healthz",
            "--steer",
            "off",
            "--",
            server,
            "--port",
            &port,
        ],
    );
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("--ready http needs steering")
            && output.contains("a probe cannot choose its worker"),
        "the error does not say why: {output}"
    );
    assert!(
        !output.contains("spawned"),
        "a worker was started: {output}"
    );

    let (code, output) = run(
        &dir,
        &["--ready", "http:healthz", "--", server, "--port", &port],
    );
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("such as http:/healthz"),
        "no hint: {output}"
    );

    let (code, output) = run(
        &dir,
        &[
            "--ready",
            "http:/healthz",
            "--no-inject",
            "--",
            server,
            "--port",
            &port,
        ],
    );
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("--ready http needs injection or --listen"),
        "{output}"
    );
}

/// `--probation` keeps the old generation idle only with steering; without it the launcher refuses to
/// start (exit 1, a runtime condition: `--steer auto` may have found steering unavailable).
#[test]
fn probation_without_steering_is_a_start_error_saying_why() {
    private_netns(true);
    let dir = TempDir::new("probation_needs_steering");
    let port = free_port().to_string();
    let (code, output) = run(
        &dir,
        &[
            "--probation",
            "5",
            "--steer",
            "off",
            "--",
            example_server(),
            "--port",
            &port,
        ],
    );
    assert_eq!(code, Some(1), "output: {output}");
    assert!(
        output.contains("--probation needs steering") && output.contains("share of the port"),
        "the error does not say why: {output}"
    );
    assert!(
        !output.contains("spawned"),
        "a worker was started: {output}"
    );
}
