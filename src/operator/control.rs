//! The control socket: a unix stream socket (mode 0600, peer uid checked) where `reuseport-launch
//! status|reload|scale|stop` reach a running launcher. One request line per connection, one reply.
//! Every read is non-blocking and bounded in size and time, so a silent or garbage-sending client is
//! dropped without ever stalling the event loop; at most MAX_PENDING_CLIENTS wait to be read, and when
//! that many are waiting the longest-waiting silent one is closed to make room, so a flood of idle
//! connections never locks out `reload --wait` or `status`. Drops are logged rate-limited.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials, MsgFlags};

use super::rollout_flags::parse_max_surge;
use super::status;
use crate::launcher::{
    thousands, Announcement, Launcher, Processes, RateLimit, ReloadResult, Verdict,
};

/// A client has this long to send its request line: a silent client is dropped, never waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request line; the longest real one ("status --json") is far shorter.
const MAX_REQUEST_BYTES: usize = 256;
/// Clients waiting for their request line at once; past it the longest-waiting silent one is closed, so
/// a flood cannot grow memory nor lock out a legitimate client.
const MAX_PENDING_CLIENTS: usize = 64;
/// Connections accepted per turn of the loop, so a connection flood cannot starve signals and timers.
const MAX_ACCEPTS_PER_TURN: usize = 256;
/// Dropped clients of one kind are logged once per this window, then summed up with a count.
const DROP_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Kinds of drop (the rate limiter's keys): refused peer, evicted, timed out, bad request.
const DROP_KINDS: usize = 4;

/// What a client asks for; the wire form is one line, e.g. `scale 4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `status`: the human table.
    Status,
    /// `status-json`: the same for scripts.
    StatusJson,
    /// `reload` or `reload-wait`, optionally followed by `max-surge=N`: start a reload (replacing N
    /// slots at a time); with wait, reply only when it ended.
    Reload {
        wait: bool,
        max_surge: Option<usize>,
    },
    /// `scale N`: set the number of workers of the serving generation.
    Scale(usize),
    /// `stop`: graceful stop; the connection stays open until the launcher exits.
    Stop,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => f.write_str("status"),
            Request::StatusJson => f.write_str("status-json"),
            Request::Reload { wait, max_surge } => {
                f.write_str(if *wait { "reload-wait" } else { "reload" })?;
                match max_surge {
                    Some(n) => write!(f, " max-surge={n}"),
                    None => Ok(()),
                }
            }
            Request::Scale(n) => write!(f, "scale {n}"),
            Request::Stop => f.write_str("stop"),
        }
    }
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_whitespace();
        let request = match (words.next(), words.next()) {
            (Some("status"), None) => Request::Status,
            (Some("status-json"), None) => Request::StatusJson,
            (Some(verb @ ("reload" | "reload-wait")), surge) => Request::Reload {
                wait: verb == "reload-wait",
                max_surge: surge
                    .map(|word| match word.strip_prefix("max-surge=") {
                        Some(n) => parse_max_surge(n).map_err(|e| format!("{verb} {word}: {e}")),
                        None => Err(format!("{verb} {word}: expected max-surge=N")),
                    })
                    .transpose()?,
            },
            (Some("stop"), None) => Request::Stop,
            (Some("scale"), Some(n)) => {
                Request::Scale(n.parse().map_err(|_| format!("scale {n}: not a number"))?)
            }
            _ => {
                return Err(format!(
                    "unknown request {:?}",
                    line.chars().take(40).collect::<String>()
                ))
            }
        };
        match words.next() {
            None => Ok(request),
            Some(_) => Err(format!("unexpected words after {request}")),
        }
    }
}

/// Where control sockets live, best first: systemd's RuntimeDirectory=, the user's runtime directory,
/// /run. The launcher binds in the first; clients look in all of them.
pub fn socket_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let set = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = set("RUNTIME_DIRECTORY") {
        // systemd may pass several, separated by ':'; the first is ours.
        dirs.extend(std::env::split_paths(&dir).next());
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(dir).join("reuseport-launch"));
    }
    dirs.push(PathBuf::from("/run/reuseport-launch"));
    dirs
}

/// Instance names become file names: keep them to a safe alphabet.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("--name {name:?}: use 1-64 letters, digits, '.', '_', '@' or '-', not starting with '.'"))
    }
}

