//! Tests of group.rs against the real kernel (root): real sockets on 127.0.0.1 and ::1.
use super::super::queue::accept_queue_depth;
use super::*;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Loopback handshakes and datagrams arrive within microseconds; this bounds a broken test.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);
/// Enough connections that a uniform hash over 2 sockets misses one with odds 2^-199.
const CONNECTIONS: usize = 200;
/// Listen backlog: holds every test connection without accepting.
const BACKLOG: i32 = 1024;
const LOCALHOST_V4: &str = "127.0.0.1:0";
const LOCALHOST_V6: &str = "[::1]:0";

pub(super) fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipping {test}: loading BPF programs needs root (CAP_BPF, CAP_NET_ADMIN)");
    true
}

fn reuseport_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> Socket {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol)).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.bind(&SockAddr::from(addr)).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

fn tcp_listener(addr: SocketAddr) -> Socket {
    let socket = reuseport_socket(addr, Type::STREAM, Protocol::TCP);
    socket.listen(BACKLOG).unwrap();
    socket
}

/// `count` listeners on one port; the first picks the port.
pub(super) fn tcp_group(bind: &str, count: usize) -> (SocketAddr, Vec<Socket>) {
    let first = tcp_listener(bind.parse().unwrap());
    let addr = first.local_addr().unwrap().as_socket().unwrap();
    let mut all = vec![first];
    all.extend((1..count).map(|_| tcp_listener(addr)));
    (addr, all)
}

pub(super) fn inode(socket: &impl AsFd) -> u64 {
    let fd = socket.as_fd().as_raw_fd();
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .ino()
}

pub(super) fn receivers<'a>(sockets: &[&'a Socket]) -> Vec<(u64, BorrowedFd<'a>)> {
    sockets.iter().map(|&s| (inode(s), s.as_fd())).collect()
}

fn connect_all(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("connection {}/{count} to {addr} failed: {e}", i + 1))
        })
        .collect()
}

/// Accept from `listeners` until `expected` arrived in all (or the deadline); returns
/// how many each accepted.
pub(super) fn accept_counts(listeners: &[&Socket], expected: usize) -> Vec<usize> {
    let mut counts = vec![0; listeners.len()];
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while counts.iter().sum::<usize>() < expected && Instant::now() < deadline {
        for (listener, count) in listeners.iter().zip(counts.iter_mut()) {
            while listener.accept().is_ok() {
                *count += 1;
            }
        }
        wait_readable(listeners, Duration::from_millis(50));
    }
    counts
}

/// Block until one of `sockets` is readable or `timeout` passes.
fn wait_readable(sockets: &[&Socket], timeout: Duration) {
    let mut fds: Vec<PollFd> = sockets
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    let timeout = PollTimeout::try_from(timeout).unwrap();
    poll(&mut fds, timeout).unwrap();
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::yield_now();
    }
    condition()
}

pub(super) fn steered_group(sockets: &[&Socket]) -> SteeringGroup {
    let group = SteeringGroup::new().unwrap_or_else(|e| panic!("{e}"));
    group.attach(sockets[0].as_fd()).unwrap();
    group
}

