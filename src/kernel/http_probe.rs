//! One HTTP probe of one worker (`--ready http:PATH`), without blocking: a non-blocking TCP client
//! that connects from a source port of its own, sends `GET PATH HTTP/1.1` with `Connection: close`
//! and reads the status line. The event loop polls its descriptor (`poll_flags`) and calls
//! `advance` when it is ready or the deadline passed. Invariant: `advance` never blocks, and a probe
//! ends exactly once, with an outcome, by its deadline at the latest.
//!
//! The source port is bound before connecting so that the steering program can route the
//! connection to the probed worker by it (`steering::router::Router::start_probe`).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::launcher::ProbeOutcome;

/// Bytes of the answer read at most: the status line and headers of a health endpoint fit; a
/// bigger answer is cut off there (its status is already known).
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Source ports a probe binds: below every common default ephemeral range of clients (Linux
/// 32768–60999, Windows and macOS 49152–65535), because the steering program routes by source port
/// alone — a client elsewhere connecting from a probe's port during the probe would be routed with
/// it. Above 20000 to stay clear of well-known and registered service ports.
const PROBE_PORTS: std::ops::Range<u16> = 20000..32768;
/// Ports tried before falling back to one the kernel picks (some may be taken).
const PROBE_PORT_TRIES: usize = 16;
/// Characters of the body kept for the log.
const EXCERPT_CHARS: usize = 80;

/// Where a probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// connect(2) is under way.
    Connecting,
    /// Writing the request; this many bytes are out.
    Sending(usize),
    /// Reading the answer.
    Reading,
}

/// One probe under way.
#[derive(Debug)]
pub struct HttpProbe {
    socket: Socket,
    target: SocketAddr,
    source_port: u16,
    request: Vec<u8>,
    answer: Vec<u8>,
    stage: Stage,
    started: Instant,
    deadline: Instant,
}

/// The address a probe of a listener on `listening` connects to: the same address, or the
/// loopback of its family for a wildcard bind.
pub fn target_of(listening: SocketAddr) -> SocketAddr {
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listening.port())
}

