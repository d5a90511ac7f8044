//! A legacy server that listens 1.5 s before it can serve (503 meanwhile) reloads 5 times under
//! connection-per-request load without one failed request with `--ready http:/healthz`: each new worker
//! counts as ready only once a probe routed to that very worker answers 2xx, so the old generation keeps
//! receiving until then. The control run, `--ready listen`, counts it ready at bind and loses requests
//! to the 503s; the test asserts both, so it proves the difference.

mod support;

use std::time::Duration;

use support::launcher::reload_and_wait;
use support::warming_server::warming_server;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 5;
/// How long each worker answers 503 after it listens.
const WARMUP_SECS: f64 = 1.5;
/// Two python interpreters on a loaded 2-core machine, their warm-up, and the old ones' drain.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
const START_DEADLINE: Duration = Duration::from_secs(20);

fn run(test: &str, ready: &str) -> LoadgenReport {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--workers",
        &WORKERS.to_string(),
        "--ready",
        ready,
        "-v",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(warming_server(&dir, port, WARMUP_SECS));
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 did not get ready: {}",
        launcher.log_tail(20)
    );
    if ready == "listen" {
        // Let generation 1 warm up, so that only the reloads are measured.
        let warm = || try_http_get(&addr).is_ok();
        assert!(
            wait_until(START_DEADLINE, warm),
            "generation 1 never answered 200"
        );
    }
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(
        load.wait_for_traffic(Duration::from_secs(10)),
        "loadgen got no response"
    );
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
    }
    let report = load.stop();
    eprintln!(
        "--ready {ready}: {} requests, {} ok, {} failures {:?} over {RELOADS} reloads",
        report.requests, report.ok, report.failures, report.failure_kinds
    );
    report
}

#[test]
fn ready_http_waits_for_a_warming_server_where_ready_listen_loses_requests() {
    private_netns(true);
    let http = run("ready_http", "http:/healthz");
    assert_eq!(
        http.failures, 0,
        "--ready http:/healthz lost requests over {RELOADS} reloads: {}",
        http.raw
    );
    assert!(http.ok > 0, "no request succeeded: {}", http.raw);

    let listen = run("ready_listen", "listen");
    assert!(
        listen.failures > 0,
        "the control run with --ready listen lost no request, so this test proves nothing: {}",
        listen.raw
    );
    assert!(
        listen.failure_kinds.contains_key("status"),
        "--ready listen failed, but not by the 503s of warming workers: {:?}",
        listen.failure_kinds
    );
}