#[test]
fn verifier_accepts_the_steering_program() {
    if skip_unless_root("verifier_accepts_the_steering_program") {
        return;
    }
    if let Err(e) = SteeringGroup::new() {
        panic!("{e}");
    }
    SteeringGroup::probe_support().unwrap_or_else(|e| panic!("{e}"));
    // The plain SELECT hook too (used below to show why we ask for MIGRATE).
    let layout = Layout {
        max_receivers: MAX_RECEIVERS,
    };
    SteeringGroup::with(layout, ReuseportAttach::Select, None).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_program_always_ends_in_sk_pass() {
    if skip_unless_root("the_program_always_ends_in_sk_pass") {
        return;
    }
    let layout = Layout {
        max_receivers: MAX_RECEIVERS,
    };
    let flows = super::super::flows::Flows::create(Duration::from_secs(30)).unwrap();
    for flows in [None, Some(&flows)] {
        let insns = steering_program(layout, &Maps::create(layout).unwrap(), flows).unwrap();
        eprintln!("steering program: {} instruction slots", insns.len());
        assert_eq!(
            insns[insns.len() - 2..],
            [Insn::mov64_imm(Reg::R0, SK_PASS), Insn::exit()]
        );
        let mov_imm = Insn::mov64_imm(Reg::R0, 0).code;
        let sets_r0 = |i: &&Insn| i.code == mov_imm && i.regs & 0x0f == Reg::R0 as u8;
        assert_eq!(
            insns.iter().filter(sets_r0).count(),
            1,
            "r0 is only ever set to SK_PASS"
        );
    }
}

#[test]
fn connections_go_only_to_the_receiving_listener() {
    if skip_unless_root("connections_go_only_to_the_receiving_listener") {
        return;
    }
    for bind in [LOCALHOST_V4, LOCALHOST_V6] {
        let (addr, listeners) = tcp_group(bind, 2);
        let (a, b) = (&listeners[0], &listeners[1]);
        let mut group = steered_group(&[a, b]);

        group.set_receiving(&receivers(&[a])).unwrap();
        let _clients = connect_all(addr, CONNECTIONS);
        assert_eq!(
            accept_counts(&[a, b], CONNECTIONS),
            [CONNECTIONS, 0],
            "{addr}, to a"
        );
        assert_eq!(accept_queue_depth(b.as_fd()).unwrap(), 0);

        group.set_receiving(&receivers(&[b])).unwrap();
        assert_eq!(group.receiving(), [inode(b)]);
        let _clients = connect_all(addr, CONNECTIONS);
        assert_eq!(
            accept_counts(&[a, b], CONNECTIONS),
            [0, CONNECTIONS],
            "{addr}, to b"
        );
    }
}

#[test]
fn a_listener_not_in_the_table_gets_nothing() {
    if skip_unless_root("a_listener_not_in_the_table_gets_nothing") {
        return;
    }
    let (addr, listeners) = tcp_group(LOCALHOST_V4, 3);
    let (a, b, stranger) = (&listeners[0], &listeners[1], &listeners[2]);
    let mut group = steered_group(&[a]);
    group.set_receiving(&receivers(&[a, b])).unwrap();
    let _clients = connect_all(addr, CONNECTIONS);
    let counts = accept_counts(&[a, b, stranger], CONNECTIONS);
    assert_eq!(counts[2], 0, "stranger got connections: {counts:?}");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "hash should spread over a and b: {counts:?}"
    );
}

#[test]
fn empty_receiving_set_passes_through_to_the_kernel_hash() {
    if skip_unless_root("empty_receiving_set_passes_through_to_the_kernel_hash") {
        return;
    }
    let (addr, listeners) = tcp_group(LOCALHOST_V4, 2);
    let (a, b) = (&listeners[0], &listeners[1]);
    let mut group = steered_group(&[a]);
    group.set_receiving(&receivers(&[a])).unwrap();
    group.set_receiving(&[]).unwrap();
    assert!(group.receiving().is_empty());
    assert!(
        group.maps.sockets.lookup_u64(0).unwrap().is_some(),
        "a's slot is kept until the next change: a program that read the old half may pick it"
    );
    group.set_receiving(&[]).unwrap();
    assert_eq!(
        group.maps.sockets.lookup_u64(0).unwrap(),
        None,
        "a's slot emptied at the next change"
    );
    let _clients = connect_all(addr, CONNECTIONS);
    let counts = accept_counts(&[a, b], CONNECTIONS);
    assert_eq!(counts.iter().sum::<usize>(), CONNECTIONS);
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "kernel hash should spread: {counts:?}"
    );
}

