//! A process of the same user that binds a UDP socket with SO_REUSEPORT on the port of a steered UDP
//! server joins the kernel's reuseport group, and without steering it would get its share of the
//! datagrams. With steering it gets none, before and after a reload, and the launcher names it once
//! in its log, by pid and command, as having a UDP socket on the port.
//!
//! Control: with `--steer off` the same stranger answers some of the queries (the kernel's hash
//! picks it for some client ports), which shows it is in the group.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::launcher::reload_and_wait;
use support::udp::{query, write_server};
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const DEADLINE: Duration = Duration::from_secs(20);
/// Queries after the stranger joined, each from a fresh client port: with 3 sockets in the group
/// the kernel's hash picks the stranger for about a third of them.
const QUERIES: usize = 300;
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The generation the stranger claims in its answers.
const STRANGER_GENERATION: u32 = 999;

/// Binds a UDP socket with SO_REUSEPORT on 127.0.0.1:PORT, says so in a file, answers as gen 999.
const STRANGER_PY: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
open(sys.argv[2], "w").write("bound")
tag = b"gen-999-pid-%d" % os.getpid()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(tag + b" " + data, peer)
"#;

/// Starts the launcher (`steer`) and the stranger on the port; returns how many queries the stranger
/// answered, with the launcher and the stranger for further checks.
fn run(test: &str, steer: &str) -> (usize, Launcher, ChildGuard, TempDir) {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = write_server(&dir);
    let args = [
        "--workers".to_string(),
        WORKERS.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--steer".to_string(),
        steer.to_string(),
        "--".to_string(),
        python3(),
        server.display().to_string(),
        port.to_string(),
    ];
    let launcher = Launcher::spawn_serving(&dir, &args, DEADLINE);
    let script = dir.join("stranger.py");
    std::fs::write(&script, STRANGER_PY).unwrap();
    let bound = dir.join("stranger.bound");
    let stranger = ChildGuard::spawn(
        Command::new(python3())
            .arg(&script)
            .arg(port.to_string())
            .arg(&bound),
    );
    assert!(
        wait_until(DEADLINE, || bound.exists()),
        "the stranger never bound"
    );
    // A reload changes the receiving set, after which the launcher looks at the port again.
    reload_and_wait(&launcher, WORKERS, 2, DEADLINE, || {});
    let mut by_stranger = 0;
    for n in 0..QUERIES {
        match query(addr, format!("q{n}").as_bytes(), QUERY_TIMEOUT) {
            Ok((STRANGER_GENERATION, _)) => by_stranger += 1,
            Ok(_) => {}
            Err(e) => panic!("{test}: query {n} lost: {e}"),
        }
    }
    (by_stranger, launcher, stranger, dir)
}

#[test]
fn stranger_udp_socket_on_the_port_is_named_and_gets_no_datagram() {
    private_netns(true);
    let started = Instant::now();
    let (by_stranger, launcher, stranger, _dir) = run("stranger_udp", "on");
    let named = format!("pid {} (", stranger.pid());
    assert!(
        launcher.wait_for_log(&named, DEADLINE),
        "the launcher does not name the stranger ({named}): {}",
        launcher.log_tail(20)
    );
    let lines = launcher.log_lines(&named);
    assert_eq!(
        lines.len(),
        1,
        "the stranger is named more than once: {lines:?}"
    );
    assert!(
        lines[0].contains("also has a UDP socket on port") && lines[0].contains("gets no datagram"),
        "the warning does not say what the stranger has and what it gets: {}",
        lines[0]
    );
    assert_eq!(
        by_stranger, 0,
        "the stranger answered {by_stranger} of {QUERIES} queries while the port is steered"
    );
    // Another reload: still not named twice, still nothing for the stranger.
    reload_and_wait(&launcher, WORKERS, 3, DEADLINE, || {});
    assert_eq!(launcher.log_lines(&named).len(), 1);
    eprintln!(
        "steered: the stranger answered 0 of {QUERIES}, in {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let (by_stranger, _launcher, _stranger, _dir) = run("stranger_udp_nosteer", "off");
    eprintln!(
        "--steer off: the stranger answered {by_stranger} of {QUERIES}, in {:?}",
        started.elapsed()
    );
    assert!(
        by_stranger > 0,
        "with --steer off the stranger answered none of {QUERIES} queries: the control shows nothing"
    );
}
