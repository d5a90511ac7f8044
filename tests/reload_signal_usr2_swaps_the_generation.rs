//! `--reload-signal USR2`: SIGUSR2 reloads (generation 2 replaces generation 1, the old pids gone);
//! a SIGHUP then reloads nothing and the log says why; the next SIGUSR2 makes generation 3 — not 4,
//! which a SIGHUP taken for a reload would have made.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const WORKERS: usize = 2;
/// Start plus readiness of a generation of example-servers on a loaded 2-core machine.
const GENERATION_DEADLINE: Duration = Duration::from_secs(20);

/// Sends SIGUSR2 and waits until `generation` serves alone and the previous one is gone.
fn reload_with_usr2(launcher: &Launcher, generation: u32) {
    let old = procfs::snapshot(&launcher.workers_of(generation - 1));
    assert_eq!(old.len(), WORKERS, "workers: {:?}", launcher.workers());
    launcher.signal(Signal::SIGUSR2);
    assert!(
        launcher.wait_for_workers(WORKERS, generation, GENERATION_DEADLINE),
        "SIGUSR2 did not give {WORKERS} workers of generation {generation}: {:?}\n{}",
        launcher.workers(),
        launcher.log_tail(20)
    );
    assert!(
        procfs::wait_gone(&old, Duration::from_secs(10)).is_empty(),
        "generation {} still runs after the reload",
        generation - 1
    );
}

#[test]
fn reload_signal_usr2_swaps_the_generation() {
    private_netns(true);
    let dir = TempDir::new("reload_signal_usr2_swaps_the_generation");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let port_arg = port.to_string();
    let launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers",
            "2",
            "--reload-signal",
            "usr2",
            "--",
            example_server(),
            "--port",
            &port_arg,
        ],
        GENERATION_DEADLINE,
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));

    reload_with_usr2(&launcher, 2);
    assert_eq!(http_get(&addr).0, 2);

    // SIGHUP is no longer the reload signal: logged, and nothing else happens.
    let serving = launcher.workers_of(2);
    launcher.signal(Signal::SIGHUP);
    assert!(
        launcher.wait_for_log(
            "SIGHUP ignored: the reload signal is SIGUSR2",
            GENERATION_DEADLINE
        ),
        "no line says the SIGHUP was ignored:\n{}",
        launcher.log_tail(20)
    );
    assert!(
        !launcher
            .log_text()
            .contains("reload: starting generation 3"),
        "the SIGHUP started a reload:\n{}",
        launcher.log_tail(20)
    );
    assert_eq!(
        launcher.workers_of(2),
        serving,
        "the workers changed after SIGHUP"
    );
    assert_eq!(http_get(&addr).0, 2);

    // The launcher is alive and the next SIGUSR2 reloads to generation 3.
    reload_with_usr2(&launcher, 3);
    assert_eq!(http_get(&addr).0, 3);
    assert!(!launcher.log_text().contains("generation 4"));
}
