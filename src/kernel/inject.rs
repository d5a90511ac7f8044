//! SO_REUSEPORT injection for servers that never set it, static binaries included. Before exec, a
//! worker installs a seccomp filter that turns its bind(2) calls into user notifications and hands the
//! notification fd to the launcher over a socketpair. For each bind of a TCP/UDP socket the launcher
//! reads the address (process_vm_readv), takes a copy of the socket (pidfd_getfd), sets SO_REUSEPORT on
//! it and lets the real bind run (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Every error fails open: the bind
//! runs unchanged and the reason is logged. Copies of the sockets the worker binds until it is ready
//! are kept (it serves, the `listen` readiness signal, once a TCP socket listens or a UDP socket is
//! bound, no other TCP socket it bound to a port waits to listen and it bound nothing for 25 ms; a
//! listen backlog below 1024 is then raised to 1024); from then on only those that serve, and never
//! after the worker is gone.

use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use log::{debug, warn};
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::unistd::Pid;

use super::pidfd;
use super::process_tree;
use super::socket_fds;
use super::socket_state::{self, is_listening, is_serving, waits_to_listen, SETTLE};
use super::steering::queue;

/// The architecture whose syscall numbers the filter checks; other ABIs (i386, x32) bind unchanged.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
/// Most bytes of a sockaddr read from a worker: sockaddr_in6 is 28; anything longer is not inet.
const MAX_SOCKADDR: usize = 128;
/// Notifications handled per wake-up and worker, so one busy worker cannot starve the loop.
const MAX_BINDS_PER_DRAIN: usize = 64;
/// The smallest listen backlog an injected listener keeps: the launcher's own `--listen` sockets use
/// the same, and the kernel caps it at net.core.somaxconn.
const MIN_LISTEN_BACKLOG: u32 = 1024;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// bind(2) -> user notification; everything else, and other architectures, -> allow.
const FILTER: [libc::sock_filter; 6] = [
    libc::sock_filter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: SECCOMP_DATA_ARCH,
    },
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt: 0,
        jf: 3,
        k: AUDIT_ARCH,
    },
    libc::sock_filter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: SECCOMP_DATA_NR,
    },
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt: 0,
        jf: 1,
        k: libc::SYS_bind as u32,
    },
    libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_USER_NOTIF,
    },
    libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    },
];

/// Checks, once at start, that this kernel can do injection; the error names what is missing.
pub fn check_kernel_support() -> Result<(), String> {
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    if !actions.split_whitespace().any(|a| a == "user_notif") {
        return Err("this kernel has no seccomp user notification (Linux 5.0+ with CONFIG_SECCOMP_FILTER), \
                    which SO_REUSEPORT injection needs (minimum kernel 5.6)"
            .into());
    }
    // SAFETY: pidfd_getfd with an invalid pidfd only returns an error: EBADF where it exists, ENOSYS where not.
    let probe = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    if probe == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        return Err("this kernel has no pidfd_getfd(2), which SO_REUSEPORT injection needs (minimum kernel 5.6)".into());
    }
    Ok(())
}

/// The two ends of the socketpair that carries the notification fd from a new worker to the launcher.
pub struct Channel {
    launcher_end: OwnedFd,
    worker_end: OwnedFd,
}

impl Channel {
    pub fn new() -> io::Result<Channel> {
        let (launcher_end, worker_end) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok(Channel {
            launcher_end,
            worker_end,
        })
    }

    /// The raw fd the worker uses between fork and exec.
    pub fn worker_fd(&self) -> RawFd {
        self.worker_end.as_raw_fd()
    }

    /// After the worker has exec'd: the notification fd it sent, or why there is none.
    pub fn receive(self) -> Result<OwnedFd, String> {
        drop(self.worker_end);
        let mut status = [0u8; 4];
        let mut iov = [IoSliceMut::new(&mut status)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = socket::recvmsg::<()>(
            self.launcher_end.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("no answer from the worker's seccomp set-up: {e}"))?;
        let fd = msg
            .cmsgs()
            .ok()
            .into_iter()
            .flatten()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            });
        let errno = i32::from_ne_bytes(status);
        match fd {
            // SAFETY: the kernel just installed this fd in our table for us; nothing else owns it.
            Some(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            None if errno == libc::EBUSY => Err(
                "the server installs a seccomp notify filter of its own (EBUSY); \
                                                 use --no-inject"
                    .into(),
            ),
            None => Err(format!(
                "seccomp filter not installed: {}",
                nix::errno::Errno::from_raw(errno).desc()
            )),
        }
    }
}

