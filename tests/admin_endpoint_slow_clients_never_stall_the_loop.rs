//! Clients that connect to the admin endpoint and send nothing, more of them than it keeps, plus one
//! that sends its request a byte every 100 ms, stall nothing: `reload --wait` succeeds as fast as
//! usual, every /healthz probe of a well-behaved client is answered at once, the slow client is cut
//! off at the request deadline, every idle connection is closed, and the log says so in a few lines.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::admin::{admin_get, try_admin_get};
use support::control::client;
use support::*;

/// More idle connections than the endpoint keeps (64), so it must close some to serve anyone.
const IDLE_CLIENTS: usize = 150;
/// The slow client's pace: one byte per this much, the classic slowloris.
const SLOW_BYTE_EVERY: Duration = Duration::from_millis(100);
/// The endpoint's request deadline is 2 s; the slow client must be cut off near it, well before this.
const SLOW_CUT_DEADLINE: Duration = Duration::from_secs(6);
/// A probe of a well-behaved client while the others stall: answered within a turn of the loop.
const PROBE_BOUND: Duration = Duration::from_millis(1000);
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// `reload --wait` of two example servers takes milliseconds; this is the bound on a loaded machine.
const RELOAD_BOUND: Duration = Duration::from_secs(10);
/// Lines about dropped admin clients the launcher may write for this whole test (rate-limited).
const MAX_DROP_LINES: usize = 5;

#[test]
fn admin_endpoint_slow_clients_never_stall_the_loop() {
    private_netns(true);
    let dir = TempDir::new("admin_slow_clients");
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let port_arg = port.to_string();
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            "2",
            "--admin",
            &admin,
            "--",
            example_server(),
            "--port",
            &port_arg,
        ],
    );
    assert!(launcher.wait_for_log("generation 1 serving", READY_DEADLINE));

    let idle: Vec<TcpStream> = (0..IDLE_CLIENTS)
        .map(|i| {
            TcpStream::connect(&admin)
                .unwrap_or_else(|e| panic!("idle client {i}: connect {admin}: {e}"))
        })
        .collect();

    let slow_admin = admin.clone();
    let slow = std::thread::spawn(move || slow_client(&slow_admin));

    // While they hang around: probes are answered at once, and a reload is as quick as ever.
    for i in 0..10 {
        let r = try_admin_get(&admin, "/healthz", "")
            .unwrap_or_else(|e| panic!("probe {i} beside {IDLE_CLIENTS} idle clients failed: {e}"));
        assert_eq!(r.status, 200, "probe {i}: {r:?}");
        assert!(r.took < PROBE_BOUND, "probe {i} took {:?}", r.took);
    }
    let reload = client(&dir, &["reload", "--wait"], RELOAD_BOUND);
    assert_eq!(reload.code(), 0, "reload --wait: {}", reload.show());
    assert!(
        reload.took < RELOAD_BOUND,
        "reload --wait: {}",
        reload.show()
    );
    let after = admin_get(&admin, "/metrics");
    assert!(
        after.body.contains("reuseport_launch_generation 2"),
        "{}",
        after.body
    );

    let (cut_after, answer) = slow.join().expect("the slow client's thread");
    assert!(
        cut_after < SLOW_CUT_DEADLINE,
        "the slow client was served for {cut_after:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "the slow client got {answer:?}"
    );

    // Every idle connection is closed by the launcher (evicted, or at its request deadline).
    for (i, mut stream) in idle.into_iter().enumerate() {
        stream
            .set_read_timeout(Some(SLOW_CUT_DEADLINE))
            .expect("set a read timeout");
        let mut buf = [0u8; 512];
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "idle client {i} was never closed");
    }
    let drop_lines = launcher.log_lines("admin client").len();
    eprintln!(
        "reload --wait beside {IDLE_CLIENTS} idle clients and a slow one: {} ms; slow client cut after {} ms; \
         {drop_lines} log lines about dropped clients",
        reload.took.as_millis(),
        cut_after.as_millis()
    );
    assert!(
        drop_lines <= MAX_DROP_LINES,
        "{drop_lines} log lines about dropped admin clients:\n{}",
        launcher.log_lines("admin client").join("\n")
    );
    assert_eq!(admin_get(&admin, "/healthz").status, 200);
}

/// Sends a request one byte per SLOW_BYTE_EVERY until the launcher closes the connection; returns how
/// long that took and what it answered. Bounded: it gives up after SLOW_CUT_DEADLINE.
fn slow_client(admin: &str) -> (Duration, String) {
    let request = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut stream = TcpStream::connect(admin).expect("the slow client connects");
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("set a read timeout");
    let started = Instant::now();
    let mut answer = Vec::new();
    for &byte in request.iter().cycle() {
        if started.elapsed() > SLOW_CUT_DEADLINE {
            break;
        }
        if stream.write_all(&[byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        std::thread::sleep(SLOW_BYTE_EVERY);
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}