impl HttpProbe {
    /// A probe of `target` for `path`, bound to a source port of its own (`source_port`) but not
    /// connected yet: route it first, then `connect`.
    pub fn bind(
        target: SocketAddr,
        path: &str,
        timeout: Duration,
        now: Instant,
    ) -> io::Result<HttpProbe> {
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        // A port of PROBE_PORTS; the same loopback address as the target keeps it local.
        let local = if target.ip().is_loopback() {
            SocketAddr::new(target.ip(), 0)
        } else {
            SocketAddr::new(unspecified(target), 0)
        };
        bind_probe_port(&socket, local)?;
        let source_port = socket
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("the probe socket has no port"))?;
        let host = match target.ip() {
            IpAddr::V6(ip) => format!("[{ip}]:{}", target.port()),
            IpAddr::V4(ip) => format!("{ip}:{}", target.port()),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: reuseport-launch\r\nConnection: close\r\n\r\n"
        );
        Ok(HttpProbe {
            socket,
            target,
            source_port,
            request: request.into_bytes(),
            answer: Vec::new(),
            stage: Stage::Connecting,
            started: now,
            deadline: now + timeout,
        })
    }

    /// The probe's TCP source port.
    pub fn source_port(&self) -> u16 {
        self.source_port
    }

    /// When the probe gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Starts connecting; an outcome when that already failed.
    pub fn connect(&mut self) -> Option<ProbeOutcome> {
        match self.socket.connect(&SockAddr::from(self.target)) {
            Ok(()) => {
                self.stage = Stage::Sending(0);
                None
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => None,
            Err(e) => Some(self.failed("connect", &e)),
        }
    }

    /// What to poll the descriptor for.
    pub fn poll_flags(&self) -> PollFlags {
        match self.stage {
            Stage::Connecting | Stage::Sending(_) => PollFlags::POLLOUT,
            Stage::Reading => PollFlags::POLLIN,
        }
    }

    /// Does what can be done now without blocking; the outcome once the probe is over.
    pub fn advance(&mut self, now: Instant) -> Option<ProbeOutcome> {
        if let Some(outcome) = self.step() {
            return Some(outcome);
        }
        (now >= self.deadline).then(|| match self.status() {
            Some(status) => self.answered(status),
            None => ProbeOutcome::TimedOut(self.deadline - self.started),
        })
    }

    fn step(&mut self) -> Option<ProbeOutcome> {
        if self.stage == Stage::Connecting {
            match self.socket.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return Some(self.failed("connect", &e)),
            }
            match self.socket.peer_addr() {
                Ok(_) => self.stage = Stage::Sending(0),
                Err(e) if e.kind() == ErrorKind::NotConnected => return None,
                Err(e) => return Some(self.failed("connect", &e)),
            }
        }
        while let Stage::Sending(sent) = self.stage {
            match (&self.socket).write(&self.request[sent..]) {
                Ok(n) if sent + n == self.request.len() => self.stage = Stage::Reading,
                Ok(n) => self.stage = Stage::Sending(sent + n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Some(self.failed("send the request", &e)),
            }
        }
        let mut buffer = [0u8; 4096];
        loop {
            match (&self.socket).read(&mut buffer) {
                Ok(0) => return Some(self.finish()),
                Ok(n) => {
                    let room = MAX_ANSWER_BYTES - self.answer.len();
                    self.answer.extend_from_slice(&buffer[..n.min(room)]);
                    if self.answer.len() >= MAX_ANSWER_BYTES || self.complete() {
                        return Some(self.finish());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if self.status().is_some() => {
                    log::debug!("probe of {}: {e} after the status line", self.target);
                    return Some(self.finish());
                }
                Err(e) => return Some(self.failed("read the answer", &e)),
            }
        }
    }

    /// The whole answer is in: the headers, and as many body bytes as Content-Length says (a
    /// server that ignores `Connection: close` must not hold the probe until its deadline).
    fn complete(&self) -> bool {
        let Some(end) = find(&self.answer, b"\r\n\r\n") else {
            return false;
        };
        let headers = String::from_utf8_lossy(&self.answer[..end]).to_ascii_lowercase();
        headers
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|length| self.answer.len() >= end + 4 + length)
    }

    fn finish(&self) -> ProbeOutcome {
        match self.status() {
            Some(status) => self.answered(status),
            None if self.answer.is_empty() => {
                ProbeOutcome::Failed("connection closed without an answer".into())
            }
            None => {
                ProbeOutcome::Failed(format!("not an HTTP answer: {:?}", excerpt(&self.answer)))
            }
        }
    }

    fn answered(&self, status: u16) -> ProbeOutcome {
        let body = find(&self.answer, b"\r\n\r\n").map_or(&[][..], |end| &self.answer[end + 4..]);
        ProbeOutcome::Answered {
            status,
            excerpt: excerpt(body),
        }
    }

    /// The status code of a complete status line, `HTTP/1.x NNN ...`.
    fn status(&self) -> Option<u16> {
        let line_end = find(&self.answer, b"\r\n")?;
        let line = std::str::from_utf8(&self.answer[..line_end]).ok()?;
        let mut words = line.split(' ');
        if !words.next()?.starts_with("HTTP/") {
            return None;
        }
        words
            .next()?
            .parse()
            .ok()
            .filter(|s| (100..600).contains(s))
    }

    fn failed(&self, what: &str, e: &io::Error) -> ProbeOutcome {
        ProbeOutcome::Failed(format!("unable to {what} ({}): {e}", self.target))
    }
}

impl AsFd for HttpProbe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Binds `socket` to `local`'s address and a port of PROBE_PORTS, starting at a pseudo-random one
/// (the clock's nanoseconds); the kernel's choice when PROBE_PORT_TRIES of them are taken.
fn bind_probe_port(socket: &Socket, local: SocketAddr) -> io::Result<()> {
    let span = (PROBE_PORTS.end - PROBE_PORTS.start) as usize;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    for i in 0..PROBE_PORT_TRIES {
        // A stride coprime with the span walks distinct ports.
        let port = PROBE_PORTS.start + ((seed + i * 7919) % span) as u16;
        if socket
            .bind(&SockAddr::from(SocketAddr::new(local.ip(), port)))
            .is_ok()
        {
            return Ok(());
        }
    }
    socket.bind(&SockAddr::from(local))
}

fn unspecified(target: SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first line of `bytes`, at most EXCERPT_CHARS characters.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn run(probe: &mut HttpProbe) -> ProbeOutcome {
        if let Some(outcome) = probe.connect() {
            return outcome;
        }
        loop {
            let mut fds = [nix::poll::PollFd::new(probe.as_fd(), probe.poll_flags())];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
            if let Some(outcome) = probe.advance(Instant::now()) {
                return outcome;
            }
        }
    }

    fn serve_once(answer: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).unwrap();
            stream.write_all(answer).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (address, server)
    }

    #[test]
    fn a_2xx_answer_passes_and_the_request_names_the_path() {
        let (address, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npid=42\n");
        let mut probe =
            HttpProbe::bind(address, "/healthz", Duration::from_secs(5), Instant::now()).unwrap();
        let outcome = run(&mut probe);
        assert_eq!(
            outcome,
            ProbeOutcome::Answered {
                status: 200,
                excerpt: "pid=42".into()
            }
        );
        assert!(outcome.passed());
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Connection: close\r\n"), "{request}");
    }

    #[test]
    fn a_503_fails_with_its_status() {
        let (address, _server) = serve_once(b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
        let mut probe =
            HttpProbe::bind(address, "/", Duration::from_secs(5), Instant::now()).unwrap();
        let outcome = run(&mut probe);
        assert!(!outcome.passed());
        assert_eq!(outcome.to_string(), "answered 503");
    }

    #[test]
    fn a_closed_port_is_a_connection_error() {
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut probe =
            HttpProbe::bind(address, "/", Duration::from_secs(5), Instant::now()).unwrap();
        let outcome = run(&mut probe);
        assert!(
            matches!(&outcome, ProbeOutcome::Failed(why) if why.contains("refused")),
            "{outcome}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut probe =
            HttpProbe::bind(address, "/", Duration::from_millis(200), Instant::now()).unwrap();
        let outcome = run(&mut probe);
        assert_eq!(outcome, ProbeOutcome::TimedOut(Duration::from_millis(200)));
        drop(listener);
    }

    #[test]
    fn probes_bind_ports_below_the_clients_ephemeral_ranges() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        for _ in 0..20 {
            let probe =
                HttpProbe::bind(address, "/", Duration::from_secs(1), Instant::now()).unwrap();
            assert!(
                PROBE_PORTS.contains(&probe.source_port()),
                "{}",
                probe.source_port()
            );
        }
    }

    #[test]
    fn a_wildcard_bind_is_probed_on_loopback() {
        assert_eq!(
            target_of("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            target_of("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            target_of("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse().unwrap()
        );
    }
}
