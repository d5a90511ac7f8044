//! A statically linked C HTTP server, compiled here with `gcc -static` (no dynamic loader, so no
//! LD_PRELOAD trick could reach it), binds without SO_REUSEPORT, never sends READY=1 and answers every
//! request with `Connection: close`. Under the launcher's defaults (injection, `--ready auto`,
//! `--drain auto`, `--steer auto`, which is on as root) 4 workers reload 10 times under
//! connection-per-request load without a failed request.

mod support;

use std::time::Duration;

use support::launcher::reload_and_wait;
use support::static_server::build_static_server;
use support::*;

const WORKERS: usize = 4;
const RELOADS: u32 = 10;
/// Start of 4 tiny static servers plus the drain of the old ones, on a loaded 2-core machine.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
#[test]
fn unchanged_static_binary_reloads_without_failures() {
    private_netns(true);
    let dir = TempDir::new("static_binary");
    let server = build_static_server(&dir);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            &WORKERS.to_string(),
            "--stop-timeout",
            "10",
            "-v",
            "--",
            &server,
            &port.to_string(),
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", RELOAD_DEADLINE),
        "generation 1 of the static server did not become ready"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(
        load.wait_for_traffic(Duration::from_secs(10)),
        "loadgen got no response from the static server"
    );
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
    }
    let load = load.stop();
    eprintln!(
        "static binary: {} requests, {} ok, {} failures {:?}, {RELOADS} reloads; responses by generation {:?}",
        load.requests,
        load.ok,
        load.failures,
        load.failure_kinds,
        load.by_generation()
    );
    assert_eq!(
        load.failures, 0,
        "the static server lost requests over {RELOADS} reloads: {}",
        load.raw
    );
    let served = load.by_generation();
    for generation in 1..=RELOADS + 1 {
        assert!(
            served.get(&generation).is_some_and(|&n| n > 0),
            "no response from generation {generation}: {served:?}"
        );
    }
    // What an unchanged server sees of `--drain auto`: its listener is shut under it, so accept(2)
    // fails with EINVAL and this one exits 1 (after its last response); the launcher counts that as stopped.
    eprintln!(
        "static workers that reported `accept: Invalid argument` when their listener was shut: {}",
        launcher.log_lines("accept: Invalid argument").len()
    );
    eprintln!(
        "launcher SIGKILL warnings: {:?}",
        launcher.log_lines("SIGKILL")
    );
}