#[test]
fn a_closed_receiver_is_skipped_without_refusing_anyone() {
    if skip_unless_root("a_closed_receiver_is_skipped_without_refusing_anyone") {
        return;
    }
    // The stranger is in the group but not the table: if the program fell back to the
    // kernel hash instead of retrying the next entry, it would get connections.
    let (addr, mut listeners) = tcp_group(LOCALHOST_V4, 3);
    let mut group = steered_group(&[&listeners[0]]);
    let all: Vec<&Socket> = listeners.iter().collect();
    group.set_receiving(&receivers(&all[..2])).unwrap();
    let a_slot = group.slots[&inode(&listeners[0])];
    assert!(group.maps.sockets.lookup_u64(a_slot).unwrap().is_some());

    drop(listeners.remove(0)); // close a
    assert_eq!(
        group.maps.sockets.lookup_u64(a_slot).unwrap(),
        None,
        "kernel emptied a's slot"
    );
    assert_eq!(
        group.receiving().len(),
        2,
        "the table still names a until told otherwise"
    );

    let (b, stranger) = (&listeners[0], &listeners[1]);
    let _clients = connect_all(addr, CONNECTIONS);
    assert_eq!(accept_counts(&[b, stranger], CONNECTIONS), [CONNECTIONS, 0]);

    // Forgetting a's already-empty slot is fine.
    group.set_receiving(&receivers(&[b])).unwrap();
    assert_eq!(group.receiving(), [inode(b)]);
}

#[test]
fn udp_datagrams_are_steered() {
    if skip_unless_root("udp_datagrams_are_steered") {
        return;
    }
    let udp = |addr| reuseport_socket(addr, Type::DGRAM, Protocol::UDP);
    let a = udp(LOCALHOST_V4.parse().unwrap());
    let addr = a.local_addr().unwrap().as_socket().unwrap();
    let b = udp(addr);
    let mut group = steered_group(&[&a]);
    group.set_receiving(&receivers(&[&a])).unwrap();

    // One sender socket per datagram, so each has its own source port and hash.
    for _ in 0..CONNECTIONS {
        let sender = UdpSocket::bind(LOCALHOST_V4).unwrap();
        sender.send_to(b"hello", addr).unwrap();
    }
    let mut counts = [0usize; 2];
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
    while counts.iter().sum::<usize>() < CONNECTIONS && Instant::now() < deadline {
        for (socket, count) in [&a, &b].iter().zip(counts.iter_mut()) {
            while socket.recv(&mut buf).is_ok() {
                *count += 1;
            }
        }
        wait_readable(&[&a, &b], Duration::from_millis(50));
    }
    assert_eq!(counts, [CONNECTIONS, 0]);
}

