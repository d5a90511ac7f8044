//! A launcher killed with SIGKILL (no chance to clean up) leaves no worker behind: every worker dies with
//! it, and nothing answers on the port any more.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

#[test]
fn launcher_killed_leaves_no_worker() {
    private_netns(true);
    let dir = TempDir::new("launcher_killed_leaves_no_worker");
    let mut scripted = ScriptedLauncher::start(&dir, &[], "", 3);
    let workers = procfs::snapshot(&scripted.launcher.workers_of(1));
    assert_eq!(workers.len(), 3);

    scripted.launcher.signal(Signal::SIGKILL);
    let status = scripted
        .launcher
        .wait_exit(Duration::from_secs(5))
        .expect("SIGKILLed launcher not reaped");
    assert!(
        status.code().is_none(),
        "the launcher was not killed: {status}"
    );
    let left = procfs::wait_gone(&workers, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "workers {left:?} outlived the SIGKILLed launcher"
    );
    assert!(
        wait_until(Duration::from_secs(5), || scripted
            .launcher
            .descendants()
            .is_empty()),
        "processes started by the launcher still run: {:?}",
        scripted.launcher.descendants()
    );
    assert!(
        try_http_get(&scripted.addr).is_err(),
        "something still answers on the port"
    );
}
