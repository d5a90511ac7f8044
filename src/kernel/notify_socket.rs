//! The workers' notify socket: a unix datagram socket in a private directory, handed to every worker as
//! NOTIFY_SOCKET. It receives sd_notify messages with the sender's kernel-checked credentials
//! (SO_PASSCRED), so the event loop can attribute each message to exactly one worker; with
//! --user/--group its directory and socket are shared with the workers' group. This module parses
//! the protocol; it never decides what a message means for a worker.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::warn;
use nix::sys::socket::{
    self, recvmsg, setsockopt, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use nix::unistd::Pid;

use super::worker_spec::RunAs;
use crate::launcher::NotifyMessage;

/// Largest message accepted, the same bound systemd uses for its notify socket (PIPE_BUF).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// sun_path holds 108 bytes including the final NUL.
const MAX_SOCKET_PATH: usize = 107;
/// "/reuseport-launch.<pid>.XXXXXX/notify.sock" with the longest pid.
const LONGEST_SUFFIX: usize = 48;
/// Datagrams handled per wake-up before the loop looks at signals and timers again; a flood cannot
/// starve the rest of the loop.
const MAX_DATAGRAMS_PER_DRAIN: usize = 256;
/// Mode of the notify socket's directory with --user/--group: the workers' group may enter it (to reach
/// the socket) but not rename or remove anything in it.
const NOTIFY_DIR_MODE_RUN_AS: u32 = 0o710;
/// Mode of the notify socket with --user/--group: the workers' group may send to it.
const NOTIFY_SOCKET_MODE_RUN_AS: u32 = 0o660;

/// A datagram, or the reason it was dropped.
#[derive(Debug)]
pub enum Received {
    /// A well-formed message and the pid that sent it.
    Message { sender: Pid, message: NotifyMessage },
    /// Dropped: larger than MAX_MESSAGE_BYTES.
    Oversized { sender: Option<Pid> },
    /// Dropped: not UTF-8 or not KEY=VALUE lines.
    Malformed { sender: Option<Pid>, why: String },
    /// Dropped: no sender credentials attached.
    Anonymous,
    /// Reading the socket failed (not EAGAIN); the rest waits for the next wake-up.
    ReadFailed { why: String },
}

pub struct NotifySocket {
    socket: OwnedFd,
    dir: PathBuf,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `notify.sock` in a new directory (mode 0700) under the runtime directory.
    pub fn bind() -> io::Result<NotifySocket> {
        let dir = private_dir()?;
        let path = dir.join("notify.sock");
        let socket = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        socket::bind(socket.as_raw_fd(), &UnixAddr::new(&path)?)?;
        setsockopt(&socket, sockopt::PassCred, &true)?;
        Ok(NotifySocket { socket, dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every datagram waiting on the socket (up to a bound per call).
    pub fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut buffer = vec![0u8; MAX_MESSAGE_BYTES + 1];
        for _ in 0..MAX_DATAGRAMS_PER_DRAIN {
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let (len, truncated, sender) = match recvmsg::<UnixAddr>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            ) {
                Ok(msg) => {
                    let sender = msg
                        .cmsgs()
                        .ok()
                        .into_iter()
                        .flatten()
                        .find_map(|c| match c {
                            ControlMessageOwned::ScmCredentials(creds) => {
                                Some(Pid::from_raw(creds.pid()))
                            }
                            _ => None,
                        });
                    (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), sender)
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    out.push(Received::ReadFailed { why: e.to_string() });
                    break;
                }
            };
            out.push(if truncated || len > MAX_MESSAGE_BYTES {
                Received::Oversized { sender }
            } else {
                match (sender, parse(&buffer[..len])) {
                    (None, _) => Received::Anonymous,
                    (Some(sender), Ok(message)) => Received::Message { sender, message },
                    (Some(sender), Err(why)) => Received::Malformed {
                        sender: Some(sender),
                        why,
                    },
                }
            });
        }
        out
    }
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A fresh directory only the launcher's user can enter, under $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR or
/// /tmp: the first whose socket path fits in sun_path.
fn private_dir() -> io::Result<PathBuf> {
    let base = ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .find(|p| p.is_dir() && p.as_os_str().len() + LONGEST_SUFFIX < MAX_SOCKET_PATH)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let template = base.join(format!("reuseport-launch.{}.XXXXXX", std::process::id()));
    nix::unistd::mkdtemp(&template).map_err(io::Error::from)
}

/// Parses one sd_notify datagram: newline-separated KEY=VALUE assignments.
pub fn parse(bytes: &[u8]) -> Result<NotifyMessage, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut message = NotifyMessage::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {:?} is not KEY=VALUE", truncate(line)))?;
        match key {
            "READY" => message.ready = value == "1",
            "STOPPING" => message.stopping = value == "1",
            "WATCHDOG" => message.watchdog = value == "1",
            "STATUS" => message.status = Some(value.to_string()),
            "ERRNO" => message.errno = value.trim().parse().ok(),
            _ => {}
        }
    }
    Ok(message)
}

fn truncate(line: &str) -> String {
    line.chars().take(40).collect()
}

/// With --user/--group: lets the workers' group reach the notify socket (directory 0710, socket 0660,
/// both group-owned by that group) without letting them replace it, and warns when a directory above
/// it keeps the workers out (their READY=1 would then be lost).
pub fn share_with(socket: &Path, run_as: &RunAs) -> Result<(), String> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    for (path, mode) in [
        (dir, NOTIFY_DIR_MODE_RUN_AS),
        (socket, NOTIFY_SOCKET_MODE_RUN_AS),
    ] {
        nix::unistd::chown(path, None, Some(run_as.gid))
            .map_err(io::Error::from)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| {
                format!(
                    "unable to give the workers' group ({}) access to the notify socket {}: {e}",
                    run_as.shown,
                    path.display()
                )
            })?;
    }
    let uid = run_as.uid.unwrap_or_else(nix::unistd::geteuid).as_raw();
    let gid = run_as.gid.as_raw();
    let blocked = dir.ancestors().skip(1).find(|a| {
        std::fs::metadata(a).is_ok_and(|m| {
            let mode = m.mode();
            !(mode & 0o001 != 0
                || (m.uid() == uid && mode & 0o100 != 0)
                || (m.gid() == gid && mode & 0o010 != 0))
        })
    });
    if let Some(blocked) = blocked {
        warn!(
            "workers running with {} cannot reach NOTIFY_SOCKET {}: {} is not searchable for them; \
             their READY=1 will be lost (use --ready listen, or a runtime directory they can enter, \
             e.g. RuntimeDirectory= with RuntimeDirectoryMode=0755)",
            run_as.shown,
            socket.display(),
            blocked.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_ignores_unknown_ones() {
        let m = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=7\nX_CUSTOM=a=b\nERRNO=5\n")
            .unwrap();
        assert!(m.ready && !m.stopping && !m.watchdog);
        assert_eq!(m.status.as_deref(), Some("serving 3 clients"));
        assert_eq!(m.errno, Some(5));
    }

    #[test]
    fn ready_must_be_exactly_one() {
        assert!(!parse(b"READY=0").unwrap().ready);
        assert!(parse(b"WATCHDOG=1").unwrap().watchdog);
    }

    #[test]
    fn rejects_non_utf8_and_lines_without_equals() {
        assert!(parse(&[0xff, 0xfe, b'=']).is_err());
        assert!(parse(b"READY").is_err());
    }
}
