//! `example-server`: the bundled HTTP/1.1 server that tests, the demo and benchmarks run under the launcher.
//! It owns the reference behaviour of a well-behaved worker: bind with SO_REUSEPORT, send READY=1 once it
//! listens, answer every request with its generation, worker slot and pid, and on SIGTERM (or SIGINT) drain
//! without losing a request. Invariant: after the signal no new connection is accepted, every response says
//! `Connection: close`, a connection idle for `--drain-idle-ms` is closed, and the process exits 0 once no
//! connection is left. Knobs (`--delay-ms`, `--crash-after`, ...) simulate slow, crashing or stubborn servers,
//! and big (`--hold-mb`) or leaking (`--leak-kb-per-request`) ones.
//!
//! Shape: the main thread polls the listener and a signal self-pipe; each connection gets a thread that polls its
//! socket and a drain pipe (written once at SIGTERM and never read, so it stays readable for every thread).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self as unix_net, UnixDatagram, UnixStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigHandler, Signal};
use signal_hook::consts::{SIGINT, SIGTERM};
use socket2::{Domain, Socket, Type};

/// Writes one line to stderr in one write(2), so that the lines of several workers sharing the launcher's
/// stderr never interleave mid-line (stderr is unbuffered: `writeln!` would write each piece on its own).
/// Errors are ignored: a closed stderr (a vanished log pipe) must not panic the process.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = io::stderr().write_all(line.as_bytes());
    }};
}

const ENV_GENERATION: &str = "REUSEPORT_LAUNCH_GENERATION";
const ENV_WORKER: &str = "REUSEPORT_LAUNCH_WORKER";
const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Flags that may come from the environment instead: (variable, flag, whether the flag takes a value).
const ENV_FLAGS: &[(&str, &str, bool)] = &[
    ("EXAMPLE_HOST", "--host", true),
    ("PORT", "--port", true),
    ("EXAMPLE_DELAY_MS", "--delay-ms", true),
    ("EXAMPLE_START_DELAY_MS", "--start-delay-ms", true),
    ("EXAMPLE_EXIT_BEFORE_READY", "--exit-before-ready", true),
    ("EXAMPLE_NEVER_READY", "--never-ready", false),
    ("EXAMPLE_IGNORE_SIGTERM", "--ignore-sigterm", false),
    ("EXAMPLE_CRASH_AFTER", "--crash-after", true),
    ("EXAMPLE_DRAIN_IDLE_MS", "--drain-idle-ms", true),
    ("EXAMPLE_HOLD_MB", "--hold-mb", true),
    ("EXAMPLE_LEAK_KB_PER_REQUEST", "--leak-kb-per-request", true),
];
/// Values of a switch variable that mean "off", as clap's own env support reads them.
const FALSE_VALUES: &[&str] = &["", "0", "false", "no", "off", "n", "f"];
/// Listen backlog: deep enough that a burst of connects during a reload is queued, not refused.
const LISTEN_BACKLOG: i32 = 1024;
/// Bytes read per read(2): a whole request of any ordinary client fits in one read.
const READ_CHUNK_BYTES: usize = 4096;
/// Largest request head accepted: more is a broken or hostile client, answered 400.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body read and discarded: the server serves GETs, a bigger body is answered 400.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Pause after an accept error such as EMFILE, so a persistent error does not spin the accept loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Parser, Debug)]
#[command(
    name = "example-server",
    version,
    about = "Example HTTP/1.1 server for reuseport-launch"
)]
#[command(args_override_self = true)]
struct Args {
    /// Address to listen on. [env: EXAMPLE_HOST]
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// TCP port to listen on (shared with other processes through SO_REUSEPORT). [env: PORT]
    #[arg(long)]
    port: u16,
    /// Delay before each response, in milliseconds. [env: EXAMPLE_DELAY_MS]
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
    /// Sleep before binding, in milliseconds (a slow start). [env: EXAMPLE_START_DELAY_MS]
    #[arg(long, value_name = "MS", default_value_t = 0)]
    start_delay_ms: u64,
    /// Bind, then exit with this code without listening or sending READY=1. [env: EXAMPLE_EXIT_BEFORE_READY]
    #[arg(long, value_name = "CODE")]
    exit_before_ready: Option<u8>,
    /// Bind and serve, but never send READY=1. [env: EXAMPLE_NEVER_READY]
    #[arg(long)]
    never_ready: bool,
    /// Ignore SIGTERM and keep serving (SIGINT still drains). [env: EXAMPLE_IGNORE_SIGTERM]
    #[arg(long)]
    ignore_sigterm: bool,
    /// abort() (SIGABRT) right after answering the Nth request. [env: EXAMPLE_CRASH_AFTER]
    #[arg(long, value_name = "N")]
    crash_after: Option<u64>,
    /// After SIGTERM, close a keep-alive connection that gets no byte of a next request for this long.
    /// [env: EXAMPLE_DRAIN_IDLE_MS]
    #[arg(long, value_name = "MS", default_value_t = 200)]
    drain_idle_ms: u64,
    /// Allocate and touch this many MiB at start and hold them, so the process really uses that much
    /// (RSS and PSS). [env: EXAMPLE_HOLD_MB]
    #[arg(long, value_name = "N", default_value_t = 0)]
    hold_mb: usize,
    /// Leak memory: every request allocates and touches this many KiB that are never freed.
    /// [env: EXAMPLE_LEAK_KB_PER_REQUEST]
    #[arg(long, value_name = "N", default_value_t = 0)]
    leak_kb_per_request: usize,
}