/// Between fork and exec: installs the bind filter and sends its notification fd to the launcher.
/// Never fails the exec: when the filter cannot be installed, the errno is sent instead and the worker
/// runs without injection.
///
/// # Safety
/// Call only in a `pre_exec` closure. It makes raw syscalls (prctl, seccomp, sendmsg, close) on
/// stack memory and allocates nothing, as required between fork and exec.
pub unsafe fn install_in_child(channel_fd: RawFd, no_new_privs: bool) {
    if no_new_privs {
        // Without CAP_SYS_ADMIN a seccomp filter needs no_new_privs (which disables file capabilities).
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    let program = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr() as *mut libc::sock_filter,
    };
    let listener = libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER,
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        &program as *const libc::sock_fprog,
    ) as RawFd;
    let errno = if listener < 0 {
        *libc::__errno_location()
    } else {
        0
    };
    send_fd(
        channel_fd,
        if listener < 0 { None } else { Some(listener) },
        errno,
    );
    if listener >= 0 {
        libc::close(listener);
    }
    libc::close(channel_fd);
}

/// sendmsg with an optional SCM_RIGHTS fd, on stack buffers only.
unsafe fn send_fd(channel_fd: RawFd, fd: Option<RawFd>, errno: i32) {
    #[repr(C, align(8))]
    struct ControlBuffer([u8; 64]);
    let mut control = ControlBuffer([0; 64]);
    let mut status = errno.to_ne_bytes();
    let mut iov = libc::iovec {
        iov_base: status.as_mut_ptr().cast(),
        iov_len: status.len(),
    };
    let mut msg: libc::msghdr = zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let space = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
    }
    libc::sendmsg(channel_fd, &msg, 0);
}

/// One worker's bind notifications, and copies of the TCP and UDP sockets it bound: kept until the
/// worker serves (readiness), and then only when the launcher drains it by its sockets.
pub struct BindWatch {
    listener: OwnedFd,
    worker: Pid,
    port: Option<u16>,
    /// Copies of the TCP and UDP sockets the worker bound until it was ready; once it served,
    /// only the serving ones among those bound until then.
    sockets: Vec<OwnedFd>,
    listening: bool,
    /// Whether binds are still copied: until the worker is ready (`stop_tracking_binds`).
    tracking: bool,
    /// When the last copy was taken (its bind let run just after).
    last_bind: Option<Instant>,
    /// Ports whose listeners were closed by `close_listeners`.
    drained_ports: Vec<u16>,
}

impl BindWatch {
    pub fn new(listener: OwnedFd, worker: Pid, port: Option<u16>) -> BindWatch {
        BindWatch {
            listener,
            worker,
            port,
            sockets: Vec::new(),
            listening: false,
            tracking: true,
            last_bind: None,
            drained_ports: Vec::new(),
        }
    }

    /// The launcher's copies of the worker's sockets, for the caller to close when it sees fit.
    pub fn into_sockets(self) -> Vec<OwnedFd> {
        self.sockets
    }

    pub fn worker(&self) -> Pid {
        self.worker
    }

