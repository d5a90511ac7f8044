//! A second SIGTERM while the launcher waits for workers that ignore the first one kills them at once;
//! it does not wait for --stop-timeout (30 s here).

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

#[test]
fn second_stop_signal_kills_at_once() {
    private_netns(true);
    let dir = TempDir::new("second_stop_signal_kills_at_once");
    let mut scripted =
        ScriptedLauncher::start(&dir, &["--stop-timeout", "30"], "--ignore-sigterm", 2);
    let workers = procfs::snapshot(&scripted.launcher.workers_of(1));

    scripted.launcher.signal(Signal::SIGTERM);
    assert!(
        scripted
            .launcher
            .wait_for_log("stopping", Duration::from_secs(5)),
        "no `stopping` line after SIGTERM"
    );
    assert!(
        scripted.launcher.running(),
        "the launcher exited although its workers ignore SIGTERM"
    );
    assert!(
        workers.iter().all(|&w| procfs::still_running(w)),
        "a worker exited although it ignores SIGTERM"
    );

    let second = Instant::now();
    scripted.launcher.signal(Signal::SIGTERM);
    let status = scripted
        .launcher
        .wait_exit(Duration::from_secs(3))
        .expect("the launcher still runs 3 s after the second SIGTERM");
    eprintln!(
        "exited {:?} after the second SIGTERM with {status}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(0), "exit status: {status}");
    let left = procfs::wait_gone(&workers, Duration::from_secs(1));
    assert!(
        left.is_empty(),
        "workers {left:?} still run after the second SIGTERM"
    );
}