/// Who this process is, as reported in every response and log line.
struct Identity {
    generation: String,
    worker: String,
    pid: u32,
}

impl Identity {
    fn from_env() -> Identity {
        let var =
            |name: &str, unset: &str| std::env::var(name).unwrap_or_else(|_| unset.to_owned());
        Identity {
            generation: var(ENV_GENERATION, "0"),
            worker: var(ENV_WORKER, "-"),
            pid: std::process::id(),
        }
    }

    /// A complete 200 response, built once so that answering a request is one write.
    fn response(&self, close: bool) -> Vec<u8> {
        let body = format!(
            "generation={} worker={} pid={}\n",
            self.generation, self.worker, self.pid
        );
        let connection = if close { "Connection: close\r\n" } else { "" };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Generation: {}\r\nX-Pid: {}\r\n{connection}\r\n{body}",
            body.len(),
            self.generation,
            self.pid
        )
        .into_bytes()
    }
}

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n";

/// State shared by the accept loop and the connection threads.
struct Shared {
    keep_alive_response: Vec<u8>,
    close_response: Vec<u8>,
    delay: Duration,
    crash_after: Option<u64>,
    drain_idle: Duration,
    /// Bytes each request leaks (--leak-kb-per-request).
    leak_bytes: usize,
    /// Requests answered so far, for --crash-after.
    answered: AtomicU64,
    /// Set at SIGTERM: every later response closes its connection.
    draining: AtomicBool,
    /// When draining began; set before the drain pipe is written.
    drain_started: OnceLock<Instant>,
    /// Readable from SIGTERM on (one byte written, never read): wakes every idle connection thread.
    drain_wake: UnixStream,
    /// Open connections, with a condvar the main thread waits on during the drain.
    open_connections: Mutex<usize>,
    all_closed: Condvar,
}

