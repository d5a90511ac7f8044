//! What steering buys, proved on the harshest case: a `gcc -static` server that binds without
//! SO_REUSEPORT, never speaks sd_notify and dies at once on SIGTERM, 2 workers, reloaded 100 times back
//! to back under fast connection-per-request load. With steering (the default as root) not one connection
//! fails, with net.ipv4.tcp_migrate_req=0 (the kernel default) and with 1, and every worker is replaced
//! each time. With `--steer off` and the sysctl at 0 the same run resets connections: the listeners the
//! launcher shuts down take their queued connections with them.

mod support;

use std::time::{Duration, Instant};

use support::launcher::reload_and_wait;
use support::static_server::build_static_server;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 100;
/// One reload of two tiny static servers: spawn, listen, the handover grace, the drain.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
/// Client connections kept busy at once, each one request per connection: thousands of connections/s.
const CLIENTS: u32 = 8;

struct Run {
    load: LoadgenReport,
    took: Duration,
}

fn hundred_reloads(test: &str, migrate_req: bool, steer: &str) -> Run {
    private_netns(migrate_req);
    let dir = TempDir::new(test);
    let server = build_static_server(&dir);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            &WORKERS.to_string(),
            "--steer",
            steer,
            "--stop-timeout",
            "10",
            "--",
            &server,
            &port.to_string(),
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", RELOAD_DEADLINE),
        "generation 1 of the static server did not become ready: {}",
        launcher.log_tail(20)
    );
    let steering_line = if steer == "on" {
        "steering on"
    } else {
        "steering"
    };
    assert!(
        launcher.wait_for_log(steering_line, Duration::from_secs(1)) || steer == "off",
        "the launcher does not say that it steers: {}",
        launcher.log_tail(20)
    );
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, CLIENTS, &[]);
    assert!(
        load.wait_for_traffic(Duration::from_secs(10)),
        "loadgen got no response from the static server"
    );
    let started = Instant::now();
    for generation in 2..=RELOADS + 1 {
        // Asserts that generation - 1 is gone and exactly WORKERS workers of `generation` run.
        reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
    }
    let took = started.elapsed();
    let load = load.stop();
    eprintln!(
        "{test}: steer {steer}, tcp_migrate_req={}: {} requests, {} failures {:?} over {RELOADS} reloads in {:.1}s",
        u8::from(migrate_req),
        load.requests,
        load.failures,
        load.failure_kinds,
        took.as_secs_f64()
    );
    let served = load.by_generation();
    assert!(
        served.get(&(RELOADS + 1)).is_some_and(|&n| n > 0),
        "the last generation served nothing: {served:?}"
    );
    Run { load, took }
}

#[test]
fn steered_reloads_reset_nothing_with_migrate_req_off() {
    let run = hundred_reloads("steered_migrate_req_0", false, "on");
    assert_eq!(
        run.load.failures, 0,
        "steered reloads lost connections with tcp_migrate_req=0: {}",
        run.load.raw
    );
    assert!(run.took < RELOAD_DEADLINE * RELOADS);
}

#[test]
fn steered_reloads_reset_nothing_with_migrate_req_on() {
    let run = hundred_reloads("steered_migrate_req_1", true, "on");
    assert_eq!(
        run.load.failures, 0,
        "steered reloads lost connections with tcp_migrate_req=1: {}",
        run.load.raw
    );
}

#[test]
fn without_steering_the_same_reloads_reset_connections() {
    let run = hundred_reloads("unsteered_migrate_req_0", false, "off");
    let resets = run.load.failure_kinds.get("reset").copied().unwrap_or(0);
    assert!(
        resets > 0,
        "with --steer off and tcp_migrate_req=0 not one connection was reset in {RELOADS} reloads: the \
         test no longer shows what steering buys ({})",
        run.load.raw
    );
}
