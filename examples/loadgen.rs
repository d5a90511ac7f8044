//! `loadgen`: the HTTP load client of the tests, the demo and the benchmarks. It owns the failure-counting
//! rules that "zero failed requests" claims rest on: a refused or reset connection, a timeout, a response cut
//! short or a non-2xx status is a failure, with one exception that real HTTP clients also make — a request
//! written on a REUSED keep-alive connection that the server closed before sending any byte of the response is
//! retried once on a new connection and counted in `retries`. Invariant: requests = ok + failures, and a
//! request is counted once however many attempts it took.
//!
//! Shape: C client threads send sequential `GET /` requests; the main thread waits on a signal self-pipe until
//! the duration ends or SIGINT/SIGTERM arrives, prints per-interval progress to stderr, then joins the threads
//! (each finishes the request it has in flight) and prints one JSON report line on stdout.
//!
//! Reload marks: SIGUSR1 says "a reload has started", SIGUSR2 "it is over" (a benchmark sends them at its
//! SIGHUP and when the old generation is gone). A request that starts or ends between the two counts in
//! the `reload_*` latencies of the report, every other one in the `steady_*` ones.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// Writes one line to stderr, ignoring errors: a closed stderr (a vanished log pipe) must not panic the process.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// Bytes read per read(2): a whole response of the example server fits in one read.
const READ_CHUNK_BYTES: usize = 4096;
/// Largest response head accepted: anything bigger is not a server under test behaving sanely.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "HTTP load client for reuseport-launch tests, demo and benchmarks"
)]
struct Args {
    /// Server address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    addr: SocketAddr,
    /// Client threads, each with one request in flight at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// keepalive: reuse each connection; close: one connection per request.
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    mode: Mode,
    /// How long to run (fractions allowed); SIGINT or SIGTERM ends the run earlier.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    duration_secs: Duration,
    /// Limit on connecting, on writing the request and on each wait for response bytes.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Pause of each client thread between two requests.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_between_ms: u64,
    /// Print {"t_ms","ok","failures"} for each interval of this length to stderr (0: never).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    progress_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Reuse the connection until the server answers `Connection: close` or closes it.
    Keepalive,
    /// Send `Connection: close`; one connection per request.
    Close,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// Why a request failed; the report counts each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    /// Connecting failed: refused or timed out (no listener took the connection).
    Connect,
    /// The connection was reset (or the write hit EPIPE) before a complete response, also when the reset
    /// came while connect(2) was still waiting for the handshake.
    Reset,
    /// Writing the request or waiting for response bytes took longer than --timeout-ms.
    Timeout,
    /// A complete response with a non-2xx status.
    Status,
    /// EOF before a complete response, or a response that is not HTTP.
    Incomplete,
}

impl FailureKind {
    const ALL: [FailureKind; 5] = [
        Self::Connect,
        Self::Reset,
        Self::Timeout,
        Self::Status,
        Self::Incomplete,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::Incomplete => "incomplete",
        }
    }
}

/// An attempt that got no complete response.
struct Broken {
    kind: FailureKind,
    /// No byte of the response had arrived: on a reused connection this is the retryable case.
    before_response: bool,
}

impl Broken {
    fn from_io(error: &io::Error, response_bytes: usize) -> Broken {
        let kind = match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FailureKind::Timeout,
            _ => FailureKind::Reset,
        };
        Broken {
            kind,
            before_response: response_bytes == 0,
        }
    }
}

/// A complete response.
struct Response {
    status: u16,
    /// The server will close the connection after this response.
    close: bool,
    pid: Option<i32>,
    generation: u32,
}

/// Tells the client threads to stop, and wakes those pausing between requests.
struct Stop {
    stopped: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    fn is_set(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn set(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Pauses for `pause` unless stopped first; returns whether the run is stopped.
    fn pause(&self, pause: Duration) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self
            .wake
            .wait_timeout_while(guard, pause, |_| !self.is_set());
        self.is_set()
    }
}

/// Counts the main thread reads for progress lines while the client threads run, and the reload mark.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    failures: AtomicU64,
    /// Between a SIGUSR1 and the next SIGUSR2: a reload is under way.
    reloading: AtomicBool,
}

/// Latencies in microseconds, bucketed: exact below 64 µs, then 32 buckets per power of two (under 3% error),
/// so memory stays at a few kilobytes per thread however long the run.
struct Histogram {
    counts: Vec<u64>,
}

