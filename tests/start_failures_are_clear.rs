//! A launcher that cannot start says why and exits with the documented code: PROGRAM missing (3), PROGRAM
//! not executable (3), a bad flag (2, with a usage hint), generation 1 failing before ready (4, naming the
//! worker and its exit status). None leaves a process behind.

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use support::*;

/// A launcher that fails to start exits within this (the worker case needs one example-server start).
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

fn run(dir: &TempDir, args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (status, output) = run_launcher_to_exit(dir, &args, EXIT_DEADLINE);
    (status.code(), output)
}

#[test]
fn missing_program_exits_3_and_names_it() {
    private_netns(true);
    let dir = TempDir::new("missing_program");
    let missing = dir.join("no-such-server");
    let missing = missing.to_str().unwrap();
    let (code, output) = run(&dir, &["--workers", "1", "--", missing, "--port", "8080"]);
    assert_eq!(code, Some(3), "output: {output}");
    assert!(
        output.contains("reuseport-launch: error:"),
        "no error line: {output}"
    );
    assert!(
        output.contains(missing),
        "the error does not name {missing}: {output}"
    );
    let (code, output) = run(
        &dir,
        &["--workers", "1", "--", "no-such-server-on-path-xyz"],
    );
    assert_eq!(code, Some(3), "output: {output}");
    assert!(
        output.contains("no-such-server-on-path-xyz"),
        "the error does not name the program: {output}"
    );
}

#[test]
fn program_not_executable_exits_3() {
    private_netns(true);
    let dir = TempDir::new("not_executable");
    let path = dir.join("server.txt");
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    let path = path.to_str().unwrap();
    let (code, output) = run(&dir, &["--workers", "1", "--", path]);
    assert_eq!(code, Some(3), "output: {output}");
    assert!(
        output.contains(path),
        "the error does not name {path}: {output}"
    );
}

#[test]
fn bad_flag_exits_2_with_a_hint() {
    private_netns(true);
    let dir = TempDir::new("bad_flag");
    let (code, output) = run(&dir, &["--no-such-flag", "--", example_server()]);
    assert_eq!(code, Some(2), "output: {output}");
    assert!(
        output.contains("--no-such-flag"),
        "the error does not name the flag: {output}"
    );
    assert!(
        output.contains("--help"),
        "no hint towards --help: {output}"
    );
    let (code, output) = run(&dir, &["--workers", "0", "--", example_server()]);
    assert_eq!(code, Some(2), "--workers 0: {output}");
    let (code, output) = run(&dir, &["--ready-timeout", "soon", "--", example_server()]);
    assert_eq!(code, Some(2), "--ready-timeout soon: {output}");
}

#[test]
fn generation_1_exiting_before_ready_exits_4_and_names_the_worker() {
    private_netns(true);
    let dir = TempDir::new("gen1_exits");
    let port = free_port().to_string();
    let mut launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            "2",
            "--ready",
            "notify",
            "--ready-timeout",
            "10",
            "--stop-timeout",
            "5",
            "--",
            example_server(),
            "--port",
            &port,
            "--exit-before-ready",
            "7",
        ],
    );
    let status = launcher
        .wait_exit(EXIT_DEADLINE)
        .expect("the launcher still runs although its workers exit");
    let output = launcher.log_text();
    assert_eq!(status.code(), Some(4), "output: {output}");
    let error = output
        .lines()
        .find(|l| l.starts_with("reuseport-launch: error:"))
        .unwrap_or_else(|| panic!("no `reuseport-launch: error:` line: {output}"));
    assert!(
        error.contains("worker ") && error.contains("gen 1"),
        "the error does not name the worker: {error}"
    );
    assert!(
        error.contains("status 7"),
        "the error does not give the exit status: {error}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || launcher.descendants().is_empty()),
        "processes left: {:?}",
        launcher.descendants()
    );
}
