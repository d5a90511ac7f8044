//! Loading a reuseport eBPF program needs CAP_BPF and CAP_NET_ADMIN. A launcher run by an ordinary user
//! (here: nobody) under `--steer auto` says once that steering is off, why and what is lost, and serves
//! and reloads as before; under `--steer on` it refuses to start with exit code 1 and a message that
//! names the cause and the way out.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::unistd::{chown, User};
use support::launcher::reload_and_wait;
use support::*;

const DEADLINE: Duration = Duration::from_secs(20);
/// Exit code for runtime errors (README, "Exit codes").
const EXIT_RUNTIME_ERROR: i32 = 1;

/// A test dir that user nobody may use: its runtime dir (control socket) belongs to nobody.
fn dir_for_nobody(test: &str, nobody: &User) -> TempDir {
    let dir = TempDir::new(test);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let runtime = dir.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    chown(&runtime, Some(nobody.uid), Some(nobody.gid)).unwrap();
    dir
}

fn spawn_as(dir: &TempDir, nobody: &User, args: &[&str]) -> Launcher {
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    Launcher::spawn_with(dir, args, |command| {
        // std drops the supplementary groups too when it changes the uid of a root process.
        command.uid(uid).gid(gid);
    })
}

fn nobody() -> User {
    User::from_name("nobody")
        .expect("look up user nobody")
        .expect("this test needs a user named nobody")
}

#[test]
fn unprivileged_launcher_under_auto_serves_and_reloads_without_steering() {
    private_netns(true);
    let nobody = nobody();
    let dir = dir_for_nobody("unprivileged_auto", &nobody);
    let port = free_port().to_string();
    let launcher = spawn_as(
        &dir,
        &nobody,
        &[
            "--workers",
            "2",
            "--",
            example_server(),
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", DEADLINE),
        "{}",
        launcher.log_tail(20)
    );
    let off = launcher.log_lines("steering off:");
    assert_eq!(off.len(), 1, "one line should say steering is off: {off:?}");
    assert!(
        off[0].contains("root") && off[0].contains("reset"),
        "the line should say why and what is lost: {}",
        off[0]
    );
    assert!(launcher.log_lines("steering on").is_empty());
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(http_get(&addr).0, 1);
    reload_and_wait(&launcher, 2, 2, DEADLINE, || {});
    assert_eq!(http_get(&addr).0, 2);
}

#[test]
fn unprivileged_launcher_under_steer_on_refuses_to_start() {
    private_netns(true);
    let nobody = nobody();
    let dir = dir_for_nobody("unprivileged_on", &nobody);
    let port = free_port().to_string();
    let mut launcher = spawn_as(
        &dir,
        &nobody,
        &[
            "--steer",
            "on",
            "--",
            example_server(),
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ],
    );
    let status = launcher
        .wait_exit(DEADLINE)
        .expect("the launcher keeps running although --steer on cannot work");
    assert_eq!(
        status.code(),
        Some(EXIT_RUNTIME_ERROR),
        "{}",
        launcher.log_text()
    );
    let log = launcher.log_text();
    assert!(
        log.contains("--steer on: unable to load the reuseport eBPF program")
            && log.contains("Run as root")
            && log.contains("--steer auto"),
        "the error should name the cause and the way out: {log}"
    );
    assert!(
        !log.contains("generation 1: starting"),
        "no worker may start: {log}"
    );
}