fn main() -> ExitCode {
    let args = Args::parse_from(command_line_with_env_flags());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say!("example-server: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The command line with each variable of ENV_FLAGS that is set turned into its flag, placed before the real
/// arguments so that a flag given on the command line wins (args_override_self). The crate's clap is built
/// without its `env` feature, hence this.
fn command_line_with_env_flags() -> Vec<OsString> {
    let mut real = std::env::args_os();
    let mut line: Vec<OsString> = real.next().into_iter().collect();
    for &(variable, flag, takes_value) in ENV_FLAGS {
        let Some(value) = std::env::var_os(variable) else {
            continue;
        };
        if takes_value {
            let mut joined = OsString::from(format!("{flag}="));
            joined.push(value);
            line.push(joined);
        } else if !FALSE_VALUES
            .iter()
            .any(|off| value.eq_ignore_ascii_case(off))
        {
            line.push(flag.into());
        }
    }
    line.extend(real);
    line
}

fn run(args: Args) -> Result<(), String> {
    let identity = Identity::from_env();
    // Handlers go in before READY=1, so a SIGTERM right after readiness is never missed.
    let (signal_read, signal_write) =
        nonblocking_pair().map_err(|e| format!("unable to create signal pipe: {e}"))?;
    if args.ignore_sigterm {
        // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety rule can be broken.
        unsafe { signal::signal(Signal::SIGTERM, SigHandler::SigIgn) }
            .map_err(|e| format!("unable to ignore SIGTERM: {e}"))?;
    } else {
        register_wake(SIGTERM, &signal_write)?;
    }
    register_wake(SIGINT, &signal_write)?;

    let start_delay = Duration::from_millis(args.start_delay_ms);
    if stop_signal_within(&signal_read, start_delay)
        .map_err(|e| format!("unable to wait for the start delay: {e}"))?
    {
        say!(
            "example-server (pid {}): stopped during the start delay",
            identity.pid
        );
        return Ok(());
    }
    // Held (never freed) for the process's life: --hold-mb is what it weighs from the start.
    touch_and_keep(args.hold_mb << 20);
    let address = SocketAddr::new(args.host, args.port);
    let socket = bind(address).map_err(|e| format!("unable to bind {address}: {e}"))?;
    if let Some(code) = args.exit_before_ready {
        say!(
            "example-server (pid {}): bound {address}, exiting with {code} before ready",
            identity.pid
        );
        std::process::exit(code.into());
    }
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| format!("unable to listen on {address}: {e}"))?;
    let listener: TcpListener = socket.into();
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("unable to make the listener non-blocking: {e}"))?;
    say!(
        "example-server (pid {}, gen {}, worker {}): listening on {address}",
        identity.pid,
        identity.generation,
        identity.worker
    );
    if !args.never_ready {
        notify_ready();
    }

    let (drain_wake, drain_trigger) =
        nonblocking_pair().map_err(|e| format!("unable to create drain pipe: {e}"))?;
    let shared = Arc::new(Shared {
        keep_alive_response: identity.response(false),
        close_response: identity.response(true),
        delay: Duration::from_millis(args.delay_ms),
        crash_after: args.crash_after,
        leak_bytes: args.leak_kb_per_request * 1024,
        drain_idle: Duration::from_millis(args.drain_idle_ms),
        answered: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        drain_started: OnceLock::new(),
        drain_wake,
        open_connections: Mutex::new(0),
        all_closed: Condvar::new(),
    });

    accept_until_signal(&listener, &signal_read, &shared)?;
    // Stop accepting at once; with net.ipv4.tcp_migrate_req=1 the kernel moves connections still queued on this
    // listener to another listener of the port instead of resetting them.
    drop(listener);
    let _ = shared.drain_started.set(Instant::now());
    shared.draining.store(true, Ordering::SeqCst);
    (&drain_trigger)
        .write_all(b"x")
        .map_err(|e| format!("unable to wake connection threads: {e}"))?;

    let mut open = shared
        .open_connections
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    say!(
        "example-server (pid {}): draining {} connections",
        identity.pid,
        *open
    );
    while *open > 0 {
        open = shared
            .all_closed
            .wait(open)
            .unwrap_or_else(|e| e.into_inner());
    }
    say!("example-server (pid {}): drained, exiting", identity.pid);
    Ok(())
}

