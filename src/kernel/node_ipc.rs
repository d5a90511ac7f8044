//! PM2 and cluster-module conventions for Node workers, over the IPC channel Node opens from
//! NODE_CHANNEL_FD: `process.send('ready')` counts as READY=1 (PM2's wait_ready), and with
//! `--stop-message MSG` the launcher asks a worker to stop by sending MSG instead of the stop signal
//! (PM2's shutdown_with_message). Messages are Node's "json" serialization: one JSON value per line.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use log::{debug, warn};
use nix::libc;
use nix::unistd::Pid;

pub const ENV_CHANNEL_FD: &str = "NODE_CHANNEL_FD";
pub const ENV_SERIALIZATION: &str = "NODE_CHANNEL_SERIALIZATION_MODE";
/// A worker's unread IPC bytes are capped: a worker that floods the channel with one endless line
/// loses that line, not the launcher's memory.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// The socketpair made for one worker before it is spawned.
pub struct Pending {
    launcher_end: UnixStream,
    worker_end: OwnedFd,
}

impl Pending {
    pub fn new() -> io::Result<Pending> {
        let (launcher_end, worker_end) = UnixStream::pair()?;
        Ok(Pending {
            launcher_end,
            worker_end: worker_end.into(),
        })
    }

    /// The raw fd the child moves to the channel's fd number before exec.
    pub fn worker_fd(&self) -> RawFd {
        self.worker_end.as_raw_fd()
    }

    /// After spawn: the launcher's end, attributed to the worker.
    pub fn into_channel(self, worker: Pid) -> io::Result<Channel> {
        drop(self.worker_end);
        self.launcher_end.set_nonblocking(true)?;
        Ok(Channel {
            worker,
            stream: self.launcher_end,
            buffer: Vec::new(),
        })
    }
}

/// Between fork and exec: puts the worker's end on fd `target` (not close-on-exec).
///
/// # Safety
/// Call only in a `pre_exec` closure; it makes raw dup2/fcntl calls and allocates nothing.
pub unsafe fn install_in_child(worker_fd: RawFd, target: RawFd) -> io::Result<()> {
    if worker_fd == target {
        let flags = libc::fcntl(target, libc::F_GETFD);
        if flags < 0 || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    } else if libc::dup2(worker_fd, target) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The launcher's end of one worker's IPC channel.
pub struct Channel {
    worker: Pid,
    stream: UnixStream,
    buffer: Vec<u8>,
}

impl Channel {
    pub fn worker(&self) -> Pid {
        self.worker
    }

    /// What the worker sent since the last call: (`process.send('ready')`, `process.send('healthy')`);
    /// other messages are ignored.
    pub fn read_messages(&mut self) -> (bool, bool) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("worker pid {}: IPC read failed: {e}", self.worker);
                    break;
                }
            }
        }
        let (mut ready, mut healthy) = (false, false);
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            ready |= line.trim_ascii() == br#""ready""#;
            healthy |= line.trim_ascii() == br#""healthy""#;
        }
        if self.buffer.len() > MAX_LINE_BYTES {
            warn!(
                "worker pid {}: IPC message longer than {MAX_LINE_BYTES} bytes dropped",
                self.worker
            );
            self.buffer.clear();
        }
        (ready, healthy)
    }

    /// Sends `message` as Node's `process.on('message')` receives it: a JSON string.
    pub fn send(&mut self, message: &str) -> io::Result<()> {
        let escaped = message.replace('\\', "\\\\").replace('"', "\\\"");
        self.stream.write_all(format!("\"{escaped}\"\n").as_bytes())
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_recognised_among_other_messages_and_split_reads() {
        let pending = Pending::new().unwrap();
        let mut worker = UnixStream::from(pending.worker_end.try_clone().unwrap());
        let mut channel = pending.into_channel(Pid::this()).unwrap();
        worker
            .write_all(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n\"rea")
            .unwrap();
        assert_eq!(channel.read_messages(), (false, false));
        worker.write_all(b"dy\"\n\"healthy\"\n").unwrap();
        assert_eq!(channel.read_messages(), (true, true));
        channel.send("shutdown").unwrap();
        let mut got = [0u8; 11];
        worker.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\"shutdown\"\n");
    }
}
