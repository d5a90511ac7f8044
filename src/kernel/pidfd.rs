//! Copies of another process's file descriptors (pidfd_open + pidfd_getfd, Linux 5.6+): how the
//! launcher holds the very sockets its workers bound. Invariant: a copy refers to the same open socket,
//! so what is done to it (SO_REUSEPORT, shutdown, a steering map entry) is done to the worker's socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// A copy (close-on-exec) of descriptor `fd` of process `pid`.
pub fn copy_fd(pid: i32, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1; we own what it returns.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pidfd_open({pid}): {e}")));
    }
    // SAFETY: pidfd is a fresh fd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: pidfd_getfd returns a new fd (close-on-exec) or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) } as RawFd;
    if copy < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pidfd_getfd: {e}")));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}
