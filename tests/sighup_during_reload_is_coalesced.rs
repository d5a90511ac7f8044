//! SIGHUPs that arrive while a reload is under way fold into one follow-up reload: three quick SIGHUPs
//! end at generation 3 (not 4), and no request fails meanwhile.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::scenarios::ScriptedLauncher;
use support::*;

const WORKERS: usize = 2;
/// Each worker sleeps this long before binding, so the later SIGHUPs surely land during the first reload.
const START_DELAY_MS: u64 = 800;

#[test]
fn sighup_during_reload_is_coalesced() {
    private_netns(true);
    let dir = TempDir::new("sighup_during_reload_is_coalesced");
    let scripted = ScriptedLauncher::start(
        &dir,
        &["--stop-timeout", "10"],
        &format!("--start-delay-ms {START_DELAY_MS}"),
        WORKERS,
    );
    let launcher = &scripted.launcher;
    let load = Loadgen::start(&dir, "close", &scripted.addr, Mode::Close, 2, &[]);
    assert!(
        load.wait_for_traffic(Duration::from_secs(10)),
        "loadgen got no response"
    );

    launcher.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || !launcher
            .workers_of(2)
            .is_empty()),
        "the first SIGHUP did not start generation 2"
    );
    assert!(
        !launcher.log_text().contains("generation 2 serving"),
        "generation 2 was ready before the next SIGHUPs; the start delay is too short for this test"
    );
    launcher.signal(Signal::SIGHUP);
    launcher.signal(Signal::SIGHUP);
    assert!(
        launcher.wait_for_log("generation 3 serving", Duration::from_secs(20)),
        "the follow-up reload to generation 3 did not happen"
    );
    assert!(
        launcher.wait_for_workers(WORKERS, 3, Duration::from_secs(10)),
        "{:?}",
        launcher.workers()
    );
    // Give a wrongly queued extra reload the time to show up (a generation takes START_DELAY_MS to start).
    assert!(
        !launcher.wait_for_log("generation 4", Duration::from_millis(3 * START_DELAY_MS)),
        "a third reload (generation 4) ran: the SIGHUPs during the reload were not coalesced"
    );
    assert_eq!(
        launcher.workers().iter().filter(|&&(_, g)| g == 3).count(),
        WORKERS
    );
    assert_eq!(http_get(&scripted.addr).0, 3);
    let report = load.stop();
    eprintln!(
        "loadgen: {} ok, {} failures, {} retries",
        report.ok, report.failures, report.retries
    );
    assert_eq!(
        report.failures, 0,
        "requests failed during the reloads: {}",
        report.raw
    );
}
