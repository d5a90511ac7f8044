//! The admin endpoint (`--admin ADDR`): a small HTTP/1.1 server in the event loop for load balancers
//! and monitoring — `GET /healthz`, `/metrics` (Prometheus), `/status` (the JSON of `status --json`);
//! HEAD too, without the body.
//! One request per connection, answered with `Connection: close`. Invariant: it never blocks and never
//! grows without bound: sockets are non-blocking and polled, a request must arrive whole within
//! REQUEST_TIMEOUT and MAX_REQUEST_BYTES, a response must be taken within RESPONSE_TIMEOUT, and at most
//! MAX_CLIENTS connections are kept — when full, the one silent for longest is closed to make room. It
//! only reads the decisions (`&Launcher`, and the queue depths `Processes` reports); it changes nothing.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::poll::PollFlags;

use super::metrics::{Format, Metrics};
use super::status;
use crate::launcher::{thousands, Announcement, Launcher, Processes, RateLimit, Verdict};

/// A client has this long from connecting to sending its whole request: load balancers and Prometheus
/// send theirs at once, so a slow or silent client is dropped, never waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A client has this long to take its response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted; real probes and scrapers send a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8192;
/// Headers parsed per request; more is refused (431).
const MAX_HEADERS: usize = 32;
/// Connections kept at once; a flood closes the longest-silent ones instead of growing memory or
/// locking out the next prober.
const MAX_CLIENTS: usize = 64;
/// Connections accepted per turn of the loop, so a connection flood cannot starve signals and timers.
const MAX_ACCEPTS_PER_TURN: usize = 256;
/// Dropped clients of one kind are logged once per this window, then summed up with a count: a flood
/// must not flood the journal.
const DROP_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Kinds of drop (the rate limiter's keys): there are three.
const DROP_KINDS: usize = 3;

enum State {
    /// Reading the request head.
    Reading { buffer: Vec<u8> },
    /// Writing the response; `sent` bytes are out.
    Writing { response: Vec<u8>, sent: usize },
}

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    state: State,
    deadline: Instant,
    /// When it last sent a byte (or connected): the longest-silent client is closed first when full.
    last_heard: Instant,
}

pub struct AdminServer {
    listener: TcpListener,
    clients: Vec<Client>,
    metrics: Metrics,
    name: String,
    /// When a dropped client is logged, by kind of drop.
    drops: RateLimit<&'static str>,
}

