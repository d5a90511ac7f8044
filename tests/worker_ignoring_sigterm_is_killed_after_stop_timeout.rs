//! A worker that ignores SIGTERM does not hold the launcher hostage: after --stop-timeout it is killed,
//! the launcher exits 0 soon after, and the worker is gone.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

#[test]
fn worker_ignoring_sigterm_is_killed_after_stop_timeout() {
    private_netns(true);
    let dir = TempDir::new("worker_ignoring_sigterm_is_killed_after_stop_timeout");
    let mut scripted =
        ScriptedLauncher::start(&dir, &["--stop-timeout", "1"], "--ignore-sigterm", 2);
    let workers = procfs::snapshot(&scripted.launcher.workers_of(1));

    let signalled = Instant::now();
    scripted.launcher.signal(Signal::SIGTERM);
    let status = scripted
        .launcher
        .wait_exit(Duration::from_secs(5))
        .expect("the launcher did not exit within 5 s of SIGTERM with --stop-timeout 1");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status: {status}");
    assert!(
        took >= Duration::from_millis(900),
        "the launcher exited after {took:?}, before --stop-timeout"
    );
    let left = procfs::wait_gone(&workers, Duration::from_secs(1));
    assert!(
        left.is_empty(),
        "workers {left:?} that ignore SIGTERM are still running"
    );
    assert!(
        scripted.launcher.log_text().contains("SIGKILL"),
        "the log does not say the workers were killed with SIGKILL"
    );
}