/// Sub-buckets per power of two (2^5 = 32).
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Exact buckets for 0..2*SUB_BUCKETS, then SUB_BUCKETS per remaining power of two of a u64.
const BUCKETS: usize = (2 * SUB_BUCKETS + (63 - SUB_BUCKET_BITS as u64) * SUB_BUCKETS) as usize;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
        }
    }

    fn record(&mut self, micros: u64) {
        let index = if micros < 2 * SUB_BUCKETS {
            micros
        } else {
            let shift = 63 - micros.leading_zeros() - SUB_BUCKET_BITS; // >= 1
            let sub = (micros >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
            2 * SUB_BUCKETS + u64::from(shift - 1) * SUB_BUCKETS + sub
        };
        self.counts[index as usize] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        self.counts
            .iter_mut()
            .zip(&other.counts)
            .for_each(|(a, b)| *a += b);
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1), as the middle of its bucket; 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        let total = self.total();
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if count > 0 && seen >= rank {
                let index = index as u64;
                if index < 2 * SUB_BUCKETS {
                    return index;
                }
                let shift = (index - 2 * SUB_BUCKETS) / SUB_BUCKETS + 1;
                let low = ((index - 2 * SUB_BUCKETS) % SUB_BUCKETS + SUB_BUCKETS) << shift;
                return low + (1 << shift) / 2;
            }
        }
        0
    }
}

/// What one client thread counted.
struct Stats {
    ok: u64,
    failures: u64,
    retries: u64,
    kinds: [u64; FailureKind::ALL.len()],
    /// pid -> (generation, responses)
    by_pid: HashMap<i32, (u32, u64)>,
    latency_us: Histogram,
    /// The same latencies split by the reload marks.
    steady_latency_us: Histogram,
    reload_latency_us: Histogram,
}

impl Stats {
    fn new() -> Stats {
        let kinds = [0; FailureKind::ALL.len()];
        Stats {
            ok: 0,
            failures: 0,
            retries: 0,
            kinds,
            by_pid: HashMap::new(),
            latency_us: Histogram::new(),
            steady_latency_us: Histogram::new(),
            reload_latency_us: Histogram::new(),
        }
    }

    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.failures += other.failures;
        self.retries += other.retries;
        self.kinds
            .iter_mut()
            .zip(other.kinds)
            .for_each(|(a, b)| *a += b);
        for (pid, (generation, count)) in other.by_pid {
            let entry = self.by_pid.entry(pid).or_insert((generation, 0));
            entry.1 += count;
        }
        self.latency_us.merge(&other.latency_us);
        self.steady_latency_us.merge(&other.steady_latency_us);
        self.reload_latency_us.merge(&other.reload_latency_us);
    }

    fn record_latency(&mut self, micros: u64, during_reload: bool) {
        self.latency_us.record(micros);
        if during_reload {
            self.reload_latency_us.record(micros);
        } else {
            self.steady_latency_us.record(micros);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say!("loadgen: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let (signals, signal_write) =
        UnixStream::pair().map_err(|e| format!("unable to create signal pipe: {e}"))?;
    for signal in [SIGINT, SIGTERM] {
        let pipe = signal_write
            .try_clone()
            .map_err(|e| format!("unable to duplicate the signal pipe: {e}"))?;
        pipe.set_nonblocking(true)
            .map_err(|e| format!("unable to set up the signal pipe: {e}"))?;
        signal_hook::low_level::pipe::register(signal, pipe)
            .map_err(|e| format!("unable to install the handler of signal {signal}: {e}"))?;
    }

    let stop = Arc::new(Stop {
        stopped: AtomicBool::new(false),
        lock: Mutex::new(()),
        wake: Condvar::new(),
    });
    let live = Arc::new(Live::default());
    register_reload_marks(&live)?;
    let start = Instant::now();
    let mut clients = Vec::new();
    for index in 0..args.connections {
        let client = Client::new(args);
        let (thread_stop, thread_live) = (Arc::clone(&stop), Arc::clone(&live));
        let spawned = thread::Builder::new()
            .name(format!("client-{index}"))
            .spawn(move || client.run(&thread_stop, &thread_live));
        match spawned {
            Ok(handle) => clients.push(handle),
            Err(e) => {
                stop.set();
                return Err(format!("unable to start client thread {index}: {e}"));
            }
        }
    }

    wait_for_end(args, start, &signals, &live);
    stop.set();
    let mut total = Stats::new();
    for handle in clients {
        total.merge(
            handle
                .join()
                .map_err(|_| "a client thread panicked".to_owned())?,
        );
    }
    let _ = writeln!(io::stdout(), "{}", report(&total, start.elapsed()));
    Ok(())
}

/// SIGUSR1 sets the reload mark, SIGUSR2 clears it (an atomic store: async-signal-safe).
fn register_reload_marks(live: &Arc<Live>) -> Result<(), String> {
    for (signal, reloading) in [(SIGUSR1, true), (SIGUSR2, false)] {
        let live = Arc::clone(live);
        let action = move || live.reloading.store(reloading, Ordering::SeqCst);
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe { signal_hook::low_level::register(signal, action) }
            .map_err(|e| format!("unable to install the handler of signal {signal}: {e}"))?;
    }
    Ok(())
}

/// Sleeps until the duration is over or a signal arrives, printing a progress line every --progress-ms.
fn wait_for_end(args: &Args, start: Instant, signals: &UnixStream, live: &Live) {
    let deadline = start + args.duration_secs;
    let interval = (args.progress_ms > 0).then(|| Duration::from_millis(args.progress_ms));
    let mut next_progress = interval.map(|i| start + i);
    let (mut last_ok, mut last_failures) = (0, 0);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        if let (Some(due), Some(interval)) = (next_progress, interval) {
            if now >= due {
                let (ok, failures) = (
                    live.ok.load(Ordering::SeqCst),
                    live.failures.load(Ordering::SeqCst),
                );
                let t_ms = now.duration_since(start).as_millis();
                say!(
                    r#"{{"t_ms":{t_ms},"ok":{},"failures":{}}}"#,
                    ok - last_ok,
                    failures - last_failures
                );
                (last_ok, last_failures) = (ok, failures);
                let next = due + interval;
                next_progress = Some(if next > now { next } else { now + interval });
                continue;
            }
        }
        let wake = next_progress.map_or(deadline, |due| due.min(deadline));
        let timeout =
            PollTimeout::try_from(wake.saturating_duration_since(now)).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            return; // SIGINT or SIGTERM.
        }
    }
}

