//! Launcher-bound sockets (`--listen`): TCP listeners and bound UDP sockets (`udp:ADDR`, systemd's
//! ListenDatagram=), handed to each worker with the systemd socket-activation protocol: fds 3, 4, ...
//! in `--listen` order, LISTEN_FDS, LISTEN_PID (the worker's own pid, written between fork and exec),
//! LISTEN_FDNAMES, and PORT when there is one address.
//! Every worker gets sockets of its own (one per address, all in the port's SO_REUSEPORT group), so
//! one worker's listener can be taken out of the group without touching the others'. The launcher keeps
//! its copies only while the worker lives, to steer it and to drain it; it never keeps a port open for
//! a worker that is gone.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::libc;
use nix::unistd::Pid;
use socket2::{Domain, Protocol, Socket, Type};

use super::{process_tree, sock_diag, socket_fds, socket_state};

/// The first fd of the socket-activation protocol (SD_LISTEN_FDS_START): 0-2 are stdio.
pub const LISTEN_FDS_START: RawFd = 3;
/// Accept queue length of each launcher-bound socket: the same as example-server and common servers;
/// the kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 1024;
/// A worker whose sockets the launcher bound counts as "listening" once it has been alive this long:
/// the sockets queue connections from the start, and a server that fails at start-up (bad config,
/// import error) usually exits within this time, so a broken generation does not replace a working one.
pub const SETTLE_TIME: Duration = Duration::from_millis(250);

pub const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
pub const ENV_LISTEN_PID: &str = "LISTEN_PID";
pub const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
pub const ENV_PORT: &str = "PORT";
/// The value of LISTEN_PID set before fork: ten digits, room for any pid (pid_max is at most 2^22),
/// overwritten with the worker's pid in the child's copy of the environment.
pub const LISTEN_PID_PLACEHOLDER: &str = "0000000000";

/// LISTEN_FDNAMES for `count` sockets: `listen0:listen1:...` (names may not contain ':', so the
/// addresses themselves cannot be used; the order is the order of `--listen`).
pub fn fd_names(count: usize) -> String {
    (0..count)
        .map(|i| format!("listen{i}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One `--listen` socket: its address, and whether it is a UDP socket (`udp:ADDR`) or a TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress {
    pub address: SocketAddr,
    /// UDP (SOCK_DGRAM, bound, systemd's ListenDatagram=) rather than TCP (ListenStream=).
    pub datagram: bool,
}

impl ListenAddress {
    pub fn tcp(address: SocketAddr) -> ListenAddress {
        ListenAddress {
            address,
            datagram: false,
        }
    }

    pub fn udp(address: SocketAddr) -> ListenAddress {
        ListenAddress {
            address,
            datagram: true,
        }
    }
}

impl std::fmt::Display for ListenAddress {
    /// As `--listen` takes it: `127.0.0.1:8080`, `udp:127.0.0.1:8053`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.datagram {
            write!(f, "udp:")?;
        }
        write!(f, "{}", self.address)
    }
}

/// An unbound socket for `address`: SO_REUSEADDR + SO_REUSEPORT, dual-stack for IPv6, close-on-exec.
fn new_socket(address: ListenAddress) -> io::Result<Socket> {
    let (kind, protocol) = if address.datagram {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let socket = Socket::new(
        Domain::for_address(address.address),
        kind.cloexec(),
        Some(protocol),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.address.is_ipv6() {
        // [::]:PORT serves IPv4 too, whatever net.ipv6.bindv6only says (what systemd does by default).
        socket.set_only_v6(false)?;
    }
    Ok(socket)
}

/// A serving socket on `address`: a TCP listener, or a bound UDP socket.
pub fn open(address: ListenAddress) -> io::Result<Socket> {
    let socket = new_socket(address)?;
    socket.bind(&address.address.into())?;
    if !address.datagram {
        socket.listen(LISTEN_BACKLOG)?;
    }
    Ok(socket)
}

/// New listening sockets for one worker, one per address, each moved to an fd at or above
/// `3 + addresses.len()` so that none sits where the child puts the sockets (fds 3..3+n).
pub fn open_for_worker(addresses: &[ListenAddress]) -> io::Result<Vec<OwnedFd>> {
    let lowest = LISTEN_FDS_START + addresses.len() as RawFd;
    addresses
        .iter()
        .map(|&address| {
            let socket = open(address).map_err(|e| explain(address, e))?;
            // SAFETY: F_DUPFD_CLOEXEC returns a new fd (or -1) that nothing else owns.
            let moved = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_DUPFD_CLOEXEC, lowest) };
            if moved < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `moved` is a fresh fd owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(moved) })
        })
        .collect()
}