#[test]
fn queued_connections_move_to_a_receiver_when_their_listener_closes() {
    if skip_unless_root("queued_connections_move_to_a_receiver_when_their_listener_closes") {
        return;
    }
    let queued = 5;
    eprintln!("net.ipv4.tcp_migrate_req = {}", migrate_req_sysctl());
    let (addr, mut listeners) = tcp_group(LOCALHOST_V4, 2);
    let mut group = steered_group(&[&listeners[0]]);
    group.set_receiving(&receivers(&[&listeners[0]])).unwrap();
    let mut clients = connect_all(addr, queued);
    let a_depth = || accept_queue_depth(listeners[0].as_fd()).unwrap() as usize;
    assert!(
        wait_until(|| a_depth() == queued),
        "a has {} queued",
        a_depth()
    );

    group.set_receiving(&receivers(&[&listeners[1]])).unwrap();
    drop(listeners.remove(0)); // close a with its queue full
    let b = &listeners[0];
    let accepted = accept_all(b, queued);
    assert_eq!(accepted.len(), queued, "all of a's queue should move to b");
    for (client, mut server) in clients.iter_mut().zip(accepted) {
        client.write_all(b"ping").unwrap();
        server.set_nonblocking(false).unwrap();
        server.set_read_timeout(Some(DELIVERY_DEADLINE)).unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
}

#[test]
fn without_the_migrate_hook_queued_connections_are_reset() {
    if skip_unless_root("without_the_migrate_hook_queued_connections_are_reset") {
        return;
    }
    if migrate_req_sysctl() != "0" {
        eprintln!("skipping: net.ipv4.tcp_migrate_req is not 0, so the kernel migrates anyway");
        return;
    }
    let queued = 5;
    let (addr, mut listeners) = tcp_group(LOCALHOST_V4, 2);
    let layout = Layout {
        max_receivers: MAX_RECEIVERS,
    };
    let mut group = SteeringGroup::with(layout, ReuseportAttach::Select, None).unwrap();
    group.attach(listeners[0].as_fd()).unwrap();
    group.set_receiving(&receivers(&[&listeners[0]])).unwrap();
    let mut clients = connect_all(addr, queued);
    let a_depth = || accept_queue_depth(listeners[0].as_fd()).unwrap() as usize;
    assert!(
        wait_until(|| a_depth() == queued),
        "a has {} queued",
        a_depth()
    );

    group.set_receiving(&receivers(&[&listeners[1]])).unwrap();
    drop(listeners.remove(0));
    assert_eq!(accept_queue_depth(listeners[0].as_fd()).unwrap(), 0);
    for client in &mut clients {
        client.set_read_timeout(Some(DELIVERY_DEADLINE)).unwrap();
        let err = client.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }
}

fn accept_all(listener: &Socket, expected: usize) -> Vec<TcpStream> {
    let mut accepted = Vec::new();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while accepted.len() < expected && Instant::now() < deadline {
        while let Ok((socket, _)) = listener.accept() {
            accepted.push(TcpStream::from(socket));
        }
        wait_readable(&[listener], Duration::from_millis(50));
    }
    accepted
}

fn migrate_req_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

#[test]
fn a_socket_in_another_groups_map_is_refused_by_id() {
    if skip_unless_root("a_socket_in_another_groups_map_is_refused_by_id") {
        return;
    }
    let (_, listeners) = tcp_group(LOCALHOST_V4, 1);
    let a = &listeners[0];
    let mut first = SteeringGroup::new().unwrap();
    let mut second = SteeringGroup::new().unwrap();
    first.set_receiving(&receivers(&[a])).unwrap();
    let err = second.set_receiving(&receivers(&[a])).unwrap_err();
    assert!(
        matches!(err, SteerError::SocketRefused { id, errno: Errno::EBUSY } if id == inode(a)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("socket {}", inode(a))),
        "{err}"
    );
    assert!(second.receiving().is_empty());
    // Once the first group lets go (its slot is emptied at the change after the one that dropped
    // it), the second may take it.
    first.set_receiving(&[]).unwrap();
    first.set_receiving(&[]).unwrap();
    second.set_receiving(&receivers(&[a])).unwrap();
}

#[test]
fn a_socket_that_is_not_listening_is_refused_by_id() {
    if skip_unless_root("a_socket_that_is_not_listening_is_refused_by_id") {
        return;
    }
    let bound_only = reuseport_socket(LOCALHOST_V4.parse().unwrap(), Type::STREAM, Protocol::TCP);
    let mut group = SteeringGroup::new().unwrap();
    let err = group.set_receiving(&receivers(&[&bound_only])).unwrap_err();
    assert!(
        matches!(
            err,
            SteerError::SocketRefused {
                errno: Errno::EINVAL,
                ..
            }
        ),
        "{err:?}"
    );
    eprintln!("{err}");
    assert_eq!(
        group.free_slots.len() as u32,
        Layout {
            max_receivers: MAX_RECEIVERS
        }
        .socket_slots()
    );
}

#[test]
fn setting_the_same_receivers_again_keeps_their_slots() {
    if skip_unless_root("setting_the_same_receivers_again_keeps_their_slots") {
        return;
    }
    let (_, listeners) = tcp_group(LOCALHOST_V4, 2);
    let all: Vec<&Socket> = listeners.iter().collect();
    let mut group = steered_group(&all);
    group.set_receiving(&receivers(&all)).unwrap();
    let slots_before = group.slots.clone();
    group.set_receiving(&receivers(&all)).unwrap();
    group
        .set_receiving(&receivers(&[all[1], all[0], all[1]]))
        .unwrap();
    assert_eq!(group.slots, slots_before);
    assert_eq!(group.receiving(), [inode(all[1]), inode(all[0])]);
}

#[test]
fn dropping_a_group_releases_its_sockets() {
    if skip_unless_root("dropping_a_group_releases_its_sockets") {
        return;
    }
    let (addr, listeners) = tcp_group(LOCALHOST_V4, 2);
    let (a, b) = (&listeners[0], &listeners[1]);
    let mut first = steered_group(&[a]);
    first.set_receiving(&receivers(&[a])).unwrap();
    drop(first); // its program stays attached to the group
    let _clients = connect_all(addr, CONNECTIONS);
    let counts = accept_counts(&[a, b], CONNECTIONS);
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "left-behind program passes: {counts:?}"
    );

    let mut second = steered_group(&[a]);
    second.set_receiving(&receivers(&[b])).unwrap();
    let _clients = connect_all(addr, CONNECTIONS);
    assert_eq!(accept_counts(&[a, b], CONNECTIONS), [0, CONNECTIONS]);
}

