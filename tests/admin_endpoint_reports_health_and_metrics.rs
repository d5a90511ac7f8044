//! `--admin` serves what a load balancer and Prometheus need, and it matches what the launcher did:
//! /healthz is 503 while generation 1 starts and while a crashed worker's slot is empty, 200 otherwise;
//! /metrics, read by Python's prometheus_client (both its text and OpenMetrics parsers), counts one
//! succeeded reload, one failed reload and one crash restart, and names the serving generation;
//! /status is the JSON of `status --json`; HEAD is GET without the body; other methods and paths are
//! refused.

mod support;

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::admin::{admin_get, parse_metrics, try_admin_get};
use support::launcher::reload_and_wait;
use support::*;

const WORKERS: usize = 2;
/// Generation 1 sleeps this long before it listens, so /healthz is seen saying 503 while it starts.
const SLOW_START_MS: u64 = 1500;
/// Start plus readiness of the example server on a loaded 2-core machine takes well under this.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// A change of state shows on the admin endpoint within a turn of the launcher's loop.
const SHOWS_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn admin_endpoint_reports_health_and_metrics() {
    private_netns(true);
    let dir = TempDir::new("admin_endpoint_reports");
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let server = |extra: &str| {
        dir.write_script("server.sh", &exec_server(port, extra));
    };
    server(&format!("--start-delay-ms {SLOW_START_MS}"));
    let script = dir.join("server.sh");
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers".as_ref(),
            "2".as_ref(),
            "--stop-timeout".as_ref(),
            "5".as_ref(),
            "--admin".as_ref(),
            admin.as_str().as_ref(),
            "--".as_ref(),
            script.as_os_str(),
        ],
    );

    // Generation 1 starting: unavailable, with the reason.
    assert!(
        wait_until(SHOWS_DEADLINE, || try_admin_get(&admin, "/healthz", "")
            .is_ok()),
        "the admin endpoint never answered"
    );
    let starting = admin_get(&admin, "/healthz");
    assert_eq!(starting.status, 503, "{starting:?}");
    assert!(starting.body.contains("starting"), "{starting:?}");

    assert!(launcher.wait_for_log("generation 1 serving", READY_DEADLINE));
    let healthy = admin_get(&admin, "/healthz");
    assert_eq!(healthy.status, 200, "{healthy:?}");
    assert!(healthy.body.contains("2/2 ready"), "{healthy:?}");
    let first = parse_metrics(&dir, &admin_get(&admin, "/metrics").body, false);
    assert_eq!(first.get("reuseport_launch_generation"), 1.0);
    assert_eq!(
        first.get("reuseport_launch_reloads_total{result=succeeded}"),
        0.0
    );
    assert_eq!(first.get("reuseport_launch_workers{state=ready}"), 2.0);

    // A reload that succeeds, then one whose workers exit before ready.
    server("");
    reload_and_wait(&launcher, WORKERS, 2, READY_DEADLINE, || {});
    server("--exit-before-ready 3");
    launcher.signal(Signal::SIGHUP);
    assert!(
        launcher.wait_for_log("reload to generation 3 failed", READY_DEADLINE),
        "the bad reload did not fail"
    );

    // A crash of a serving worker whose replacement is slow to start: /healthz says which slot is empty.
    server(&format!("--start-delay-ms {SLOW_START_MS}"));
    let victim = launcher.workers_of(2)[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill a worker of generation 2");
    let mut degraded = None;
    assert!(
        wait_until(SHOWS_DEADLINE, || {
            let r = admin_get(&admin, "/healthz");
            let down = r.status == 503;
            degraded = Some(r);
            down
        }),
        "/healthz stayed 200 with a crashed worker: {degraded:?}"
    );
    let degraded = degraded.unwrap();
    assert!(
        degraded.body.contains("no ready worker in slot"),
        "{degraded:?}"
    );
    assert!(
        wait_until(READY_DEADLINE, || admin_get(&admin, "/healthz").status
            == 200),
        "/healthz never recovered after the restart"
    );

    // The counters match what happened, read by both parsers.
    let text = admin_get(&admin, "/metrics");
    assert!(
        text.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        text.content_type
    );
    let openmetrics = try_admin_get(
        &admin,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .expect("GET /metrics as OpenMetrics");
    assert!(
        openmetrics
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        openmetrics.content_type
    );
    for (body, is_openmetrics) in [(&text.body, false), (&openmetrics.body, true)] {
        let scrape = parse_metrics(&dir, body, is_openmetrics);
        let expect = |key: &str, value: f64| {
            assert_eq!(
                scrape.get(key),
                value,
                "{key} ({})",
                if is_openmetrics {
                    "OpenMetrics"
                } else {
                    "text"
                }
            );
        };
        expect("reuseport_launch_reloads_total{result=succeeded}", 1.0);
        expect("reuseport_launch_reloads_total{result=failed}", 1.0);
        expect("reuseport_launch_worker_restarts_total", 1.0);
        expect("reuseport_launch_generation", 2.0);
        expect("reuseport_launch_reload_duration_seconds_count", 1.0);
        expect(
            "reuseport_launch_reload_duration_seconds_bucket{le=+Inf}",
            1.0,
        );
        expect("reuseport_launch_workers{state=ready}", 2.0);
        expect("reuseport_launch_workers{state=starting}", 0.0);
        expect("reuseport_launch_workers{state=draining}", 0.0);
        expect("reuseport_launch_workers{state=stopping}", 0.0);
        assert_eq!(
            scrape.types["reuseport_launch_reloads_total{result=failed}"],
            "counter"
        );
        assert_eq!(
            scrape.types["reuseport_launch_reload_duration_seconds_count"],
            "histogram"
        );
        assert_eq!(
            scrape.types["reuseport_launch_workers{state=ready}"],
            "gauge"
        );
        assert!(scrape.get("reuseport_launch_reload_duration_seconds_sum") > 0.0);
        // The kernel's counters of the test's network namespace: present, whatever their values.
        assert!(scrape.get("reuseport_launch_tcp_migrate_req_total{result=success}") >= 0.0);
        assert!(scrape.get("reuseport_launch_tcp_migrate_req_total{result=failure}") >= 0.0);
        assert_eq!(
            scrape.types["reuseport_launch_tcp_migrate_req_total{result=failure}"],
            "counter"
        );
    }

    // /status is `status --json`.
    let status = admin_get(&admin, "/status");
    assert_eq!(status.status, 200);
    assert!(status.content_type.starts_with("application/json"));
    let body = status.body.trim();
    assert!(body.starts_with('{') && body.ends_with('}'), "{body}");
    assert!(
        body.contains("\"generation\":2") && body.contains("\"phase\":\"serving\""),
        "{body}"
    );
    assert!(
        body.contains("\"result\":\"ok\"") || body.contains("\"result\":\"failed\""),
        "{body}"
    );

    // Only GET, only these paths, and garbage gets a 400.
    assert_eq!(admin_get(&admin, "/nope").status, 404);
    let post = send_raw(
        &admin,
        "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post:?}");
    let head = send_raw(&admin, "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "HEAD answers like GET without the body: {head:?}"
    );
    let garbage = send_raw(&admin, "\u{1}\u{2} not http at all\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
}

/// Writes `request` as it is and returns whatever comes back before the connection closes.
fn send_raw(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin endpoint");
    stream
        .set_read_timeout(Some(support::admin::ADMIN_TIMEOUT))
        .expect("set a read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("write a raw request");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