    /// Answers every pending bind notification (NOTIF_RECV blocks, so it is called only while poll
    /// says one is waiting).
    pub fn handle_binds(&mut self) {
        for _ in 0..MAX_BINDS_PER_DRAIN {
            let mut pending = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut pending, PollTimeout::ZERO) {
                Ok(1..)
                    if pending[0]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLIN)) => {}
                _ => return,
            }
            // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before NOTIF_RECV.
            let mut request: libc::seccomp_notif = unsafe { zeroed() };
            // SAFETY: NOTIF_RECV writes one seccomp_notif into the valid buffer we pass.
            let rc = unsafe {
                libc::ioctl(
                    self.listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &mut request,
                )
            };
            if rc < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // ENOENT: the binding thread died before we read it.
                    _ => return,
                }
            }
            match self.inject(&request) {
                Ok(Some(port)) => debug!(
                    "worker pid {}: SO_REUSEPORT set before bind to port {port}",
                    self.worker
                ),
                Ok(None) => {}
                Err(why) => warn!("worker pid {}: bind left unchanged: {why}", self.worker),
            }
            self.let_bind_run(request.id);
        }
    }

    /// Closes the copies of the worker's sockets: the worker drains itself, and the launcher must not
    /// keep a listener alive that the worker closes.
    pub fn release_sockets(&mut self) {
        self.sockets.clear();
    }

    /// True once the worker serves on every socket it bound to a port: each TCP socket listens (or
    /// was closed or connected by the worker), each UDP socket is bound. From then on only the
    /// serving copies are kept.
    pub fn is_listening(&mut self) -> bool {
        if !self.listening && !self.binding() && serves(self.worker, &self.sockets) {
            self.listening = true;
            self.sockets.retain(is_serving);
            for copy in self.sockets.iter().filter(|s| is_listening(s)) {
                match queue::raise_backlog(copy.as_fd(), MIN_LISTEN_BACKLOG) {
                    Ok(Some(was)) => debug!(
                        "worker pid {}: listen backlog raised from {was} to {MIN_LISTEN_BACKLOG}",
                        self.worker
                    ),
                    Ok(None) => {}
                    Err(e) => debug!(
                        "worker pid {}: listen backlog left as it is: {e}",
                        self.worker
                    ),
                }
            }
        }
        self.listening
    }

    /// The worker is ready: binds from now on are let run without a copy being kept (a server that
    /// binds a socket per client on its port must not have the launcher hold them all).
    pub fn stop_tracking_binds(&mut self) {
        self.tracking = false;
    }

    /// Whether the worker bound a socket less than `SETTLE` ago, so that its next bind may follow.
    fn binding(&self) -> bool {
        self.last_bind.is_some_and(|at| at.elapsed() < SETTLE)
    }

    /// Takes the worker's TCP listeners out of their ports' groups and lets go of its UDP sockets'
    /// copies (see `socket_state::shut_listeners`). False when the launcher holds no listener.
    pub fn close_listeners(&mut self) -> bool {
        self.is_listening()
            && socket_state::shut_listeners(self.worker, &mut self.sockets, &mut self.drained_ports)
    }

    /// Ports whose listeners `close_listeners` closed.
    pub fn drained_ports(&self) -> &[u16] {
        &self.drained_ports
    }

    /// The launcher's copies of the worker's serving sockets, TCP listeners and bound UDP sockets,
    /// whether or not `is_listening` has looked yet: a worker made ready by READY=1 right after its
    /// bind may never be probed for listening, and its UDP sockets must still be steered to.
    pub fn listeners(&self) -> Vec<BorrowedFd<'_>> {
        self.sockets
            .iter()
            .filter(|s| is_serving(s))
            .map(|s| s.as_fd())
            .collect()
    }

    /// Sets SO_REUSEPORT on the socket of one bind notification; returns the port when it did.
    fn inject(&mut self, request: &libc::seccomp_notif) -> Result<Option<u16>, String> {
        let [socket_fd, address, length, ..] = request.data.args;
        let mut sockaddr = [0u8; MAX_SOCKADDR];
        let wanted = (length as usize).min(MAX_SOCKADDR);
        if wanted < 4 {
            return Ok(None);
        }
        read_memory(request.pid as i32, address, &mut sockaddr[..wanted])?;
        let family = u16::from_ne_bytes([sockaddr[0], sockaddr[1]]) as i32;
        if family != libc::AF_INET && family != libc::AF_INET6 {
            return Ok(None);
        }
        let port = u16::from_be_bytes([sockaddr[2], sockaddr[3]]);
        if port == 0 || self.port.is_some_and(|p| p != port) {
            return Ok(None);
        }
        // The worker's memory may have changed under us if the thread died and its id was reused.
        // SAFETY: NOTIF_ID_VALID only reads the u64 id we pass.
        if unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &request.id,
            )
        } < 0
        {
            return Err("the binding thread is gone".into());
        }
        let copy = take_socket(request.pid as i32, socket_fd as RawFd)?;
        socket::setsockopt(&copy, sockopt::ReusePort, &true)
            .map_err(|e| format!("setsockopt SO_REUSEPORT: {e}"))?;
        if socket::getsockopt(&copy, sockopt::SockType)
            .is_ok_and(|t| t == SockType::Stream || t == SockType::Datagram)
            && self.tracking
        {
            self.sockets.push(copy);
            self.last_bind = Some(Instant::now());
        }
        Ok(Some(port))
    }

    fn let_bind_run(&self, id: u64) {
        let response = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: NOTIF_SEND reads one seccomp_notif_resp from the valid struct we pass. ENOENT (the
        // thread died meanwhile) needs no handling.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &response,
            )
        };
    }
}

/// Whether `worker`, which bound `sockets`, serves: some socket serves, and no TCP socket it bound to
/// a port and still holds waits to listen — a server with two ports, with IPv4 and IPv6 sockets, or
/// with UDP and TCP on one port is not ready while one of them refuses connections. (A socket the
/// worker's tree closed is held only by the launcher's copy; it is not waited for.)
fn serves(worker: Pid, sockets: &[OwnedFd]) -> bool {
    if !sockets.iter().any(is_serving) {
        return false;
    }
    let waiting: Vec<u64> = sockets
        .iter()
        .filter(|s| waits_to_listen(s))
        .filter_map(socket_state::inode)
        .collect();
    if waiting.is_empty() {
        return true;
    }
    // The worker's children count: a wrapper (npm, a shell) whose child bound the socket.
    let held: HashSet<u64> = std::iter::once(worker)
        .chain(process_tree::descendants(worker))
        .flat_map(socket_fds::socket_inodes)
        .collect();
    !waiting.iter().any(|inode| held.contains(inode))
}