/// The one-line JSON report.
fn report(total: &Stats, elapsed: Duration) -> String {
    let kinds: Vec<String> = FailureKind::ALL
        .iter()
        .zip(total.kinds)
        .map(|(kind, n)| format!(r#""{}":{n}"#, kind.name()))
        .collect();
    let sorted: BTreeMap<_, _> = total.by_pid.iter().collect();
    let by_pid: Vec<String> = sorted
        .into_iter()
        .map(|(pid, (generation, count))| {
            format!(r#""{pid}":{{"generation":{generation},"count":{count}}}"#)
        })
        .collect();
    let rps = total.ok as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    format!(
        r#"{{"requests":{},"ok":{},"failures":{},"retries":{},"failure_kinds":{{{}}},"by_pid":{{{}}},"duration_ms":{},"rps":{rps:.1},"p50_us":{},"p99_us":{},"steady_requests":{},"steady_p50_us":{},"steady_p99_us":{},"reload_requests":{},"reload_p50_us":{},"reload_p99_us":{}}}"#,
        total.ok + total.failures,
        total.ok,
        total.failures,
        total.retries,
        kinds.join(","),
        by_pid.join(","),
        elapsed.as_millis(),
        total.latency_us.quantile(0.50),
        total.latency_us.quantile(0.99),
        total.steady_latency_us.total(),
        total.steady_latency_us.quantile(0.50),
        total.steady_latency_us.quantile(0.99),
        total.reload_latency_us.total(),
        total.reload_latency_us.quantile(0.50),
        total.reload_latency_us.quantile(0.99),
    )
}

/// One client thread: its connection (kept between requests in keepalive mode) and its counts.
struct Client {
    addr: SocketAddr,
    mode: Mode,
    timeout: Duration,
    delay_between: Duration,
    request: Vec<u8>,
    connection: Option<TcpStream>,
    buffer: Vec<u8>,
    stats: Stats,
}

impl Client {
    fn new(args: &Args) -> Client {
        let close = if args.mode == Mode::Close {
            "Connection: close\r\n"
        } else {
            ""
        };
        Client {
            addr: args.addr,
            mode: args.mode,
            timeout: Duration::from_millis(args.timeout_ms),
            delay_between: Duration::from_millis(args.delay_between_ms),
            request: format!("GET / HTTP/1.1\r\nHost: {}\r\n{close}\r\n", args.addr).into_bytes(),
            connection: None,
            buffer: Vec::with_capacity(READ_CHUNK_BYTES),
            stats: Stats::new(),
        }
    }

    fn run(mut self, stop: &Stop, live: &Live) -> Stats {
        while !stop.is_set() {
            let started = Instant::now();
            let started_in_reload = live.reloading.load(Ordering::SeqCst);
            match self.request_with_retry() {
                Ok(response) if (200..300).contains(&response.status) => {
                    self.stats.ok += 1;
                    live.ok.fetch_add(1, Ordering::SeqCst);
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let during_reload = started_in_reload || live.reloading.load(Ordering::SeqCst);
                    self.stats.record_latency(micros, during_reload);
                    if let Some(pid) = response.pid {
                        self.stats
                            .by_pid
                            .entry(pid)
                            .or_insert((response.generation, 0))
                            .1 += 1;
                    }
                }
                Ok(_) => self.fail(FailureKind::Status, live),
                Err(broken) => self.fail(broken.kind, live),
            }
            if !self.delay_between.is_zero() && stop.pause(self.delay_between) {
                break;
            }
        }
        self.stats
    }

    fn fail(&mut self, kind: FailureKind, live: &Live) {
        self.stats.failures += 1;
        self.stats.kinds[kind as usize] += 1;
        live.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// One request; on a reused connection closed before any response byte, one more try on a new connection.
    fn request_with_retry(&mut self) -> Result<Response, Broken> {
        let reused = self.connection.is_some();
        match self.attempt() {
            Err(broken)
                if reused
                    && broken.before_response
                    && matches!(broken.kind, FailureKind::Reset | FailureKind::Incomplete) =>
            {
                self.stats.retries += 1;
                self.attempt()
            }
            result => result,
        }
    }

    /// One request on the current connection or a new one; the connection is dropped unless it stays usable.
    fn attempt(&mut self) -> Result<Response, Broken> {
        let mut stream = match self.connection.take() {
            Some(stream) => stream,
            None => self.connect().map_err(|e| Broken {
                kind: if e.kind() == io::ErrorKind::ConnectionReset {
                    FailureKind::Reset
                } else {
                    FailureKind::Connect
                },
                before_response: true,
            })?,
        };
        let response = self.exchange(&mut stream)?;
        if response.close || self.mode == Mode::Close {
            // Wait for the server's FIN so that the TIME_WAIT is the server's, not ours; the response is complete.
            let mut rest = [0u8; 256];
            while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
        } else {
            self.connection = Some(stream);
        }
        Ok(response)
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        Ok(stream)
    }

    /// Writes the request and reads one complete response (Content-Length body, or body up to EOF).
    fn exchange(&mut self, stream: &mut TcpStream) -> Result<Response, Broken> {
        stream
            .write_all(&self.request)
            .map_err(|e| Broken::from_io(&e, 0))?;
        self.buffer.clear();
        loop {
            let old_len = self.buffer.len();
            self.buffer.resize(old_len + READ_CHUNK_BYTES, 0);
            let read = stream.read(&mut self.buffer[old_len..]);
            self.buffer.truncate(old_len + *read.as_ref().unwrap_or(&0));
            let eof = match read {
                Ok(n) => n == 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Broken::from_io(&e, old_len)),
            };
            match parse_response(&self.buffer, eof) {
                Parsed::Complete(response) => return Ok(response),
                Parsed::Invalid => {
                    return Err(Broken {
                        kind: FailureKind::Incomplete,
                        before_response: false,
                    })
                }
                Parsed::Partial if eof => {
                    return Err(Broken {
                        kind: FailureKind::Incomplete,
                        before_response: self.buffer.is_empty(),
                    })
                }
                Parsed::Partial => {}
            }
        }
    }
}

/// The outcome of reading the bytes of one response received so far.
enum Parsed {
    Complete(Response),
    /// More bytes are needed.
    Partial,
    /// Not an HTTP response, or a head too large.
    Invalid,
}

fn parse_response(buffer: &[u8], eof: bool) -> Parsed {
    let Some(head_end) = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
    else {
        return if buffer.len() > MAX_HEAD_BYTES {
            Parsed::Invalid
        } else {
            Parsed::Partial
        };
    };
    let Ok(head) = std::str::from_utf8(&buffer[..head_end]) else {
        return Parsed::Invalid;
    };
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or("").split(' ');
    let version = status_line.next().unwrap_or("");
    let Some(status) = status_line.next().and_then(|s| s.parse::<u16>().ok()) else {
        return Parsed::Invalid;
    };
    let mut response = Response {
        status,
        close: version == "HTTP/1.0",
        pid: None,
        generation: 0,
    };
    let mut content_length = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let Ok(length) = value.parse::<usize>() else {
                return Parsed::Invalid;
            };
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("connection") {
            response.close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("x-pid") {
            response.pid = value.parse().ok();
        } else if name.eq_ignore_ascii_case("x-generation") {
            response.generation = value.parse().unwrap_or(0);
        }
    }
    let complete = match content_length {
        Some(length) => buffer.len() >= head_end + length,
        None => {
            response.close = true;
            eof
        }
    };
    if complete {
        Parsed::Complete(response)
    } else {
        Parsed::Partial
    }
}
