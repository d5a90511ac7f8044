//! Tests of probe routing (`start_probe`/`end_probe`) against the real kernel (root): a connection
//! from the probe's source port reaches the socket it names, receiving or not, and nothing else
//! changes.
use super::tests::{accept_counts, inode, receivers, skip_unless_root, steered_group, tcp_group};
use super::*;
use socket2::{Domain, SockAddr, Socket, Type};
use std::net::SocketAddr;

/// Probes per test: enough that a hash choosing among 3 sockets would miss the probed one by
/// chance with odds (2/3)^60 ≈ 3e-11 if routing did not work.
const PROBES: usize = 60;

/// A client socket bound to an ephemeral source port on the loopback of `addr`'s family.
fn probe_socket(addr: SocketAddr) -> (Socket, u16) {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    let mut local = addr;
    local.set_port(0);
    socket.bind(&SockAddr::from(local)).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

fn probes_reach_the_probed_socket(bind: &str) {
    let (addr, listeners) = tcp_group(bind, 3);
    let all: Vec<&Socket> = listeners.iter().collect();
    let mut group = steered_group(&all);
    group.set_receiving(&receivers(&all[..1])).unwrap();
    for i in 0..PROBES {
        // Alternate between a socket that receives and two that do not.
        let target = i % 3;
        let (client, port) = probe_socket(addr);
        group
            .start_probe(port, inode(all[target]), all[target].as_fd())
            .unwrap();
        client.connect(&SockAddr::from(addr)).unwrap();
        let mut expected = vec![0; 3];
        expected[target] = 1;
        assert_eq!(
            accept_counts(&all, 1),
            expected,
            "probe {i} to socket {target}"
        );
        group.end_probe(port).unwrap();
    }
    assert!(group.probing.is_empty());
    assert_eq!(
        group.slots.len(),
        1,
        "probed slots are emptied after the probe"
    );
    // Plain connections still go only to the receiver.
    let plain: Vec<_> = (0..PROBES)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    assert_eq!(accept_counts(&all, plain.len()), [PROBES, 0, 0]);
}

#[test]
fn a_probe_reaches_the_socket_it_names_over_ipv4() {
    if skip_unless_root("a_probe_reaches_the_socket_it_names_over_ipv4") {
        return;
    }
    probes_reach_the_probed_socket("127.0.0.1:0");
}

#[test]
fn a_probe_reaches_the_socket_it_names_over_ipv6() {
    if skip_unless_root("a_probe_reaches_the_socket_it_names_over_ipv6") {
        return;
    }
    probes_reach_the_probed_socket("[::1]:0");
}

#[test]
fn a_probe_reaches_a_starting_socket_while_nobody_receives() {
    if skip_unless_root("a_probe_reaches_a_starting_socket_while_nobody_receives") {
        return;
    }
    let (addr, listeners) = tcp_group("127.0.0.1:0", 2);
    let all: Vec<&Socket> = listeners.iter().collect();
    let mut group = steered_group(&all);
    for _ in 0..PROBES / 2 {
        let (client, port) = probe_socket(addr);
        group
            .start_probe(port, inode(all[1]), all[1].as_fd())
            .unwrap();
        client.connect(&SockAddr::from(addr)).unwrap();
        assert_eq!(accept_counts(&all, 1), [0, 1]);
        group.end_probe(port).unwrap();
    }
    assert!(group.slots.is_empty());
}

#[test]
fn a_probe_whose_socket_closed_falls_back_to_the_receivers() {
    if skip_unless_root("a_probe_whose_socket_closed_falls_back_to_the_receivers") {
        return;
    }
    let (addr, mut listeners) = tcp_group("127.0.0.1:0", 2);
    let mut group = {
        let all: Vec<&Socket> = listeners.iter().collect();
        let mut group = steered_group(&all);
        group.set_receiving(&receivers(&all[..1])).unwrap();
        group
    };
    let (client, port) = probe_socket(addr);
    group
        .start_probe(port, inode(&listeners[1]), listeners[1].as_fd())
        .unwrap();
    drop(listeners.pop());
    client.connect(&SockAddr::from(addr)).unwrap();
    let left: Vec<&Socket> = listeners.iter().collect();
    assert_eq!(accept_counts(&left, 1), [1]);
    group.end_probe(port).unwrap();
}