/// Fills every free fd below `3 + count` with /dev/null (close-on-exec), kept open for the launcher's
/// life. Then no fd the launcher opens later (the pipe std uses to report a failed exec, the injection
/// channel) lands where the child dup2()s its sockets and is clobbered before exec.
pub fn reserve_target_fds(count: usize) -> io::Result<Vec<OwnedFd>> {
    let end = LISTEN_FDS_START + count as RawFd;
    let mut reserved = Vec::new();
    loop {
        let placeholder = OwnedFd::from(std::fs::File::open("/dev/null")?);
        if placeholder.as_raw_fd() >= end {
            return Ok(reserved);
        }
        reserved.push(placeholder);
    }
}

/// Checks once at start, before any worker runs, that every address can be bound: binds (without
/// listening, so nobody's connections are disturbed; a UDP socket is closed before any datagram could
/// be read) and closes a socket per address. The error names the address and, for a port already held
/// without SO_REUSEPORT, the process holding it.
pub fn check_available(addresses: &[ListenAddress]) -> Result<(), String> {
    for &address in addresses {
        let probe = new_socket(address).and_then(|s| s.bind(&address.address.into()));
        if let Err(e) = probe {
            return Err(explain(address, e).to_string());
        }
    }
    Ok(())
}

/// Turns a bind error into one that names the address, the holder of the port and what to do.
fn explain(listen: ListenAddress, error: io::Error) -> io::Error {
    let address = listen.address;
    let message = match error.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            let holder = match find_holder(address.port(), listen.datagram) {
                Some((pid, command)) => format!("pid {pid} ({command})"),
                None => "another process (not visible from here)".into(),
            };
            format!(
                "unable to listen on {listen}: the port is held by {holder}, which did not set \
                 SO_REUSEPORT (or runs as another user); stop it, or make it set SO_REUSEPORT"
            )
        }
        Some(libc::EACCES) => format!(
            "unable to listen on {listen}: {error}; ports below 1024 need root or CAP_NET_BIND_SERVICE \
             (or a lower net.ipv4.ip_unprivileged_port_start)"
        ),
        Some(libc::EADDRNOTAVAIL) => format!(
            "unable to listen on {listen}: {error}; the address is not one of this host's \
             (see `ip addr`)"
        ),
        Some(libc::EAFNOSUPPORT) => format!(
            "unable to listen on {listen}: {error}; IPv6 is disabled here, use 0.0.0.0:{} instead",
            address.port()
        ),
        _ => format!("unable to listen on {listen}: {error}"),
    };
    io::Error::new(error.kind(), message)
}

/// The pid and command line of a process holding a TCP socket in LISTEN state (`datagram`: a bound
/// UDP socket) on `port`: the socket's inode from sock_diag, then the process whose fd table has it.
/// None when it cannot be seen (another network namespace, or a process we may not inspect).
pub fn find_holder(port: u16, datagram: bool) -> Option<(i32, String)> {
    let sockets = if datagram {
        sock_diag::udp_sockets(sock_diag::UNCONNECTED)
    } else {
        sock_diag::tcp_sockets(sock_diag::LISTEN)
    };
    let inodes: HashSet<u64> = sockets
        .ok()?
        .into_iter()
        .filter(|s| s.local_port == port)
        .map(|s| s.inode)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let me = Pid::this();
    process_tree::all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .find(|&pid| !socket_fds::socket_inodes(pid).is_disjoint(&inodes))
        .map(|pid| (pid.as_raw(), process_tree::command_line(pid)))
}