/// Why the control socket could not be set up.
#[derive(Debug)]
pub enum BindError {
    /// A launcher already answers on this socket.
    AlreadyRunning(PathBuf),
    /// Any other failure.
    Io(PathBuf, io::Error),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::AlreadyRunning(path) => write!(
                f,
                "a launcher with this name is already running (control socket {}); stop it first, or give this \
                 one another --name",
                path.display()
            ),
            BindError::Io(path, e) => write!(f, "unable to create the control socket {}: {e}", path.display()),
        }
    }
}

struct Pending {
    stream: UnixStream,
    buffer: Vec<u8>,
    accepted: Instant,
    deadline: Instant,
    /// Why this peer may not control the launcher; answered once its request is read, so the client
    /// sees the reason instead of a reset connection.
    refusal: Option<String>,
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    pending: Vec<Pending>,
    /// Clients of `reload-wait`, with the sequence number of the reload they wait for.
    reload_waiters: Vec<(UnixStream, u64)>,
    /// Clients of `stop`: their connection closes when the launcher exits.
    stop_waiters: Vec<UnixStream>,
    name: String,
    /// When a dropped client is logged, by kind of drop.
    drops: RateLimit<&'static str>,
}

impl ControlServer {
    pub fn bind(name: &str) -> Result<ControlServer, BindError> {
        let dir = socket_dirs().remove(0);
        let path = dir.join(format!("{name}.sock"));
        let fail = |e: io::Error| BindError::Io(path.clone(), e);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(fail)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
        }
        match UnixStream::connect(&path) {
            Ok(_) => return Err(BindError::AlreadyRunning(path)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) => {
                info!(
                    "replacing the stale control socket {} of a launcher that is gone",
                    path.display()
                );
                std::fs::remove_file(&path).map_err(fail)?;
            }
        }
        let listener = UnixListener::bind(&path).map_err(fail)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        debug!("control socket {}", path.display());
        Ok(ControlServer {
            listener,
            path,
            pending: Vec::new(),
            reload_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            name: name.to_string(),
            drops: RateLimit::new(DROP_LOG_WINDOW, DROP_KINDS),
        })
    }

    /// The descriptors the event loop should poll for this module.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.pending.iter().map(|p| p.stream.as_fd()))
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.deadline)
            .chain(self.drops.next_deadline())
            .min()
    }

    /// Accepts new clients, reads request lines, and carries out every complete request.
    pub fn serve(&mut self, launcher: &mut Launcher, processes: &mut impl Processes, now: Instant) {
        self.accept(now);
        for (stream, request) in self.read_requests(now) {
            debug!("control request: {request}");
            self.carry_out(stream, request, launcher, processes, now);
        }
        for summary in self.drops.due(now) {
            warn!(
                "dropped {} more control clients ({}) in the last {}s",
                thousands(summary.suppressed),
                summary.key.unwrap_or("other"),
                summary.window.as_secs()
            );
        }
    }

    /// Logs a dropped client, or counts it when one of its `kind` was logged within DROP_LOG_WINDOW.
    fn note_drop(&mut self, kind: &'static str, why: &str, now: Instant) {
        if self.drops.check(kind, now) == Verdict::Log {
            warn!(
                "control client {kind}: {why}; more of these are counted for {}s",
                DROP_LOG_WINDOW.as_secs()
            );
        }
    }

    /// Closes the pending client that has waited longest without sending a byte (or, when every one
    /// has sent something, the one that has waited longest).
    fn evict_one(&mut self, now: Instant) {
        let index = self
            .pending
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| (has_sent(p), p.accepted))
            .map(|(i, _)| i);
        if let Some(index) = index {
            let evicted = self.pending.swap_remove(index);
            let waited = now.saturating_duration_since(evicted.accepted);
            self.note_drop(
                "closed to make room",
                &format!(
                    "{MAX_PENDING_CLIENTS} clients waiting to be read; closed the one silent for {} ms",
                    waited.as_millis()
                ),
                now,
            );
        }
    }

    /// Answers clients that wait for the end of a reload or for the stop.
    pub fn on_announcement(&mut self, announcement: &Announcement) {
        match announcement {
            Announcement::ReloadEnded { seq, result } => {
                let text = match result {
                    ReloadResult::Succeeded { generation, took } => {
                        format!(
                            "ok generation {generation} serving; reload took {} ms\n",
                            took.as_millis()
                        )
                    }
                    ReloadResult::Failed { generation, reason } => {
                        format!("error: reload to generation {generation} failed: {reason}\n")
                    }
                };
                for (mut stream, _) in extract(&mut self.reload_waiters, |(_, s)| s == seq) {
                    reply(&mut stream, &text);
                }
            }
            Announcement::Stopping { .. } => {
                for (mut stream, _) in std::mem::take(&mut self.reload_waiters) {
                    reply(
                        &mut stream,
                        "error: the launcher is stopping; the reload did not happen\n",
                    );
                }
            }
            _ => {}
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("control socket accept failed: {e}");
                    return;
                }
            };
            let refusal = check_peer(&stream).err();
            if let Some(why) = &refusal {
                self.note_drop("refused", why, now);
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.pending.len() >= MAX_PENDING_CLIENTS {
                self.evict_one(now);
            }
            self.pending.push(Pending {
                stream,
                buffer: Vec::new(),
                accepted: now,
                deadline: now + REQUEST_TIMEOUT,
                refusal,
            });
        }
    }

    fn read_requests(&mut self, now: Instant) -> Vec<(UnixStream, Request)> {
        let mut complete = Vec::new();
        let mut still_pending = Vec::new();
        for mut client in std::mem::take(&mut self.pending) {
            match read_line(&mut client) {
                Ok(Some(_)) if client.refusal.is_some() => {
                    let why = client.refusal.take().unwrap_or_default();
                    reply(&mut client.stream, &format!("error: {why}\n"));
                }
                Ok(Some(line)) => match Request::parse(&line) {
                    Ok(request) => complete.push((client.stream, request)),
                    Err(why) => {
                        self.note_drop("dropped (bad request)", &why, now);
                        reply(&mut client.stream, &format!("error: {why}\n"));
                    }
                },
                Ok(None) if client.deadline > now => still_pending.push(client),
                Ok(None) => self.note_drop(
                    "dropped (timeout)",
                    &format!("no request within {}s", REQUEST_TIMEOUT.as_secs()),
                    now,
                ),
                Err(why) => {
                    self.note_drop("dropped (bad request)", &why, now);
                    reply(&mut client.stream, &format!("error: {why}\n"));
                }
            }
        }
        self.pending = still_pending;
        complete
    }

    fn carry_out(
        &mut self,
        mut stream: UnixStream,
        request: Request,
        launcher: &mut Launcher,
        processes: &mut impl Processes,
        now: Instant,
    ) {
        match request {
            Request::Status => {
                let text = status::render_table(&self.name, &launcher.snapshot(processes, now));
                reply(&mut stream, &format!("ok\n{text}"));
            }
            Request::StatusJson => {
                let text = status::render_json(&self.name, &launcher.snapshot(processes, now));
                reply(&mut stream, &format!("ok\n{text}\n"));
            }
            Request::Reload { wait, max_surge } => {
                info!("reload requested on the control socket");
                if let Some(Err(why)) = max_surge.map(|n| launcher.check_surge(n)) {
                    return reply(&mut stream, &format!("error: {why}\n"));
                }
                match launcher.request_reload_with_surge(processes, max_surge, now) {
                    None => reply(&mut stream, "error: the launcher is stopping\n"),
                    Some(seq) if wait => self.reload_waiters.push((stream, seq)),
                    Some(_) => reply(&mut stream, "ok reload requested\n"),
                }
            }
            Request::Scale(workers) => match launcher.scale(processes, workers, now) {
                Ok(()) => reply(&mut stream, &format!("ok scaling to {workers} workers\n")),
                Err(why) => reply(&mut stream, &format!("error: {why}\n")),
            },
            Request::Stop => {
                info!("stop requested on the control socket");
                launcher.request_stop(processes, now);
                let line = format!("ok stopping (pid {})\n", std::process::id());
                if write_all(&mut stream, line.as_bytes()).is_ok() {
                    self.stop_waiters.push(stream);
                }
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        for mut stream in self.stop_waiters.drain(..) {
            reply(&mut stream, "ok stopped\n");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Only root and the launcher's own user may control it.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let creds = getsockopt(stream, PeerCredentials)
        .map_err(|e| format!("unable to read peer credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if creds.uid() == 0 || creds.uid() == me {
        Ok(())
    } else {
        Err(format!(
            "uid {} (pid {}) may not control this launcher: only root and uid {me} may",
            creds.uid(),
            creds.pid()
        ))
    }
}

/// Whether the client has sent anything: read already, or waiting in its socket (peeked, not consumed).
fn has_sent(client: &Pending) -> bool {
    if !client.buffer.is_empty() {
        return true;
    }
    let mut byte = [0u8; 1];
    matches!(
        nix::sys::socket::recv(
            client.stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(n) if n > 0
    )
}

/// Reads what is available; Some(line) once a full line arrived.
fn read_line(client: &mut Pending) -> Result<Option<String>, String> {
    let mut chunk = [0u8; MAX_REQUEST_BYTES];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => return Err("closed before sending a whole request line".into()),
            Ok(n) => client.buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed: {e}")),
        }
        if client.buffer.len() > MAX_REQUEST_BYTES {
            return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
        }
    }
    let Some(end) = client.buffer.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    String::from_utf8(client.buffer[..end].to_vec())
        .map(Some)
        .map_err(|_| "request is not UTF-8".into())
}

/// Sends a reply without blocking the loop; a client that does not read it loses it.
fn reply(stream: &mut UnixStream, text: &str) {
    if let Err(e) = write_all(stream, text.as_bytes()) {
        debug!("control reply lost: {e}");
    }
}

fn write_all(stream: &mut UnixStream, bytes: &[u8]) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.write_all(bytes)
}

/// Removes and returns the elements matching `wanted`.
fn extract<T>(items: &mut Vec<T>, wanted: impl Fn(&T) -> bool) -> Vec<T> {
    let (matched, kept) = std::mem::take(items)
        .into_iter()
        .partition(|item| wanted(item));
    *items = kept;
    matched
}

/// Why `find_socket` found no one socket.
#[derive(Debug)]
pub enum NotFound {
    /// No launcher of that name, none at all, or not as this user.
    Unreachable(String),
    /// A usage error: several launchers run and no --name chose one, or --name is not a valid name.
    Usage(String),
}

/// The socket path of a running launcher, for clients: `--name`, or the only one there is.
pub fn find_socket(name: Option<&str>) -> Result<PathBuf, NotFound> {
    let dirs = socket_dirs();
    let shown = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(name) = name {
        validate_name(name).map_err(NotFound::Usage)?;
        for dir in &dirs {
            let path = dir.join(format!("{name}.sock"));
            match std::fs::metadata(&path) {
                Ok(_) => return Ok(path),
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(NotFound::Unreachable(permission_denied(dir)))
                }
                Err(_) => {}
            }
        }
        return Err(NotFound::Unreachable(format!(
            "no launcher named {name} is running (looked in {shown})"
        )));
    }
    if let Some(dir) = dirs
        .iter()
        .find(|d| std::fs::read_dir(d).is_err_and(|e| e.kind() == ErrorKind::PermissionDenied))
    {
        return Err(NotFound::Unreachable(permission_denied(dir)));
    }
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    found.dedup();
    match found.len() {
        0 => Err(NotFound::Unreachable(format!(
            "no running launcher found (looked in {shown}); is it running, as this user?"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(NotFound::Usage(format!(
            "several launchers are running: {}; choose one with --name NAME",
            found
                .iter()
                .filter_map(|p| p.file_stem())
                .map(|s| s.to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn permission_denied(dir: &Path) -> String {
    format!(
        "permission denied on {}: the launcher runs as another user; run this as root or as that user",
        dir.display()
    )
}

/// For messages: the instance name of a socket path.
pub fn name_of(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        for r in [
            Request::Status,
            Request::StatusJson,
            Request::Reload {
                wait: true,
                max_surge: None,
            },
            Request::Reload {
                wait: false,
                max_surge: Some(2),
            },
            Request::Scale(3),
            Request::Stop,
        ] {
            assert_eq!(Request::parse(&r.to_string()).unwrap(), r);
        }
        assert!(Request::parse("scale many").is_err());
        assert!(Request::parse("reload max-surge=0")
            .unwrap_err()
            .contains("at least 1"));
        assert!(Request::parse("reload surge").is_err());
        assert!(Request::parse("status now please").is_err());
        assert!(Request::parse("\u{0}\u{1}").is_err());
    }

    #[test]
    fn names_are_file_name_safe() {
        assert!(validate_name("web-app_2@eu").is_ok());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("").is_err());
    }
}
