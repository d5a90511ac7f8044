//! SIGTERM to the launcher drains: a request already sent when the signal arrives still gets its 200,
//! the launcher exits 0 with `stopped`, and no worker is left.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::http::{parse_response, read_response};
use support::procfs;
use support::scenarios::ScriptedLauncher;
use support::*;

/// Server's delay before each response: long enough that SIGTERM lands while a request is in flight.
const DELAY_MS: u64 = 1500;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: in-flight\r\n\r\n";

#[test]
fn stop_drains_in_flight_requests() {
    private_netns(true);
    let dir = TempDir::new("stop_drains_in_flight_requests");
    let mut scripted = ScriptedLauncher::start(
        &dir,
        &["--stop-timeout", "10"],
        &format!("--delay-ms {DELAY_MS}"),
        2,
    );
    let workers = procfs::snapshot(&scripted.launcher.workers_of(1));

    // A first request proves the connection was accepted by a worker; the second is the one in flight.
    let mut stream = TcpStream::connect(&scripted.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(REQUEST).expect("send request 1");
    let first = read_response(&mut stream).expect("response 1");
    let (_, pid) = parse_response(&first).expect("response 1 is a 200");
    stream.write_all(REQUEST).expect("send request 2");
    let sent = Instant::now();
    scripted.launcher.signal(Signal::SIGTERM);

    let second =
        read_response(&mut stream).unwrap_or_else(|e| panic!("the in-flight request failed: {e}"));
    let (generation, second_pid) =
        parse_response(&second).unwrap_or_else(|e| panic!("in-flight request: {e}"));
    assert_eq!(
        (generation, second_pid),
        (1, pid),
        "the in-flight request was answered by another worker"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(DELAY_MS - 100),
        "the response came before the delay"
    );

    let status = scripted
        .launcher
        .wait_exit(Duration::from_secs(15))
        .expect("launcher still running 15 s after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "launcher exit status after a graceful stop: {status}"
    );
    let log = scripted.launcher.log_text();
    assert!(
        log.lines().last().is_some_and(|l| l.contains("stopped")),
        "the last log line is not `stopped`"
    );
    let left = procfs::wait_gone(&workers, Duration::from_secs(2));
    assert!(left.is_empty(), "workers {left:?} outlived the launcher");
    assert!(
        scripted.launcher.descendants().is_empty(),
        "processes left: {:?}",
        scripted.launcher.descendants()
    );
}