/// Waits for `pause` unless a stop signal arrives first; returns whether one did.
fn stop_signal_within(signals: &UnixStream, pause: Duration) -> io::Result<bool> {
    if pause.is_zero() {
        return Ok(false);
    }
    let timeout = PollTimeout::try_from(pause).unwrap_or(PollTimeout::MAX);
    Ok(poll_retrying(
        &mut [PollFd::new(signals.as_fd(), PollFlags::POLLIN)],
        timeout,
    )? > 0)
}

fn nonblocking_pair() -> io::Result<(UnixStream, UnixStream)> {
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    Ok((read, write))
}

fn register_wake(signal: i32, pipe: &UnixStream) -> Result<(), String> {
    let pipe = pipe
        .try_clone()
        .map_err(|e| format!("unable to duplicate the signal pipe: {e}"))?;
    signal_hook::low_level::pipe::register(signal, pipe)
        .map(drop)
        .map_err(|e| format!("unable to install the handler of signal {signal}: {e}"))
}

fn bind(address: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Sends READY=1 to $NOTIFY_SOCKET (a path, or `@name` for an abstract socket); a failure is reported, not fatal.
fn notify_ready() {
    let Some(target) = std::env::var_os(ENV_NOTIFY_SOCKET) else {
        return;
    };
    let send = || -> io::Result<()> {
        let bytes = target.as_encoded_bytes();
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => unix_net::SocketAddr::from_abstract_name(name)?,
            None => unix_net::SocketAddr::from_pathname(&target)?,
        };
        UnixDatagram::unbound()?
            .send_to_addr(b"READY=1\n", &address)
            .map(drop)
    };
    if let Err(e) = send() {
        say!(
            "example-server: warning: unable to send READY=1 to {}: {e}",
            target.to_string_lossy()
        );
    }
}

/// Accepts connections until SIGTERM or SIGINT arrives on the self-pipe.
fn accept_until_signal(
    listener: &TcpListener,
    signals: &UnixStream,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll on the listener failed: {e}")),
        }
        if fds[1].any().unwrap_or(false) {
            let mut drained = [0u8; 16];
            while matches!((&*signals).read(&mut drained), Ok(n) if n > 0) {}
            return Ok(());
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => start_connection(stream, shared),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    say!("example-server: warning: accept failed: {e}; retrying");
                    thread::sleep(ACCEPT_ERROR_PAUSE);
                    break;
                }
            }
        }
    }
}

