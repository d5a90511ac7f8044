//! Tests of UDP flows (`with_flows`, `keep`, `flow_last_seen`) against the real kernel (root): a
//! flow stays with the socket it was placed on after that socket stops receiving, a new flow goes
//! to the receivers, and an idle flow moves.
use super::tests::{inode, receivers, skip_unless_root};
use super::*;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Loopback datagrams arrive within microseconds; this bounds a broken test.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);
/// Datagrams per check: a hash over 2 sockets would send all of them to one with odds 2^-39.
const DATAGRAMS: usize = 40;

fn udp(addr: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.bind(&SockAddr::from(addr)).unwrap();
    socket.set_read_timeout(Some(DELIVERY_DEADLINE)).unwrap();
    socket
}

/// Sends one datagram from `client` and says which of `sockets` received it.
fn lands_on(client: &UdpSocket, to: SocketAddr, sockets: &[&Socket]) -> usize {
    client.send_to(b"x", to).unwrap();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8];
    loop {
        for (i, s) in sockets.iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            if s.recv(&mut buf).is_ok() {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "the datagram reached no socket");
        std::thread::yield_now();
    }
}

#[test]
fn verifier_accepts_the_flow_program() {
    if skip_unless_root("verifier_accepts_the_flow_program") {
        return;
    }
    let group = SteeringGroup::with_flows(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", e.verifier_log().unwrap_or("")));
    assert!(group.has_flows());
}

#[test]
fn a_flow_stays_with_its_socket_until_idle() {
    if skip_unless_root("a_flow_stays_with_its_socket_until_idle") {
        return;
    }
    let idle = Duration::from_millis(300);
    let a = udp("127.0.0.1:0".parse().unwrap());
    let addr = a.local_addr().unwrap().as_socket().unwrap();
    let b = udp(addr);
    let mut group = SteeringGroup::with_flows(idle).unwrap_or_else(|e| panic!("{e}"));
    group.attach(a.as_fd()).unwrap();
    group.set_receiving(&receivers(&[&a])).unwrap();
    let session = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(lands_on(&session, addr, &[&a, &b]), 0);
    let before = group.flow_last_seen(&[inode(&a)]).unwrap();
    assert!(before.is_some(), "the session's flow is recorded on a");

    // a steps out, kept for its flows: the session stays, new flows go to b.
    group.keep(&receivers(&[&a])).unwrap();
    group.set_receiving(&receivers(&[&b])).unwrap();
    for _ in 0..DATAGRAMS {
        assert_eq!(lands_on(&session, addr, &[&a, &b]), 0, "the session moved");
        let fresh = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(lands_on(&fresh, addr, &[&a, &b]), 1, "a new flow went to a");
    }
    assert!(group.flow_last_seen(&[inode(&a)]).unwrap() > before);

    // After an idle gap longer than `idle` the session is a new flow: it goes to b.
    let quiet_since = Instant::now();
    while quiet_since.elapsed() <= idle + Duration::from_millis(50) {
        std::thread::yield_now();
    }
    assert_eq!(
        lands_on(&session, addr, &[&a, &b]),
        1,
        "the idle session stayed"
    );
    assert_eq!(lands_on(&session, addr, &[&a, &b]), 1);
}
