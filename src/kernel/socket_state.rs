//! What a copy of a worker's socket says about the worker serving: a TCP listener, a bound UDP socket,
//! or a TCP socket bound to a port that does not listen yet (read-only: getsockopt, getsockname,
//! getpeername); and taking a worker's listeners out of their groups (`shut_listeners`). A copy taken
//! with pidfd_getfd answers for, and acts on, the worker's socket itself.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use log::warn;
use nix::sys::socket::{getsockopt, shutdown, sockopt, Shutdown, SockType};
use nix::sys::stat::fstat;
use nix::unistd::Pid;
use socket2::SockRef;

/// How long a starting worker's sockets must have stayed as they are (no new bind, no new listener)
/// before it counts as ready: a server binds and listens on its sockets one after the other (IPv4
/// then IPv6, one port then the next), and the readiness look must not fall between two of them, or
/// the later socket would be neither waited for nor steered. They come microseconds apart.
pub const SETTLE: Duration = Duration::from_millis(25);

/// A TCP socket in LISTEN state.
pub fn is_listening(socket: &OwnedFd) -> bool {
    getsockopt(socket, sockopt::AcceptConn).unwrap_or(false)
}

pub fn is_datagram(socket: &OwnedFd) -> bool {
    getsockopt(socket, sockopt::SockType).is_ok_and(|t| t == SockType::Datagram)
}

/// The port the socket is bound to; None while it is unbound (a copy taken before its bind ran).
pub fn local_port(socket: &OwnedFd) -> Option<u16> {
    let address = SockRef::from(socket).local_addr().ok()?.as_socket()?;
    Some(address.port()).filter(|&p| p != 0)
}

/// A UDP socket bound to a port.
pub fn is_bound_udp(socket: &OwnedFd) -> bool {
    is_datagram(socket) && local_port(socket).is_some()
}

/// A socket that receives: a TCP listener or a bound UDP socket.
pub fn is_serving(socket: &OwnedFd) -> bool {
    is_listening(socket) || is_bound_udp(socket)
}

/// A TCP socket bound to a port that neither listens nor is connected: a server about to listen on
/// it (its second port, or its IPv6 socket beside the IPv4 one), which refuses connections until then.
pub fn waits_to_listen(socket: &OwnedFd) -> bool {
    getsockopt(socket, sockopt::SockType).is_ok_and(|t| t == SockType::Stream)
        && !is_listening(socket)
        && local_port(socket).is_some()
        && SockRef::from(socket).peer_addr().is_err()
}

/// The socket's inode: what /proc/<pid>/fd shows as `socket:[inode]`.
pub fn inode(socket: &OwnedFd) -> Option<u64> {
    fstat(socket.as_fd().as_raw_fd()).ok().map(|s| s.st_ino)
}

/// Takes `worker`'s TCP listeners among `copies` out of their ports' groups (shutdown on a listener
/// stops it for the worker's fd too; with net.ipv4.tcp_migrate_req=1 or steering its queued
/// connections move to the other listeners) and lets go of every copy; the ports shut go to `ports`.
/// The copies of UDP sockets are only let go of: shutdown(2) does not take a UDP socket out of its
/// group, and a copy kept would hold the socket in the group, receiving, after the worker has exited.
/// False when `copies` held no listener.
pub fn shut_listeners(worker: Pid, copies: &mut Vec<OwnedFd>, ports: &mut Vec<u16>) -> bool {
    copies.retain(is_listening);
    if copies.is_empty() {
        return false;
    }
    for copy in copies.drain(..) {
        ports.extend(local_port(&copy));
        if let Err(e) = shutdown(copy.as_raw_fd(), Shutdown::Both) {
            warn!("worker pid {worker}: unable to close its listener: {e}");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

    fn bound_tcp() -> OwnedFd {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        OwnedFd::from(socket)
    }

    #[test]
    fn a_bound_tcp_socket_waits_to_listen_until_it_listens_and_a_connected_one_does_not() {
        let bound = bound_tcp();
        assert!(waits_to_listen(&bound) && !is_serving(&bound));
        nix::sys::socket::listen(&bound, nix::sys::socket::Backlog::new(8).unwrap()).unwrap();
        assert!(!waits_to_listen(&bound) && is_serving(&bound));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = OwnedFd::from(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        assert!(!waits_to_listen(&client) && !is_serving(&client));
        let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map(OwnedFd::from)
            .unwrap();
        assert!(!waits_to_listen(&unbound));
    }

    #[test]
    fn a_bound_udp_socket_serves_and_never_waits_to_listen() {
        let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        assert!(is_serving(&udp) && !waits_to_listen(&udp));
        assert!(inode(&udp).is_some_and(|i| i > 0));
    }
}
