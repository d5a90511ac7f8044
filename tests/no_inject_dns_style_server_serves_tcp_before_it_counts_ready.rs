//! A DNS-style server run with `--no-inject` (it sets SO_REUSEPORT itself) binds UDP and TCP on one
//! port, then takes 600 ms before its TCP socket listens. The launcher finds its sockets in /proc, and
//! must not count it ready at the UDP bind: the moment generation 1 serves, a TCP connection is
//! accepted, and across reloads (each new generation as slow to listen) no TCP connection is refused
//! while every UDP query is answered.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::launcher::reload_and_wait;
use support::udp::query;
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 2;
const START_DEADLINE: Duration = Duration::from_secs(20);
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds the client loops whatever happens (they stop when the reloads are done).
const LOAD_DEADLINE: Duration = Duration::from_secs(60);

/// `python3 server.py PORT`: UDP and TCP on 127.0.0.1:PORT, both with SO_REUSEPORT; the TCP socket is
/// bound at once but listens only 600 ms later. Answers datagrams and connections with its tag.
const SERVER: &str = r#"
import os, socket, sys, threading, time
port = int(sys.argv[1])
tag = ("gen-%s-pid-%d" % (os.environ["REUSEPORT_LAUNCH_GENERATION"], os.getpid())).encode()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
udp.bind(("127.0.0.1", port))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
tcp.bind(("127.0.0.1", port))
time.sleep(0.6)
tcp.listen(128)
def serve_tcp():
    while True:
        conn, _ = tcp.accept()
        conn.sendall(tag)
        conn.close()
threading.Thread(target=serve_tcp, daemon=True).start()
while True:
    data, peer = udp.recvfrom(2048)
    udp.sendto(tag + b" " + data, peer)
"#;

/// One TCP exchange: Ok(tag) or the error (a refusal is `ConnectionRefused`).
fn tcp_tag(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut tag = String::new();
    stream.read_to_string(&mut tag)?;
    Ok(tag)
}

#[test]
fn no_inject_dns_style_server_serves_tcp_before_it_counts_ready() {
    private_netns(true);
    let dir = TempDir::new("no_inject_dns_style_server_serves_tcp_before_it_counts_ready");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = dir.join("dns-style-server.py");
    std::fs::write(&server, SERVER).unwrap();
    let workers = WORKERS.to_string();
    let port_text = port.to_string();
    let server_text = server.display().to_string();
    let python = python3();
    let launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers",
            workers.as_str(),
            "--no-inject",
            "--ready",
            "listen",
            "--stop-timeout",
            "10",
            "--",
            python.as_str(),
            server_text.as_str(),
            port_text.as_str(),
        ],
        START_DEADLINE,
    );
    // "generation 1 serving" is in the log: its TCP port must already listen.
    let first = tcp_tag(addr);
    assert!(
        first.as_ref().is_ok_and(|t| t.starts_with("gen-1-")),
        "right after generation 1 was ready, TCP said {first:?}: the launcher counted the worker ready \
         at its UDP bind, before its TCP socket listened"
    );
    let stop = AtomicBool::new(false);
    let give_up = Instant::now() + LOAD_DEADLINE;
    let running = || !stop.load(Ordering::SeqCst) && Instant::now() < give_up;
    let (connects, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    let (queries, lost) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while running() {
                connects.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = tcp_tag(addr) {
                    eprintln!("TCP: {e}");
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        s.spawn(|| {
            for n in 0.. {
                if !running() {
                    break;
                }
                queries.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = query(addr, format!("q{n}").as_bytes(), QUERY_TIMEOUT) {
                    eprintln!("UDP: {e}");
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // A failed reload must stop the client loops too: its panic goes on after they ended.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for generation in 2..=RELOADS + 1 {
                reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
            }
        }));
        stop.store(true, Ordering::SeqCst);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    let (connects, refused) = (connects.into_inner(), refused.into_inner());
    let (queries, lost) = (queries.into_inner(), lost.into_inner());
    eprintln!(
        "{RELOADS} reloads: {connects} TCP connections, {refused} failed; {queries} UDP queries, {lost} lost"
    );
    assert!(
        connects > 20 && queries > 20,
        "too little load to say anything"
    );
    assert_eq!(refused, 0, "TCP connections failed across the reloads");
    assert_eq!(lost, 0, "UDP queries lost across the reloads");
}