/// Between fork and exec: puts `sockets[i]` at fd 3+i, without close-on-exec. The sources all sit at or
/// above 3+n (see `open_for_worker`), so no dup2 overwrites a source still to be moved.
///
/// # Safety
/// Call only in a `pre_exec` closure: raw dup2/fcntl calls, no allocation.
pub unsafe fn install_in_child(sockets: &[RawFd]) -> io::Result<()> {
    for (i, &source) in sockets.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        if libc::dup2(source, target) < 0 {
            return Err(io::Error::last_os_error());
        }
        // dup2 already leaves FD_CLOEXEC off the new fd; clearing it says so and costs one syscall.
        if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The exec of a worker that gets launcher-bound sockets, prepared before fork: argv and envp as C
/// arrays, with `LISTEN_PID=0000000000` in envp. LISTEN_PID is only known after fork, and std's Command
/// builds its envp privately (and installs it only after pre_exec closures have run), so the child
/// writes its pid into this copy and calls execve(2) itself, from the pre_exec closure.
pub struct PreparedExec {
    program: Vec<u8>,
    /// Each argument and each KEY=VALUE, NUL-terminated; the arrays below point into them.
    _args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Index in `env` of the LISTEN_PID placeholder.
    listen_pid: usize,
}

// SAFETY: the raw pointers point into buffers the struct owns, which never move (heap) or change except
// in the child; the struct is only moved into a pre_exec closure, which std requires to be Send + Sync.
unsafe impl Send for PreparedExec {}
// SAFETY: as above; the parent never reads or writes through the pointers.
unsafe impl Sync for PreparedExec {}

impl PreparedExec {
    /// Takes PROGRAM, its arguments and its environment (the launcher's, with the command's changes)
    /// from `command`, after all its `.env` calls, and adds the LISTEN_PID placeholder.
    pub fn from_command(command: &std::process::Command) -> io::Result<PreparedExec> {
        use std::os::unix::ffi::OsStrExt;
        let c_string = |bytes: &[u8]| -> io::Result<Vec<u8>> {
            if bytes.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument or environment variable contains a NUL byte",
                ));
            }
            Ok(bytes.iter().copied().chain([0]).collect())
        };
        let mut environment: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
            std::env::vars_os().collect();
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => environment.insert(key.to_owned(), value.to_owned()),
                None => environment.remove(key),
            };
        }
        environment.insert(ENV_LISTEN_PID.into(), LISTEN_PID_PLACEHOLDER.into());
        let mut env = Vec::new();
        let mut listen_pid = 0;
        for (key, value) in &environment {
            if key == ENV_LISTEN_PID {
                listen_pid = env.len();
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            env.push(c_string(&entry)?);
        }
        let program = c_string(command.get_program().as_bytes())?;
        let mut args = vec![program.clone()];
        for arg in command.get_args() {
            args.push(c_string(arg.as_bytes())?);
        }
        let mut prepared = PreparedExec {
            program,
            argv: Vec::new(),
            envp: Vec::new(),
            _args: args,
            env,
            listen_pid,
        };
        prepared.argv = prepared
            ._args
            .iter_mut()
            .map(|a| a.as_mut_ptr().cast_const().cast())
            .chain([std::ptr::null()])
            .collect();
        prepared.envp = prepared
            .env
            .iter_mut()
            .map(|e| e.as_mut_ptr().cast_const().cast())
            .chain([std::ptr::null()])
            .collect();
        Ok(prepared)
    }

    /// Between fork and exec: writes this process's pid into LISTEN_PID and execs PROGRAM. Returns only
    /// on failure, with execve's error.
    ///
    /// # Safety
    /// Call only in a `pre_exec` closure, as its last step: raw syscalls on memory prepared before fork,
    /// no allocation.
    pub unsafe fn exec_in_child(&mut self) -> io::Error {
        let mut digits = [0u8; LISTEN_PID_PLACEHOLDER.len()];
        let length = format_pid(libc::getpid() as u32, &mut digits);
        let entry = &mut self.env[self.listen_pid];
        let value = ENV_LISTEN_PID.len() + 1;
        entry[value..value + length].copy_from_slice(&digits[..length]);
        // End the string after the digits; the rest of the placeholder is never read.
        entry[value + length] = 0;
        // What std does before its own exec: the worker starts with SIGPIPE at its default and no
        // signal blocked, whatever the launcher set.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            self.program.as_ptr().cast(),
            self.argv.as_ptr(),
            self.envp.as_ptr(),
        );
        io::Error::last_os_error()
    }
}

