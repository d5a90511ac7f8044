//! A launcher with nothing to do sleeps: over 10 s of idling after generation 1 is ready its CPU time
//! (utime + stime) does not change.

mod support;

use std::time::Duration;

use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

/// Idle period observed.
const IDLE: Duration = Duration::from_secs(10);

#[test]
fn idle_launcher_uses_no_cpu() {
    private_netns(true);
    let dir = TempDir::new("idle_launcher_uses_no_cpu");
    let scripted = ScriptedLauncher::start(&dir, &[], "", 2);
    let pid = scripted.launcher.pid();
    // Let the start-up settle: the CPU counter stops moving within a second of readiness.
    let mut last = procfs::cpu_ticks(pid).expect("launcher stat");
    wait_until(Duration::from_secs(3), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = procfs::cpu_ticks(pid).unwrap_or(last);
        let settled = now == last;
        last = now;
        settled
    });
    let before = procfs::cpu_ticks(pid).expect("launcher stat");
    // Sampling the counter is the measurement itself, not synchronisation: watch it for IDLE.
    let moved = wait_until(IDLE, || procfs::cpu_ticks(pid).is_some_and(|t| t != before));
    let after = procfs::cpu_ticks(pid).expect("launcher stat");
    assert!(
        !moved,
        "the idle launcher used CPU: utime+stime went from {before} to {after} ticks within {IDLE:?}"
    );
    assert_eq!(
        http_get(&scripted.addr).0,
        1,
        "the launcher is idle because it serves nothing?"
    );
}
