//! A stateless UDP server whose sockets the launcher did not inject into reloads under query load
//! (3 reloads, a fresh client port per query, never retried) with no query lost, every pid replaced
//! and each generation answering, steered: no "unable to" and no "no listening socket found" in the
//! launcher's log. Five ways to run it, each with and without READY=1 where it applies:
//!
//! - `--no-inject`, a server that sets SO_REUSEPORT itself: the launcher finds its bound UDP socket
//!   in /proc, for `--ready listen` (the default `auto` of a server without sd_notify) and for
//!   steering; with READY=1 (sent right after the bind) the same socket is steered to;
//! - `--listen udp:127.0.0.1:PORT`, a server that takes fd 3 from LISTEN_FDS: the launcher binds a UDP
//!   socket with SO_REUSEPORT for every worker, and steers to it once the worker has settled, or once
//!   it sent READY=1;
//! - injected (a server that binds without SO_REUSEPORT) and sends READY=1 right after its bind, before
//!   the launcher's listening probe looks: its UDP socket is still steered to.
//!
//! Without steering the old generation is stopped while the kernel's hash still sends it datagrams
//! (see udp_queries_survive_reloads_with_steering.rs), so queries are lost: 0 lost needs the steering.

mod support;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::udp::reloads_under_query_load;
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 3;
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The tests share 2 cores with the python workers: one run at a time keeps the load comparable.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `python3 server.py MODE PORT [notify]`. MODE `reuseport`: binds 127.0.0.1:PORT with SO_REUSEPORT
/// set by itself; `listenfds`: takes its socket from fd 3 (LISTEN_FDS=1, LISTEN_PID its own pid) and
/// checks that it is a bound UDP socket; `plain`: binds without SO_REUSEPORT (the launcher injects
/// it). With `notify` it sends READY=1 right after. Answers each datagram with `gen-G-pid-P DATA`.
const SERVER: &str = r#"
import os, socket, sys
mode, port = sys.argv[1], int(sys.argv[2])
tag = ("gen-%s-pid-%d" % (os.environ["REUSEPORT_LAUNCH_GENERATION"], os.getpid())).encode()
if mode == "listenfds":
    assert os.environ["LISTEN_PID"] == str(os.getpid()), "LISTEN_PID is not mine"
    assert os.environ["LISTEN_FDS"] == "1", "LISTEN_FDS is not 1"
    udp = socket.socket(fileno=3)
    assert udp.type == socket.SOCK_DGRAM, "fd 3 is not a UDP socket"
    assert udp.getsockname()[1] == port, "fd 3 is not bound to the port"
else:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if mode == "reuseport":
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    udp.bind(("127.0.0.1", port))
if len(sys.argv) > 3 and sys.argv[3] == "notify":
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    data, peer = udp.recvfrom(2048)
    udp.sendto(tag + b" " + data, peer)
"#;

/// Runs WORKERS servers in `mode` with the launcher's `flags`, reloads RELOADS times under query load
/// and checks what the file's header says.
fn reloads_without_a_lost_query(test: &str, flags: &[&str], mode: &str, notify: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    private_netns(true);
    let started = Instant::now();
    let dir = TempDir::new(test);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = dir.join("udp-server.py");
    std::fs::write(&server, SERVER).unwrap();
    let listen = format!("udp:{addr}");
    let mut args: Vec<String> = ["--workers", &WORKERS.to_string(), "--steer", "on"]
        .iter()
        .chain(["--stop-timeout", "10", "-v"].iter())
        .map(|s| s.to_string())
        .collect();
    args.extend(flags.iter().map(|f| {
        if *f == "LISTEN" {
            listen.clone()
        } else {
            f.to_string()
        }
    }));
    args.extend([
        "--".to_string(),
        python3(),
        server.display().to_string(),
        mode.to_string(),
        port.to_string(),
    ]);
    if notify {
        args.push("notify".to_string());
    }
    let launcher = Launcher::spawn_serving(&dir, &args, START_DEADLINE);
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let load = reloads_under_query_load(&launcher, WORKERS, addr, RELOADS);
    eprintln!(
        "{test}: {} queries over {RELOADS} reloads, {} lost, in {:?}",
        load.sent,
        load.lost.len(),
        started.elapsed()
    );
    for needle in ["unable to", "no listening socket found"] {
        let lines = launcher.log_lines(needle);
        assert!(
            lines.is_empty(),
            "{test}: the launcher could not steer: {lines:?}"
        );
    }
    assert!(
        load.lost.is_empty(),
        "{test}: {} of {} queries lost: {:?}",
        load.lost.len(),
        load.sent,
        &load.lost[..load.lost.len().min(5)]
    );
    load.assert_every_generation_new_and_answering(test, WORKERS);
}

#[test]
fn no_inject_server_is_ready_at_its_own_reuseport_bind_and_steered() {
    reloads_without_a_lost_query("udp_no_inject", &["--no-inject"], "reuseport", false);
}

#[test]
fn no_inject_server_sending_ready_is_steered() {
    reloads_without_a_lost_query(
        "udp_no_inject_notify",
        &["--no-inject", "--ready", "notify"],
        "reuseport",
        true,
    );
}

#[test]
fn listen_udp_socket_is_passed_and_steered() {
    reloads_without_a_lost_query("udp_listen", &["--listen", "LISTEN"], "listenfds", false);
}

#[test]
fn listen_udp_server_sending_ready_is_steered() {
    reloads_without_a_lost_query(
        "udp_listen_notify",
        &["--listen", "LISTEN", "--ready", "notify"],
        "listenfds",
        true,
    );
}

#[test]
fn injected_server_sending_ready_at_bind_is_steered() {
    reloads_without_a_lost_query("udp_injected_notify", &["--ready", "notify"], "plain", true);
}