impl AdminServer {
    pub fn bind(address: SocketAddr, name: &str) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        info!(
            "admin endpoint on http://{}/ (/healthz, /metrics, /status)",
            listener.local_addr()?
        );
        Ok(AdminServer {
            listener,
            clients: Vec::new(),
            metrics: Metrics::new(),
            name: name.to_string(),
            drops: RateLimit::new(DROP_LOG_WINDOW, DROP_KINDS),
        })
    }

    /// The descriptors to poll, with what to wait for on each.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        std::iter::once((self.listener.as_fd(), PollFlags::POLLIN))
            .chain(self.clients.iter().map(|c| {
                let flags = match c.state {
                    State::Reading { .. } => PollFlags::POLLIN,
                    State::Writing { .. } => PollFlags::POLLOUT,
                };
                (c.stream.as_fd(), flags)
            }))
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .map(|c| c.deadline)
            .chain(self.drops.next_deadline())
            .min()
    }

    /// Feeds the counters of `/metrics`.
    pub fn on_announcement(&mut self, announcement: &Announcement) {
        self.metrics.on_announcement(announcement);
    }

    /// Accepts new clients, reads requests, answers complete ones and writes pending responses.
    /// Clients are handled in a bounded number of non-blocking calls each; none is waited for.
    pub fn serve(&mut self, launcher: &Launcher, processes: &mut impl Processes, now: Instant) {
        self.accept(now);
        let mut kept = Vec::with_capacity(self.clients.len());
        for mut client in std::mem::take(&mut self.clients) {
            if self.advance(&mut client, launcher, processes, now) {
                kept.push(client);
            }
        }
        self.clients = kept;
        for summary in self.drops.due(now) {
            warn!(
                "dropped {} more admin clients ({}) in the last {}s",
                thousands(summary.suppressed),
                summary.key.unwrap_or("other"),
                summary.window.as_secs()
            );
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("admin endpoint: accept failed: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                self.evict_longest_silent(now);
            }
            self.clients.push(Client {
                stream,
                peer,
                state: State::Reading { buffer: Vec::new() },
                deadline: now + REQUEST_TIMEOUT,
                last_heard: now,
            });
        }
    }

    /// Closes the client that has been silent for longest: first one that has sent nothing at all, then
    /// one whose request is incomplete; one being answered only if every client is.
    fn evict_longest_silent(&mut self, now: Instant) {
        let index = self
            .clients
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| {
                let writing = matches!(c.state, State::Writing { .. });
                (writing, has_sent(c), c.last_heard)
            })
            .map(|(i, _)| i);
        if let Some(index) = index {
            let client = self.clients.swap_remove(index);
            self.note_drop(
                &client,
                "closed to make room",
                &format!("{MAX_CLIENTS} connections open"),
                now,
            );
        }
    }

    /// Moves one client on; false once it is done (answered or dropped).
    fn advance(
        &mut self,
        client: &mut Client,
        launcher: &Launcher,
        processes: &mut impl Processes,
        now: Instant,
    ) -> bool {
        if let State::Reading { buffer } = &mut client.state {
            match read_request(&mut client.stream, buffer) {
                Ok(Progress::Nothing) => {}
                Ok(Progress::More) => client.last_heard = now,
                Ok(Progress::Complete(response)) => {
                    let response =
                        response.unwrap_or_else(|| self.answer(buffer, launcher, processes, now));
                    client.state = State::Writing { response, sent: 0 };
                    client.deadline = now + RESPONSE_TIMEOUT;
                    client.last_heard = now;
                }
                Err(why) => {
                    debug!("admin client {} dropped: {why}", client.peer);
                    return false;
                }
            }
        }
        if let State::Writing { response, sent } = &mut client.state {
            match write_some(&mut client.stream, &response[*sent..]) {
                Ok(n) => *sent += n,
                Err(e) => {
                    debug!("admin client {}: response lost: {e}", client.peer);
                    return false;
                }
            }
            if *sent == response.len() {
                let _ = client.stream.shutdown(std::net::Shutdown::Write);
                return false;
            }
        }
        if client.deadline <= now {
            let (kind, detail) = match client.state {
                State::Reading { .. } => {
                    // Best effort: tell a slow client why, without waiting for it to read.
                    let _ = client.stream.write(&response(
                        408,
                        "text/plain",
                        "request not received in time\n",
                    ));
                    (
                        "request timeout",
                        format!("no whole request within {}s", REQUEST_TIMEOUT.as_secs()),
                    )
                }
                State::Writing { .. } => (
                    "response timeout",
                    format!("response not taken within {}s", RESPONSE_TIMEOUT.as_secs()),
                ),
            };
            self.note_drop(client, kind, &detail, now);
            return false;
        }
        true
    }

    /// The response to a complete, parsed request head in `buffer`.
    fn answer(
        &self,
        buffer: &[u8],
        launcher: &Launcher,
        processes: &mut impl Processes,
        now: Instant,
    ) -> Vec<u8> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if request.parse(buffer).is_err() {
            return response(400, "text/plain", "malformed request\n");
        }
        let (Some(method), Some(target)) = (request.method, request.path) else {
            return response(400, "text/plain", "malformed request\n");
        };
        // HEAD is GET without the body (every HTTP server serves both; some probes send HEAD).
        match method {
            "GET" => self.route(&request, target, launcher, processes, now),
            "HEAD" => without_body(self.route(&request, target, launcher, processes, now)),
            _ => response(405, "text/plain", "only GET and HEAD are served\n"),
        }
    }

    /// The response to a GET of `target`.
    fn route(
        &self,
        request: &httparse::Request,
        target: &str,
        launcher: &Launcher,
        processes: &mut impl Processes,
        now: Instant,
    ) -> Vec<u8> {
        let path = target.split('?').next().unwrap_or(target);
        match path {
            "/healthz" => match launcher.health() {
                Ok(line) => response(200, "text/plain", &format!("ok: {line}\n")),
                Err(why) => response(503, "text/plain", &format!("unavailable: {why}\n")),
            },
            "/metrics" => {
                let accept = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .and_then(|h| std::str::from_utf8(h.value).ok());
                let format = Format::from_accept(accept);
                let text = self
                    .metrics
                    .render(&launcher.snapshot(processes, now), format);
                response(200, format.content_type(), &text)
            }
            "/status" => response(
                200,
                "application/json",
                &format!(
                    "{}\n",
                    status::render_json(&self.name, &launcher.snapshot(processes, now))
                ),
            ),
            _ => response(
                404,
                "text/plain",
                "not found; try /healthz, /metrics or /status\n",
            ),
        }
    }

    /// Logs a dropped client, or counts it when one of its `kind` was logged within DROP_LOG_WINDOW.
    fn note_drop(&mut self, client: &Client, kind: &'static str, detail: &str, now: Instant) {
        if self.drops.check(kind, now) == Verdict::Log {
            warn!(
                "admin client {} dropped ({kind}): {detail}; more of these are counted for {}s",
                client.peer,
                DROP_LOG_WINDOW.as_secs()
            );
        }
    }
}

