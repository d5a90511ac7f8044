//! The launcher as PID 1 of a fresh pid namespace, as in a container (`unshare --pid --fork
//! --mount-proc`): every orphan reparented to it is reaped (none is left a zombie), a reload works, and
//! SIGTERM sent from outside the namespace (as a container runtime sends it) drains the workers and ends
//! it with exit 0.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::control::client;
use support::procfs;
use support::*;

const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Each worker leaves an orphan that lives this long: long enough to be seen reparented to PID 1.
const ORPHAN_LIFE_SECS: f64 = 1.0;
/// The orphans exit after ORPHAN_LIFE_SECS; their reaping follows at once. Slack for a loaded machine.
const REAPED_DEADLINE: Duration = Duration::from_secs(10);
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// (state, command name) of a process from /proc/<pid>/stat, as seen from the test's namespace.
fn state_and_comm(pid: i32) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let comm = text[text.find('(')? + 1..text.rfind(')')?].to_owned();
    let state = text[text.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .to_owned();
    Some((state, comm))
}

/// The pids of `pid` in each pid namespace it belongs to, outermost first (NSpid of /proc/<pid>/status).
fn ns_pids(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|v| {
                v.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn launcher_as_pid_1_reaps_orphans_and_stops_on_sigterm() {
    private_netns(true);
    let dir = TempDir::new("launcher_as_pid_1");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // The subshell starts a sleep in the background and exits at once: the sleep is orphaned and the
    // kernel hands it to the namespace's init, the launcher.
    let script = dir.write_script(
        "server.sh",
        &format!("(sleep {ORPHAN_LIFE_SECS} &)\n{}", exec_server(port, "")),
    );
    let mut launcher = Launcher::spawn_under(
        &dir,
        &["unshare", "--pid", "--fork", "--mount-proc", "--"],
        &[
            "--workers".as_ref(),
            "2".as_ref(),
            "--stop-timeout".as_ref(),
            "5".as_ref(),
            "--".as_ref(),
            script.as_os_str(),
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", READY_DEADLINE),
        "generation 1 did not get ready under unshare"
    );
    let unshare = launcher.pid();
    let inner = *procfs::children(unshare)
        .first()
        .expect("the launcher, unshare's child");
    assert_eq!(
        ns_pids(inner).last(),
        Some(&1),
        "the launcher is not PID 1 of its namespace: NSpid {:?}",
        ns_pids(inner)
    );

    // The orphans are reparented to the launcher, then reaped when they exit.
    let sleeps_of = |pid: i32| -> Vec<(i32, String)> {
        procfs::children(pid)
            .into_iter()
            .filter_map(|c| state_and_comm(c).map(|(state, comm)| (c, state, comm)))
            .filter(|(_, _, comm)| comm == "sleep")
            .map(|(c, state, _)| (c, state))
            .collect()
    };
    assert!(
        wait_until(READY_DEADLINE, || !sleeps_of(inner).is_empty()),
        "no orphan was reparented to the launcher (PID 1)"
    );
    let zombies = |pid: i32| -> Vec<i32> {
        procfs::children(pid)
            .into_iter()
            .filter(|&c| state_and_comm(c).is_some_and(|(state, _)| state == "Z"))
            .collect()
    };
    assert!(
        wait_until(REAPED_DEADLINE, || sleeps_of(inner).is_empty()
            && zombies(inner).is_empty()),
        "orphans left behind under PID 1: sleeps {:?}, zombies {:?}",
        sleeps_of(inner),
        zombies(inner)
    );

    // A reload works (its workers leave orphans too, reaped the same way).
    let reload = client(&dir, &["reload", "--wait"], READY_DEADLINE);
    assert_eq!(
        reload.code(),
        0,
        "reload --wait under PID 1: {}",
        reload.show()
    );
    let (generation, _) = http_get(&addr);
    assert_eq!(
        generation, 2,
        "after the reload generation {generation} answered"
    );
    assert!(
        wait_until(REAPED_DEADLINE + Duration::from_secs(2), || {
            sleeps_of(inner).is_empty() && zombies(inner).is_empty()
        }),
        "orphans of generation 2 left behind: zombies {:?}",
        zombies(inner)
    );

    // SIGTERM from outside the namespace: drain, then exit 0 (unshare passes the status on).
    kill(Pid::from_raw(inner), Signal::SIGTERM).expect("SIGTERM to the launcher");
    let status = launcher
        .wait_exit(STOP_DEADLINE)
        .expect("the launcher did not exit after SIGTERM");
    assert!(
        status.success(),
        "unshare (the launcher) exited with {status}"
    );
    let log = launcher.log_text();
    assert!(
        log.contains("drained, exiting"),
        "the workers did not drain:\n{log}"
    );
    assert!(
        log.contains("INFO  stopped"),
        "the launcher did not stop cleanly:\n{log}"
    );
}
