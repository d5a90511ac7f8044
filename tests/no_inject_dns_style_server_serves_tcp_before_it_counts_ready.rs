//! A DNS-style server run with `--no-inject` (it sets SO_REUSEPORT itself) binds UDP and TCP on one
//! port, then takes 600 ms before its TCP socket listens. The launcher finds its sockets in /proc, and
//! must not count it ready at the UDP bind: the moment generation 1 serves, a TCP connection is
//! accepted, and across reloads (each new generation as slow to listen) no TCP connection is refused
//! while every UDP query is answered.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::udp::{reloads_under_query_and_tcp_load, tcp_query, write_server};
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 2;
const START_DEADLINE: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after its bind the server's TCP socket listens.
const TCP_LISTEN_DELAY_SECS: &str = "0.6";

#[test]
fn no_inject_dns_style_server_serves_tcp_before_it_counts_ready() {
    private_netns(true);
    let dir = TempDir::new("no_inject_dns_style_server_serves_tcp_before_it_counts_ready");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = write_server(&dir);
    let args = [
        "--workers".to_string(),
        WORKERS.to_string(),
        "--no-inject".into(),
        "--ready".into(),
        "listen".into(),
        "--stop-timeout".into(),
        "10".into(),
        "--".into(),
        python3(),
        server.display().to_string(),
        port.to_string(),
        "tcp".into(),
        TCP_LISTEN_DELAY_SECS.into(),
        "--reuseport".into(),
    ];
    let launcher = Launcher::spawn_serving(&dir, &args, START_DEADLINE);
    // "generation 1 serving" is in the log: its TCP port must already listen.
    let first = tcp_query(addr, CONNECT_TIMEOUT);
    assert!(
        first.as_ref().is_ok_and(|&(generation, _)| generation == 1),
        "right after generation 1 was ready, TCP said {first:?}: the launcher counted the worker ready \
         at its UDP bind, before its TCP socket listened"
    );
    let load = reloads_under_query_and_tcp_load(&launcher, WORKERS, addr, RELOADS);
    eprintln!(
        "{RELOADS} reloads: {} TCP connections, {} failed; {} UDP queries, {} lost",
        load.connections,
        load.tcp_failed.len(),
        load.sent,
        load.lost.len()
    );
    assert!(
        load.connections > 20 && load.sent > 20,
        "too little load to say anything"
    );
    assert!(
        load.tcp_failed.is_empty(),
        "TCP connections failed across the reloads: {:?}",
        load.tcp_failed
    );
    assert!(
        load.lost.is_empty(),
        "UDP queries lost across the reloads: {:?}",
        load.lost
    );
}
