//! A newcomer's slips get an answer that says what to type: a typo'd control command (`statuss`) gets
//! "did you mean `reuseport-launch status`", `--workers -1` is a bad value (not clap's tip to pass it after
//! `--`, which would make -1 the PROGRAM), `--stop-signal 99` says there is no such signal, and `status`
//! with two launchers running and no `--name` exits 2 (usage, as --help documents) naming both;
//! `--max-surge 0`, a `--reload-signal` the launcher uses for something else, and `--max-surge` with
//! `--probation` each say what is wrong and what to choose. Every one exits 2 and starts no worker.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use support::control::{client, CLIENT_DEADLINE};
use support::*;

/// A launcher refusing its arguments exits at once; this only bounds a hang.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);
/// Generation 1 (one example-server) is ready in well under this.
const READY_DEADLINE: Duration = Duration::from_secs(20);

fn run(dir: &TempDir, args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (status, output) = run_launcher_to_exit(dir, &args, EXIT_DEADLINE);
    (status.code(), output)
}

#[test]
fn typo_of_a_control_command_suggests_it() {
    private_netns(true);
    let dir = TempDir::new("typo_command");
    let (code, output) = run(&dir, &["statuss"]);
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("did you mean `reuseport-launch status`"),
        "no suggestion: {output}"
    );
    assert!(!output.contains("not found on PATH"), "{output}");
    let (code, output) = run(&dir, &["completions", "bash"]);
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("did you mean `reuseport-launch --generate complete-bash"),
        "no suggestion: {output}"
    );
}

#[test]
fn negative_workers_is_a_bad_value_not_a_flag() {
    private_netns(true);
    let dir = TempDir::new("negative_workers");
    let (code, output) = run(&dir, &["--workers", "-1", "--", example_server()]);
    assert_eq!(code, Some(2), "output: {output}");
    assert!(output.contains("--workers"), "{output}");
    assert!(output.contains("at least 1"), "{output}");
    assert!(
        !output.contains("-- -1"),
        "clap's tip would make -1 the PROGRAM: {output}"
    );
}

#[test]
fn unknown_stop_signal_number_is_named() {
    private_netns(true);
    let dir = TempDir::new("stop_signal_99");
    let (code, output) = run(&dir, &["--stop-signal", "99", "--", example_server()]);
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("--stop-signal 99: no such signal number"),
        "{output}"
    );
}

#[test]
fn status_with_two_launchers_and_no_name_exits_2_naming_them() {
    private_netns(true);
    let dir = TempDir::new("two_launchers");
    let start = |name: &str| {
        let port = free_port().to_string();
        Launcher::spawn(
            &dir,
            &[
                "--name",
                name,
                "--workers",
                "1",
                "--",
                example_server(),
                "--port",
                &port,
            ],
        )
    };
    let first = start("alpha");
    let second = start("beta");
    for launcher in [&first, &second] {
        assert!(
            launcher.wait_for_workers(1, 1, READY_DEADLINE)
                && launcher.wait_for_log("generation 1", READY_DEADLINE),
            "launcher {} did not start: {}",
            launcher.pid(),
            launcher.log_text()
        );
    }
    let output = client(&dir, &["status"], CLIENT_DEADLINE);
    assert_eq!(output.code(), 2, "{}", output.show());
    for needle in ["alpha", "beta", "--name"] {
        assert!(
            output.stderr.contains(needle),
            "no {needle}: {}",
            output.show()
        );
    }
    let named = client(&dir, &["status", "--name", "beta"], CLIENT_DEADLINE);
    assert_eq!(named.code(), 0, "{}", named.show());
}

#[test]
fn rollout_flags_say_what_is_wrong_and_what_to_choose() {
    private_netns(true);
    let dir = TempDir::new("rollout_flags");
    let server = example_server();
    for (args, mentions) in [
        (
            vec!["--max-surge", "0", "--", server],
            vec!["--max-surge", "at least 1"],
        ),
        (
            vec!["--reload-signal", "TERM", "--", server],
            vec!["SIGTERM stops the launcher", "choose HUP, USR1 or USR2"],
        ),
        (
            vec!["--reload-signal", "sigchld", "--", server],
            vec!["SIGCHLD", "choose HUP, USR1 or USR2"],
        ),
        (
            vec![
                "-w",
                "4",
                "--max-surge",
                "1",
                "--probation",
                "5",
                "--",
                server,
            ],
            vec![
                "--max-surge 1 cannot be combined with --probation 5",
                "drop one",
            ],
        ),
    ] {
        let (code, output) = run(&dir, &args);
        assert_eq!(code, Some(2), "{args:?}: {output}");
        for mention in mentions {
            assert!(
                output.contains(mention),
                "{args:?} does not say {mention:?}: {output}"
            );
        }
    }
}