fn start_connection(stream: TcpStream, shared: &Arc<Shared>) {
    *shared
        .open_connections
        .lock()
        .unwrap_or_else(|e| e.into_inner()) += 1;
    let guard = ConnectionGuard(Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("connection".into())
        .spawn(move || {
            let guard = guard;
            if let Err(e) = serve(stream, &guard.0) {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) {
                    say!("example-server: warning: connection ended with an error: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        say!("example-server: warning: unable to start a connection thread: {e}; closing the connection");
    }
}

/// Counts a connection as open until dropped, then wakes the draining main thread.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut open = self
            .0
            .open_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *open -= 1;
        if *open == 0 {
            self.0.all_closed.notify_all();
        }
    }
}

/// What the next request on a connection asked for.
struct Request {
    /// Bytes of head and body, to remove from the buffer once answered.
    length: usize,
    /// The client asked to close (Connection: close, or HTTP/1.0).
    close: bool,
}

/// Serves one connection: requests in order, until the client or the drain closes it.
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut scanned = 0; // Bytes of `buffer` already searched for the end of the head.
    loop {
        let request = match parse_request(&buffer, scanned) {
            Parsed::Complete(request) => request,
            Parsed::Invalid => return stream.write_all(BAD_REQUEST),
            Parsed::Partial { scanned: upto } => {
                scanned = upto;
                if buffer.is_empty() && !wait_for_request(&stream, shared)? {
                    return Ok(()); // Idle through the drain: close.
                }
                let old_len = buffer.len();
                buffer.resize(old_len + READ_CHUNK_BYTES, 0);
                let n = stream.read(&mut buffer[old_len..])?;
                buffer.truncate(old_len + n);
                if n == 0 {
                    return Ok(()); // Client closed (possibly mid-request: nothing to answer).
                }
                continue;
            }
        };
        thread::sleep(shared.delay);
        let close = request.close || shared.draining.load(Ordering::SeqCst);
        stream.write_all(if close {
            &shared.close_response
        } else {
            &shared.keep_alive_response
        })?;
        touch_and_keep(shared.leak_bytes);
        let answered = shared.answered.fetch_add(1, Ordering::SeqCst) + 1;
        if shared.crash_after == Some(answered) {
            say!(
                "example-server (pid {}): --crash-after {answered}: aborting",
                std::process::id()
            );
            std::process::abort();
        }
        if close {
            return Ok(());
        }
        buffer.drain(..request.length);
        scanned = 0;
    }
}

/// Allocates `bytes`, writes every page of it (so it is resident, not just reserved) and never frees
/// it: --hold-mb and --leak-kb-per-request.
fn touch_and_keep(bytes: usize) {
    if bytes > 0 {
        std::hint::black_box(Vec::leak(vec![0xa5u8; bytes]));
    }
}

/// Waits until the socket is readable; returns false if the drain's idle limit passed without a byte.
fn wait_for_request(stream: &TcpStream, shared: &Shared) -> io::Result<bool> {
    if !shared.draining.load(Ordering::SeqCst) {
        let mut fds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.drain_wake.as_fd(), PollFlags::POLLIN),
        ];
        poll_retrying(&mut fds, PollTimeout::NONE)?;
        if fds[0].any().unwrap_or(true) {
            return Ok(true);
        }
    }
    // Draining: the drain pipe stays readable, so wait on the socket alone until the idle deadline.
    let started = *shared
        .drain_started
        .get()
        .expect("drain_started is set before draining");
    let remaining = (started + shared.drain_idle).saturating_duration_since(Instant::now());
    let timeout = PollTimeout::try_from(remaining).unwrap_or(PollTimeout::MAX);
    Ok(poll_retrying(
        &mut [PollFd::new(stream.as_fd(), PollFlags::POLLIN)],
        timeout,
    )? > 0)
}

fn poll_retrying(fds: &mut [PollFd<'_>], timeout: PollTimeout) -> io::Result<i32> {
    loop {
        match poll(fds, timeout) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The outcome of looking for one request at the start of the buffer.
enum Parsed {
    /// A whole request (head and body) is buffered.
    Complete(Request),
    /// More bytes are needed; the head's end was searched for up to `scanned`.
    Partial { scanned: usize },
    /// Not HTTP, too large, or a body encoding this server does not read: answer 400 and close.
    Invalid,
}

fn parse_request(buffer: &[u8], scanned: usize) -> Parsed {
    let from = scanned.saturating_sub(3);
    let Some(head_end) = buffer[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
    else {
        return if buffer.len() > MAX_HEAD_BYTES {
            Parsed::Invalid
        } else {
            Parsed::Partial {
                scanned: buffer.len(),
            }
        };
    };
    let Ok(head) = std::str::from_utf8(&buffer[..head_end]) else {
        return Parsed::Invalid;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut close = match request_line.rsplit(' ').next() {
        Some("HTTP/1.1") => false,
        Some("HTTP/1.0") => true,
        _ => return Parsed::Invalid,
    };
    let mut body_bytes = 0;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY_BYTES => body_bytes = n,
                _ => return Parsed::Invalid,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Invalid;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    close = true;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    let length = head_end + body_bytes;
    if buffer.len() < length {
        return Parsed::Partial {
            scanned: head_end - 4,
        };
    }
    Parsed::Complete(Request { length, close })
}