#[test]
fn a_regrown_group_needs_attaching_again() {
    if skip_unless_root("a_regrown_group_needs_attaching_again") {
        return;
    }
    let mut group = SteeringGroup::new().unwrap();
    let (addr, listeners) = tcp_group(LOCALHOST_V4, 2);
    group.attach(listeners[0].as_fd()).unwrap();
    group.set_receiving(&receivers(&[&listeners[0]])).unwrap();
    drop(listeners); // the group and its program are gone

    let regrown: Vec<Socket> = (0..2).map(|_| tcp_listener(addr)).collect();
    let (c, d) = (&regrown[0], &regrown[1]);
    group.set_receiving(&receivers(&[c])).unwrap();
    let _clients = connect_all(addr, CONNECTIONS);
    let counts = accept_counts(&[c, d], CONNECTIONS);
    assert!(counts[1] > 0, "no program yet, kernel hash: {counts:?}");

    group.attach(d.as_fd()).unwrap(); // any member will do
    let _clients = connect_all(addr, CONNECTIONS);
    assert_eq!(accept_counts(&[c, d], CONNECTIONS), [CONNECTIONS, 0]);
}

#[test]
fn attaching_before_bind_blocks_joining_an_existing_group() {
    if skip_unless_root("attaching_before_bind_blocks_joining_an_existing_group") {
        return;
    }
    let (addr, _listeners) = tcp_group(LOCALHOST_V4, 1);
    let group = SteeringGroup::new().unwrap();
    let early = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    early.set_reuse_port(true).unwrap();
    group.attach(early.as_fd()).unwrap(); // accepted: the socket gets a private group
    let err = early.bind(&SockAddr::from(addr)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
}

#[test]
fn attaching_before_bind_on_a_fresh_port_steers_the_group_it_starts() {
    if skip_unless_root("attaching_before_bind_on_a_fresh_port_steers_the_group_it_starts") {
        return;
    }
    let mut group = SteeringGroup::new().unwrap();
    let first = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    first.set_reuse_port(true).unwrap();
    first.set_nonblocking(true).unwrap();
    group.attach(first.as_fd()).unwrap();
    first
        .bind(&SockAddr::from(LOCALHOST_V4.parse::<SocketAddr>().unwrap()))
        .unwrap();
    first.listen(BACKLOG).unwrap();
    let addr = first.local_addr().unwrap().as_socket().unwrap();
    let second = tcp_listener(addr);
    group.set_receiving(&receivers(&[&second])).unwrap();
    let _clients = connect_all(addr, CONNECTIONS);
    let counts = accept_counts(&[&first, &second], CONNECTIONS);
    eprintln!("attach-before-bind on a fresh port: {counts:?}");
    assert_eq!(counts, [0, CONNECTIONS]);
}