/// What one read turn produced.
enum Progress {
    /// Nothing new.
    Nothing,
    /// Some bytes; the head is not complete yet.
    More,
    /// The head is complete (None: answer it), or it can be refused already (Some: this response).
    Complete(Option<Vec<u8>>),
}

fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Progress, String> {
    let mut chunk = [0u8; 2048];
    let mut got = false;
    // A client may send its request and shut its side at once (`nc -N`); it still gets its answer.
    let mut closed = false;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) if buffer.is_empty() => return Err("closed without a request".into()),
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                got = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed: {e}")),
        }
        if buffer.len() > MAX_REQUEST_BYTES {
            return Ok(Progress::Complete(Some(response(
                431,
                "text/plain",
                "request head too large\n",
            ))));
        }
    }
    if !got {
        return Ok(Progress::Nothing);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(buffer) {
        Ok(httparse::Status::Complete(_)) => Ok(Progress::Complete(None)),
        Ok(httparse::Status::Partial) if closed => {
            Err("closed before the end of its request".into())
        }
        Ok(httparse::Status::Partial) => Ok(Progress::More),
        Err(httparse::Error::TooManyHeaders) => Ok(Progress::Complete(Some(response(
            431,
            "text/plain",
            "too many headers\n",
        )))),
        Err(e) => Ok(Progress::Complete(Some(response(
            400,
            "text/plain",
            &format!("malformed request: {e}\n"),
        )))),
    }
}

/// Whether the client has sent anything: read already, or waiting in its socket (peeked, not consumed).
fn has_sent(client: &Client) -> bool {
    match &client.state {
        State::Reading { buffer } if buffer.is_empty() => {
            let mut byte = [0u8; 1];
            matches!(client.stream.peek(&mut byte), Ok(n) if n > 0)
        }
        _ => true,
    }
}

/// The same response without its body (for HEAD): the head, Content-Length included, stays.
fn without_body(mut response: Vec<u8>) -> Vec<u8> {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
    response
}

fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// A whole HTTP/1.1 response that closes the connection.
fn response(code: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_length_and_close() {
        let text =
            String::from_utf8(response(503, "text/plain", "unavailable: stopping\n")).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("Content-Length: 22\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nunavailable: stopping\n"));
        assert!(String::from_utf8(response(405, "text/plain", "x"))
            .unwrap()
            .contains("Allow: GET, HEAD"));
        let head = without_body(response(200, "text/plain", "ok\n"));
        assert!(head.ends_with(
            b"Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
    }
}