/// Writes `pid` in decimal at the start of `out`; returns the number of digits. No allocation.
fn format_pid(mut pid: u32, out: &mut [u8; LISTEN_PID_PLACEHOLDER.len()]) -> usize {
    let mut reversed = [0u8; LISTEN_PID_PLACEHOLDER.len()];
    let mut length = 0;
    loop {
        reversed[length] = b'0' + (pid % 10) as u8;
        length += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in 0..length {
        out[i] = reversed[length - 1 - i];
    }
    length
}

/// The launcher's copies of one worker's sockets: for readiness (the worker has them from exec on),
/// to steer to it, and to drain it by its listeners. Dropped (closed) when the worker exits.
pub struct Held {
    worker: Pid,
    spawned_at: Instant,
    sockets: Vec<OwnedFd>,
    drained_ports: Vec<u16>,
}

impl Held {
    pub fn new(worker: Pid, sockets: Vec<OwnedFd>) -> Held {
        Held {
            worker,
            spawned_at: Instant::now(),
            sockets,
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

    /// Whether the worker has lived SETTLE_TIME since it was spawned: `None` while it is too early to
    /// say, else whether it is still running.
    pub fn settled(&self, now: Instant) -> Option<bool> {
        if now.saturating_duration_since(self.spawned_at) < SETTLE_TIME {
            return None;
        }
        let exited = nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(self.worker),
            nix::sys::wait::WaitPidFlag::WEXITED
                | nix::sys::wait::WaitPidFlag::WNOHANG
                | nix::sys::wait::WaitPidFlag::WNOWAIT,
        );
        Some(matches!(exited, Ok(nix::sys::wait::WaitStatus::StillAlive)))
    }

    /// Takes the worker's TCP listeners out of their ports' groups and lets go of its UDP sockets'
    /// copies (see `socket_state::shut_listeners`). False when the launcher holds no listener any more.
    pub fn close_listeners(&mut self) -> bool {
        socket_state::shut_listeners(self.worker, &mut self.sockets, &mut self.drained_ports)
    }

    /// Closes the launcher's copies: the worker drains itself.
    pub fn release(&mut self) {
        self.sockets.clear();
    }

    /// Ports whose listeners `close_listeners` closed.
    pub fn drained_ports(&self) -> &[u16] {
        &self.drained_ports
    }

    /// The launcher's copies of the worker's sockets (until they are closed or released).
    pub fn listeners(&self) -> Vec<BorrowedFd<'_>> {
        self.sockets.iter().map(|s| s.as_fd()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_format_without_allocation() {
        let mut out = [b'x'; 10];
        assert_eq!(format_pid(4_194_304, &mut out), 7);
        assert_eq!(&out[..7], b"4194304");
        assert_eq!(format_pid(0, &mut out), 1);
        assert_eq!(&out[..1], b"0");
        assert_eq!(format_pid(u32::MAX, &mut out), 10);
        assert_eq!(&out, b"4294967295");
    }

    #[test]
    fn a_udp_address_gets_a_bound_reuseport_udp_socket() {
        let first = open(ListenAddress::udp("127.0.0.1:0".parse().unwrap())).unwrap();
        let address = first.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(first.r#type().unwrap(), Type::DGRAM);
        assert!(first.reuse_port().unwrap());
        // A second one joins the group, as every worker's does.
        let second = open(ListenAddress::udp(address)).unwrap();
        assert_eq!(second.local_addr().unwrap().as_socket(), Some(address));
        assert_eq!(
            ListenAddress::udp(address).to_string(),
            format!("udp:{address}")
        );
    }

    #[test]
    fn held_udp_port_is_named_too() {
        let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = holder.local_addr().unwrap();
        let err = check_available(&[ListenAddress::udp(address)]).unwrap_err();
        assert!(err.contains(&format!("udp:{address}")), "{err}");
        assert!(err.contains("SO_REUSEPORT"), "{err}");
    }

    #[test]
    fn fd_names_follow_listen_order() {
        assert_eq!(fd_names(1), "listen0");
        assert_eq!(fd_names(3), "listen0:listen1:listen2");
    }

    #[test]
    fn held_port_is_named_with_its_holder() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = holder.local_addr().unwrap();
        let err = check_available(&[ListenAddress::tcp(address)]).unwrap_err();
        assert!(err.contains(&address.to_string()), "{err}");
        // The holder is this very process, which find_holder skips; it must still say what to do.
        assert!(err.contains("SO_REUSEPORT"), "{err}");
    }
}
