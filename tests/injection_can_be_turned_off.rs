//! `--no-inject` turns SO_REUSEPORT injection off: `python3 -m http.server` (which never sets
//! SO_REUSEPORT) then fails to bind in its second worker (EADDRINUSE), so generation 1 cannot start and
//! the launcher exits with code 4 naming the worker that exited. The same command without --no-inject
//! serves with both workers on the one port.

mod support;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::unchanged::{python3, worker_listeners};
use support::*;

const WORKERS: usize = 2;
/// python's start (twice, on a loaded 2-core machine) plus the launcher's stop of the survivor.
const DEADLINE: Duration = Duration::from_secs(30);

fn args<'a>(python: &'a str, port: &'a str, no_inject: bool) -> Vec<&'a str> {
    let mut args = vec!["--workers", "2", "--stop-timeout", "5"];
    if no_inject {
        args.push("--no-inject");
    }
    args.extend([
        "--",
        python,
        "-m",
        "http.server",
        port,
        "--bind",
        "127.0.0.1",
    ]);
    args
}

#[test]
fn without_injection_the_second_worker_cannot_bind() {
    private_netns(true);
    let dir = TempDir::new("no_inject");
    let python = python3();
    let port = free_port().to_string();
    let args: Vec<&OsStr> = args(&python, &port, true)
        .into_iter()
        .map(OsStr::new)
        .collect();
    let (status, output) = run_launcher_to_exit(&dir, &args, DEADLINE);
    eprintln!("--no-inject: launcher exited with {status}; output:\n{output}");
    assert_eq!(
        status.code(),
        Some(4),
        "with --no-inject, generation 1 of python http.server must fail to start"
    );
    assert!(
        output.contains("Address already in use"),
        "python's bind error (EADDRINUSE) is not in the output: {output}"
    );
    let error = output
        .lines()
        .find(|l| l.contains("reuseport-launch: error:"))
        .unwrap_or_else(|| panic!("no `reuseport-launch: error:` line in: {output}"));
    assert!(
        error.contains("worker ") && error.contains("exited"),
        "the error does not name the worker that exited: {error}"
    );
    assert!(
        error.contains("With --no-inject every worker must set SO_REUSEPORT itself"),
        "the error does not point at --no-inject: {error}"
    );
}

#[test]
fn with_injection_both_workers_share_the_port() {
    private_netns(true);
    let dir = TempDir::new("inject_default");
    let python = python3();
    let port = free_port();
    let port_arg = port.to_string();
    let launcher = Launcher::spawn(&dir, &args(&python, &port_arg, false));
    assert!(
        launcher.wait_for_log("generation 1 serving", DEADLINE),
        "generation 1 of python http.server did not start with injection on"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let listeners = worker_listeners(&launcher, port);
    let pids: std::collections::BTreeSet<i32> = listeners.iter().map(|l| l.pid).collect();
    assert_eq!(
        pids.len(),
        WORKERS,
        "each worker should hold its own listener on port {port}: {listeners:?}"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to python");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200"),
        "python did not answer 200: {:?}",
        &response[..response.len().min(200)]
    );
}