impl AsFd for BindWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// Reads `buffer.len()` bytes at `address` in thread `tid`'s memory.
fn read_memory(tid: i32, address: u64, buffer: &mut [u8]) -> Result<(), String> {
    let local = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: buffer.len(),
    };
    // SAFETY: both iovecs describe valid ranges: ours is `buffer`; the remote one is checked by the kernel.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    if n as usize == buffer.len() {
        Ok(())
    } else {
        Err(format!(
            "unable to read the bind address: {}",
            io::Error::last_os_error()
        ))
    }
}

/// A copy of the worker's socket `fd`, via pidfd_open + pidfd_getfd on the thread's process.
fn take_socket(tid: i32, fd: RawFd) -> Result<OwnedFd, String> {
    let tgid = thread_group_of(tid).ok_or("the binding process is gone")?;
    pidfd::copy_fd(tgid, fd).map_err(|e| e.to_string())
}

/// The process (thread group) a thread belongs to: seccomp notifications carry thread ids.
fn thread_group_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    /// A watch of this process holding copies of `sockets`, as bind notifications would leave them.
    fn watch_holding(sockets: Vec<OwnedFd>) -> BindWatch {
        let placeholder = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let mut watch = BindWatch::new(placeholder, Pid::this(), None);
        watch.sockets = sockets;
        watch
    }

    fn udp_bound() -> OwnedFd {
        OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    fn unbound(kind: socket2::Type) -> OwnedFd {
        OwnedFd::from(socket2::Socket::new(socket2::Domain::IPV4, kind, None).unwrap())
    }

    /// A TCP socket bound to 127.0.0.1:`port` (0: any free port), not listening.
    fn tcp_bound(port: u16) -> OwnedFd {
        let tcp = unbound(socket2::Type::STREAM);
        bind(&tcp, port);
        tcp
    }

    fn bind(socket: &OwnedFd, port: u16) {
        socket2::SockRef::from(socket)
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
    }

    fn listen(socket: &OwnedFd) {
        nix::sys::socket::listen(socket, nix::sys::socket::Backlog::new(8).unwrap()).unwrap();
    }

    #[test]
    fn a_bound_udp_socket_is_a_listener_before_listening_was_probed() {
        let watch = watch_holding(vec![udp_bound(), unbound(socket2::Type::DGRAM)]);
        // READY=1 came before the event loop probed the worker for listening: `is_listening` was never
        // called, and steering must still find the UDP socket.
        assert_eq!(watch.listeners().len(), 1);
    }

    #[test]
    fn a_udp_plus_tcp_server_serves_once_its_tcp_socket_listens() {
        let udp = udp_bound();
        let tcp = tcp_bound(socket_state::local_port(&udp).unwrap());
        let mut watch = watch_holding(vec![udp, tcp.try_clone().unwrap()]);
        assert!(!watch.is_listening(), "its TCP port still refuses");
        listen(&tcp);
        assert!(watch.is_listening());
        assert_eq!(watch.listeners().len(), 2);
    }

    #[test]
    fn a_server_with_two_tcp_ports_serves_once_both_listen() {
        let first = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        let second = tcp_bound(0);
        let mut watch = watch_holding(vec![first, second.try_clone().unwrap()]);
        assert!(!watch.is_listening(), "its second port still refuses");
        listen(&second);
        assert!(watch.is_listening());
        assert_eq!(watch.listeners().len(), 2, "both are kept for steering");
    }

    #[test]
    fn a_bound_tcp_socket_the_worker_closed_is_not_waited_for() {
        let listener = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        // Only the launcher's copy holds the bound socket: the worker (a `sleep` here, which never
        // had it: our sockets are close-on-exec) closed its own.
        let mut worker = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut watch = watch_holding(vec![listener, tcp_bound(0)]);
        watch.worker = Pid::from_raw(worker.id() as i32);
        let listening = watch.is_listening();
        let _ = worker.kill();
        let _ = worker.wait();
        assert!(listening);
    }

    #[test]
    fn a_worker_that_bound_moments_ago_is_not_ready_until_its_binds_settle() {
        // A UDP server's IPv4 socket is bound; its IPv6 bind was let run just now and is still running.
        let second = unbound(socket2::Type::DGRAM);
        let mut watch = watch_holding(vec![udp_bound(), second.try_clone().unwrap()]);
        watch.last_bind = Some(Instant::now());
        assert!(!watch.is_listening(), "its next bind may follow");
        bind(&second, 0);
        watch.last_bind = Instant::now().checked_sub(SETTLE);
        assert!(watch.is_listening());
        assert_eq!(watch.listeners().len(), 2, "both are kept for steering");
    }

    #[test]
    fn a_failed_bind_is_not_waited_for_once_it_settled() {
        let mut watch = watch_holding(vec![udp_bound(), unbound(socket2::Type::DGRAM)]);
        watch.last_bind = Instant::now().checked_sub(SETTLE);
        assert!(watch.is_listening());
    }
}
