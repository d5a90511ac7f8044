//! TCP and UDP sockets of the launcher's network namespace, filtered by state in the kernel, through
//! NETLINK_SOCK_DIAG (inet_diag): a listener's accept queue and a drain's connection count cost one
//! small dump, however many TIME-WAIT sockets a busy port has (reading /proc/net/tcp walks them all).
//! Read-only; the callers decide what a row means.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_HEADER_BYTES: usize = 16;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states (u32), inet_diag_sockid (48 bytes).
const REQUEST_BYTES: usize = 56;
/// struct inet_diag_msg up to and including idiag_inode.
const MESSAGE_BYTES: usize = 72;
/// Offsets in inet_diag_msg: id.idiag_sport (big-endian), idiag_rqueue, idiag_inode.
const SPORT_AT: usize = 4;
const RQUEUE_AT: usize = 56;
const INODE_AT: usize = 68;
/// Receive buffer: the kernel fills it with as many messages as fit, then sends the rest.
const RECEIVE_BYTES: usize = 64 * 1024;

/// TCP states (include/net/tcp_states.h) as bits of inet_diag_req_v2.idiag_states.
pub const ESTABLISHED: u32 = 1 << 1;
pub const CLOSE_WAIT: u32 = 1 << 8;
pub const LISTEN: u32 = 1 << 10;
/// The state of a UDP socket that is bound and not connected (TCP_CLOSE): a server's socket.
pub const UNCONNECTED: u32 = 1 << 7;

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub local_port: u16,
    pub state: u8,
    pub inode: u64,
    /// For a listener: connections waiting in its accept queue.
    pub receive_queue: u32,
}

/// Every IPv4 and IPv6 TCP socket of this network namespace in one of `states` (a mask of the consts).
pub fn tcp_sockets(states: u32) -> io::Result<Vec<Socket>> {
    sockets(libc::IPPROTO_TCP as u8, states)
}

/// Every bound IPv4 and IPv6 UDP socket of this network namespace in one of `states` (UNCONNECTED
/// for servers' sockets; a UDP socket's state is TCP_CLOSE or, once connected, TCP_ESTABLISHED).
pub fn udp_sockets(states: u32) -> io::Result<Vec<Socket>> {
    sockets(libc::IPPROTO_UDP as u8, states)
}

fn sockets(protocol: u8, states: u32) -> io::Result<Vec<Socket>> {
    let mut found = dump(libc::AF_INET as u8, protocol, states)?;
    found.extend(dump(libc::AF_INET6 as u8, protocol, states)?);
    Ok(found)
}

fn dump(family: u8, protocol: u8, states: u32) -> io::Result<Vec<Socket>> {
    // SAFETY: socket(2) returns a new fd or -1; we own what it returns.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = encode_request(family, protocol, states);
    // SAFETY: send(2) reads `request.len()` bytes of the valid buffer; the kernel is the default peer of
    // an unbound netlink socket.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buffer = vec![0u8; RECEIVE_BYTES];
    let mut found = Vec::new();
    loop {
        // SAFETY: recv(2) writes at most `buffer.len()` bytes into the valid buffer.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if parse_messages(&buffer[..got as usize], &mut found)? {
            return Ok(found);
        }
    }
}

fn encode_request(family: u8, protocol: u8, states: u32) -> Vec<u8> {
    let length = (NLMSG_HEADER_BYTES + REQUEST_BYTES) as u32;
    let mut out = Vec::with_capacity(length as usize);
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&[0; 8]); // sequence number and port id: the kernel's defaults
    out.extend_from_slice(&[family, protocol, 0, 0]);
    out.extend_from_slice(&states.to_ne_bytes());
    out.resize(length as usize, 0); // inet_diag_sockid all zero: every socket
    out
}

/// Appends the sockets of one datagram of the dump; true once the dump is over.
fn parse_messages(mut data: &[u8], found: &mut Vec<Socket>) -> io::Result<bool> {
    while data.len() >= NLMSG_HEADER_BYTES {
        let length = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
        if length < NLMSG_HEADER_BYTES || length > data.len() {
            return Err(io::Error::other("sock_diag: truncated netlink message"));
        }
        let body = &data[NLMSG_HEADER_BYTES..length];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = body
                    .get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= MESSAGE_BYTES => found.push(Socket {
                local_port: u16::from_be_bytes([body[SPORT_AT], body[SPORT_AT + 1]]),
                state: body[1],
                inode: u64::from(u32::from_ne_bytes(
                    body[INODE_AT..INODE_AT + 4].try_into().unwrap(),
                )),
                receive_queue: u32::from_ne_bytes(
                    body[RQUEUE_AT..RQUEUE_AT + 4].try_into().unwrap(),
                ),
            }),
            _ => {}
        }
        // Messages are 4-byte aligned.
        let advance = length.div_ceil(4) * 4;
        data = &data[advance.min(data.len())..];
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_listener_and_its_queue_are_seen() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .unwrap()
            .ino();
        let _queued: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let listeners = tcp_sockets(LISTEN).unwrap();
        let mine = listeners
            .iter()
            .find(|s| s.local_port == port)
            .expect("the listener is in the dump");
        assert_eq!(mine.inode, inode);
        assert_eq!(mine.state, 10);
        assert_eq!(mine.receive_queue, 3);
        let open = tcp_sockets(ESTABLISHED).unwrap();
        assert!(open.iter().filter(|s| s.local_port == port).count() >= 3);
        assert!(open.iter().all(|s| s.state == 1));
    }

    #[test]
    fn a_bound_udp_socket_is_seen() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .unwrap()
            .ino();
        let bound = udp_sockets(UNCONNECTED).unwrap();
        let mine = bound
            .iter()
            .find(|s| s.local_port == port)
            .expect("the UDP socket is in the dump");
        assert_eq!(mine.inode, inode);
        assert!(tcp_sockets(LISTEN)
            .unwrap()
            .iter()
            .all(|s| s.inode != inode));
    }
}
