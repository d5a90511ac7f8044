//! A listener's accept queue: how many connections wait in it, read from TCP_INFO, and how many it
//! may hold (the listen backlog), which the launcher raises for servers that ask for a tiny one; and
//! whether a UDP socket has a datagram waiting in its receive queue.
//! Invariant: any copy of a listener's fd (e.g. one taken with pidfd_getfd) acts on the socket itself.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

/// `tcpi_state` of a listening socket (TCP_LISTEN in include/net/tcp_states.h).
const TCP_LISTEN: u8 = 10;

/// The first fields of `struct tcp_info` (include/uapi/linux/tcp.h); the kernel copies
/// `min(len, sizeof)` bytes, so asking for a prefix is allowed and version-proof.
#[repr(C)]
#[derive(Default)]
struct TcpInfoPrefix {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    rate_flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    /// For a listener: connections established and waiting for accept() (sk_ack_backlog).
    unacked: u32,
    /// For a listener: the backlog passed to listen() (sk_max_ack_backlog).
    sacked: u32,
}

/// Connections that finished the handshake and wait for `accept()` on `listener`.
pub fn accept_queue_depth(listener: BorrowedFd<'_>) -> io::Result<u32> {
    let info = tcp_info(listener)?;
    if info.state != TCP_LISTEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket fd {} is not a listening TCP socket (tcp state {}), so it has no accept queue",
                listener.as_raw_fd(),
                info.state
            ),
        ));
    }
    Ok(info.unacked)
}

/// What waits on `socket`: for a TCP listener the connections in its accept queue; for a UDP socket
/// 1 when a datagram waits in its receive queue, else 0 (peeked without taking it: MSG_PEEK into an
/// empty buffer also sees a zero-length datagram, which FIONREAD would report as 0 bytes).
pub fn waiting(socket: BorrowedFd<'_>) -> io::Result<u32> {
    if socket2::SockRef::from(&socket).r#type()? != socket2::Type::DGRAM {
        return accept_queue_depth(socket);
    }
    // SAFETY: recv(2) into an empty buffer writes nothing; MSG_PEEK leaves the datagram queued.
    let got = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if got >= 0 {
        return Ok(1);
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        e => Err(e),
    }
}

/// Raises the listen backlog of `listener` to `at_least` when it is smaller (listen(2) again on a
/// listening socket only changes its backlog); returns the backlog it had, None when it was enough.
/// A server's tiny backlog (python's socketserver asks for 5) makes the kernel drop SYNs when all new
/// connections move to a just-started generation at once; clients then wait a 1 s SYN retransmit.
pub fn raise_backlog(listener: BorrowedFd<'_>, at_least: u32) -> io::Result<Option<u32>> {
    let info = tcp_info(listener)?;
    if info.state != TCP_LISTEN || info.sacked >= at_least {
        return Ok(None);
    }
    // SAFETY: listen(2) on a descriptor we own a copy of; it touches no memory of ours.
    if unsafe { libc::listen(listener.as_raw_fd(), at_least as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(info.sacked))
}

fn tcp_info(socket: BorrowedFd<'_>) -> io::Result<TcpInfoPrefix> {
    let mut info = TcpInfoPrefix::default();
    let mut len = size_of::<TcpInfoPrefix>() as libc::socklen_t;
    // SAFETY: `info` is a live #[repr(C)] buffer of `len` bytes; the kernel writes at most
    // `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut TcpInfoPrefix as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    /// Loopback handshakes finish within microseconds; this bounds a broken test.
    const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

    fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + HANDSHAKE_DEADLINE;
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::yield_now();
        }
        condition()
    }

    #[test]
    fn counts_connections_not_yet_accepted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(accept_queue_depth(listener.as_fd()).unwrap(), 0);
        let _clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let depth = || accept_queue_depth(listener.as_fd()).unwrap();
        assert!(wait_until(|| depth() == 5), "queue depth {} != 5", depth());
        let _first = listener.accept().unwrap();
        assert_eq!(depth(), 4);
    }

    #[test]
    fn a_udp_socket_waits_while_a_datagram_is_queued() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(waiting(server.as_fd()).unwrap(), 0);
        client.send_to(b"", server.local_addr().unwrap()).unwrap();
        client
            .send_to(b"two", server.local_addr().unwrap())
            .unwrap();
        assert!(wait_until(|| waiting(server.as_fd()).unwrap() == 1));
        let mut buffer = [0u8; 8];
        assert_eq!(server.recv(&mut buffer).unwrap(), 0, "peeking took nothing");
        assert_eq!(waiting(server.as_fd()).unwrap(), 1);
        assert_eq!(server.recv(&mut buffer).unwrap(), 3);
        assert_eq!(waiting(server.as_fd()).unwrap(), 0);
    }

    #[test]
    fn a_connected_socket_is_not_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let err = accept_queue_depth(client.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("not a listening TCP socket"),
            "{err}"
        );
    }
}
