//! `--lb-drain SECS`: after SIGTERM, /healthz answers 503 at once while every worker keeps serving for
//! SECS (a load balancer polling /healthz takes the host out before anything closes); only then do the
//! workers drain, and the launcher exits 0. It asks its service manager (a fake systemd notify socket)
//! for a stop timeout covering --lb-drain plus the drain.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::admin::{admin_get, try_admin_get};
use support::*;

const WORKERS: usize = 2;
const LB_DRAIN_SECS: u64 = 3;
const STOP_TIMEOUT_SECS: u64 = 5;
/// How soon after SIGTERM /healthz must say 503: "at once" is within a turn of the loop; this bounds a
/// loaded 2-core machine.
const UNHEALTHY_BOUND: Duration = Duration::from_millis(500);
/// Requests are checked until this long before the end of --lb-drain (the test's own clock and the
/// launcher's differ by the time it takes to deliver the signal).
const CHECK_MARGIN: Duration = Duration::from_millis(300);
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Requests between two checks of the launcher's state during --lb-drain.
const CHECK_EVERY: u64 = 200;

#[test]
fn lb_drain_keeps_serving_while_healthz_says_503() {
    private_netns(true);
    let dir = TempDir::new("lb_drain_keeps_serving");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", free_port());
    let systemd_path = dir.join("systemd-notify.sock");
    let systemd = UnixDatagram::bind(&systemd_path).expect("bind the fake systemd notify socket");
    systemd
        .set_nonblocking(true)
        .expect("make the fake notify socket non-blocking");
    let (port_arg, lb_arg, stop_arg) = (
        port.to_string(),
        LB_DRAIN_SECS.to_string(),
        STOP_TIMEOUT_SECS.to_string(),
    );
    let mut launcher = Launcher::spawn_with(
        &dir,
        &[
            "--workers",
            "2",
            "--admin",
            &admin,
            "--lb-drain",
            &lb_arg,
            "--stop-timeout",
            &stop_arg,
            "--",
            example_server(),
            "--port",
            &port_arg,
        ],
        |command| {
            command.env("NOTIFY_SOCKET", &systemd_path);
        },
    );
    assert!(launcher.wait_for_log("generation 1 serving", READY_DEADLINE));
    assert_eq!(admin_get(&admin, "/healthz").status, 200);
    let serving = launcher.workers_of(1);
    assert_eq!(serving.len(), WORKERS);

    launcher.signal(Signal::SIGTERM);
    let stopped_at = Instant::now();
    let mut health = None;
    assert!(
        wait_until(UNHEALTHY_BOUND, || {
            let r = admin_get(&admin, "/healthz");
            let down = r.status == 503;
            health = Some(r);
            down
        }),
        "/healthz still said {health:?} {UNHEALTHY_BOUND:?} after SIGTERM"
    );
    let health = health.unwrap();
    assert!(health.body.contains("lb-drain"), "{health:?}");

    // For the whole --lb-drain, every request is served, no worker is told to stop and /healthz stays
    // 503. The state checks count only when they finished before --lb-drain ended by the test's clock.
    let lb_drain = Duration::from_secs(LB_DRAIN_SECS);
    let (mut served, mut checks) = (0u64, 0u32);
    while stopped_at.elapsed() < lb_drain - CHECK_MARGIN {
        let (generation, pid) = try_http_get(&addr).unwrap_or_else(|e| {
            panic!(
                "a request {} ms into --lb-drain failed: {e}",
                stopped_at.elapsed().as_millis()
            )
        });
        assert_eq!(generation, 1);
        assert!(serving.contains(&pid), "pid {pid} is not a serving worker");
        served += 1;
        if served % CHECK_EVERY == 0 {
            let workers = launcher.workers_of(1);
            let drained = launcher.log_lines("draining");
            let health = try_admin_get(&admin, "/healthz", "").map(|r| r.status);
            if stopped_at.elapsed() < lb_drain {
                assert_eq!(workers, serving, "workers stopped during --lb-drain");
                assert!(
                    drained.is_empty(),
                    "a worker drained during --lb-drain: {drained:?}"
                );
                assert_eq!(health, Ok(503), "/healthz during --lb-drain");
                checks += 1;
            }
        }
    }
    assert!(checks > 0, "no state check finished inside --lb-drain");

    // Then the usual drain, and exit 0.
    let status = launcher
        .wait_exit(lb_drain + Duration::from_secs(STOP_TIMEOUT_SECS + 10))
        .expect("the launcher did not exit after --lb-drain");
    let took = stopped_at.elapsed();
    assert!(status.success(), "the launcher exited with {status}");
    assert!(
        took >= lb_drain,
        "the launcher exited {took:?} after SIGTERM, before --lb-drain ended"
    );
    assert!(launcher.log_text().contains("--lb-drain over"));
    eprintln!(
        "{served} requests served during {LB_DRAIN_SECS}s of --lb-drain; exit 0 {} ms after SIGTERM",
        took.as_millis()
    );

    // The first STOPPING=1 asks for --lb-drain plus the drain (listener drain: 2 x --stop-timeout).
    let mut buf = vec![0u8; 4096];
    let mut extends = Vec::new();
    while let Ok(n) = systemd.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.lines().any(|l| l == "STOPPING=1") {
            let usec: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("STOPPING=1 without EXTEND_TIMEOUT_USEC: {text:?}"));
            extends.push(usec);
        }
    }
    let first = *extends
        .first()
        .expect("no STOPPING=1 reached the fake systemd");
    assert!(
        first >= (LB_DRAIN_SECS + 2 * STOP_TIMEOUT_SECS) * 1_000_000,
        "EXTEND_TIMEOUT_USEC={first} does not cover --lb-drain {LB_DRAIN_SECS}s and the drain"
    );
}
