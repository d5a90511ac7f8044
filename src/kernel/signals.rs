//! The signal self-pipe. Handlers do one thing: write the signal's number as one byte into a non-blocking
//! pipe. The event loop polls the read end and `drain`s it, so every signal is acted on in the loop, in
//! arrival order, never inside a handler.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

/// Bytes read from the pipe per `read`; more pending signals are read on the next round.
const DRAIN_CHUNK: usize = 64;

pub struct SignalPipe {
    read_end: OwnedFd,
    /// Kept open for the handlers, which write to its raw fd.
    _write_end: OwnedFd,
}

impl SignalPipe {
    /// Installs handlers for `signals`. Call before telling anyone the launcher is ready.
    pub fn install(signals: &[Signal]) -> io::Result<SignalPipe> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let fd = write_end.as_raw_fd();
        for &signal in signals {
            let byte = signal as i32 as u8;
            // SAFETY: the handler only calls write(2) on a pipe that lives as long as the process
            // (SignalPipe is never dropped before exit) and touches no other state: async-signal-safe.
            // It saves and restores errno, so the interrupted code never sees it change.
            unsafe {
                signal_hook::low_level::register(signal as i32, move || {
                    let saved = errno::get();
                    libc_write(fd, byte);
                    errno::set(saved);
                })?;
            }
        }
        Ok(SignalPipe {
            read_end,
            _write_end: write_end,
        })
    }

    /// All signals received since the last call, oldest first.
    pub fn drain(&self) -> Vec<Signal> {
        let mut received = Vec::new();
        let mut buffer = [0u8; DRAIN_CHUNK];
        while let Ok(n @ 1..) = nix::unistd::read(self.read_end.as_raw_fd(), &mut buffer) {
            received.extend(
                buffer[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(b as i32).ok()),
            );
        }
        received
    }
}

impl AsFd for SignalPipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read_end.as_fd()
    }
}

fn libc_write(fd: i32, byte: u8) {
    // SAFETY: writes one byte from a valid stack buffer; a full pipe (EAGAIN) just drops the byte,
    // which is harmless because the loop is already due to wake up.
    unsafe {
        nix::libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// errno access without allocation, for use inside signal handlers.
mod errno {
    pub fn get() -> i32 {
        // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
        unsafe { *nix::libc::__errno_location() }
    }
    pub fn set(value: i32) {
        // SAFETY: as above.
        unsafe { *nix::libc::__errno_location() = value }
    }
}
