//! `udpgen`: the UDP load generator of `scripts/bench-udp`. It owns the counting rule behind "lost
//! datagrams": every datagram carries a number, and it is answered only by an echo of that number on the
//! socket that sent it within `--timeout-ms`; one with no such answer in time is lost (an ICMP "port
//! unreachable" for it is counted apart, as refused). Never retried. Invariant: sent = answered + lost +
//! refused, each datagram counted once.
//!
//! Shape: closed loop. `--threads` threads each keep `--outstanding / --threads` datagrams in flight, one
//! per client socket (a connected UDP socket: its source port is its flow); each thread polls its sockets,
//! and as soon as a datagram is answered or lost it sends the next one, from a new socket (a fresh source
//! port) every `--datagrams-per-socket` datagrams (default 1: one socket per datagram, as a DNS stub
//! resolver does; 0: keep each socket for the whole run). A lost or refused datagram always gets a new
//! socket, so that a late answer cannot be taken for the next one. The run ends after `--duration-secs`
//! or at SIGINT/SIGTERM: no new datagram is sent, the ones in flight get their timeout, then one
//! `key=value` line per figure is printed on stdout (and one progress line per second on stderr).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use signal_hook::consts::{SIGINT, SIGTERM};
use socket2::{Domain, Protocol, Socket, Type};

/// Writes one line to stderr, ignoring errors (a closed stderr must not panic the process).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// Longest a poll(2) sleeps, so that the stop flag and the end of the run are seen promptly.
const MAX_POLL_MS: u64 = 50;
/// The datagram's number takes its first 8 bytes.
const SEQ_BYTES: usize = 8;

#[derive(Parser, Debug)]
#[command(
    name = "udpgen",
    about = "Closed-loop UDP load generator for scripts/bench-udp"
)]
struct Args {
    /// Server address, e.g. 127.0.0.1:18281.
    #[arg(long)]
    addr: SocketAddr,
    /// Datagrams in flight at once (one per client socket), spread over the threads.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    outstanding: u32,
    /// Sending threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    threads: u32,
    /// How long to send (fractions allowed); SIGINT or SIGTERM ends the run earlier.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    duration_secs: Duration,
    /// A datagram with no answer within this is lost.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Datagrams sent from one client socket before it is replaced by a new one (a fresh source port);
    /// 0: keep it for the whole run.
    #[arg(long, default_value_t = 1)]
    datagrams_per_socket: u64,
    /// Datagram size in bytes (at least 8: the number).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(SEQ_BYTES as i64..))]
    size: u16,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{text:?}: must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Totals of the whole run, shared by the threads (read by the progress line and the report).
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    answered: AtomicU64,
    lost: AtomicU64,
    refused: AtomicU64,
    /// Datagrams whose bytes were not the echo of the one in flight on that socket (never expected).
    unexpected: AtomicU64,
    send_errors: AtomicU64,
    sockets: AtomicU64,
    max_rtt_us: AtomicU64,
}

/// One datagram in flight on its client socket.
struct Slot {
    socket: Socket,
    seq: u64,
    sent_at: Instant,
    uses: u64,
    /// False once the run is over and this slot's last datagram was answered or lost.
    busy: bool,
}

struct Sender {
    server: socket2::SockAddr,
    domain: Domain,
    payload: Vec<u8>,
    timeout: Duration,
    per_socket: u64,
    next_seq: u64,
    totals: Arc<Totals>,
}

impl Sender {
    /// A client socket connected to the server. One that the kernel happened to bind to the server's
    /// own address and port (free when the server is gone and its port lies in the ephemeral range)
    /// would receive its own datagrams as answers: it is kept open while the next one is made, so
    /// that the kernel cannot hand out that port again, and then closed.
    fn new_socket(&self) -> io::Result<Socket> {
        let connected = || -> io::Result<Socket> {
            let socket = Socket::new(self.domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
            socket.connect(&self.server)?;
            Ok(socket)
        };
        let first = connected()?;
        let socket = if first.local_addr()?.as_socket() == self.server.as_socket() {
            connected()? // made while `first` still holds the server's port
        } else {
            first
        };
        self.totals.sockets.fetch_add(1, Ordering::Relaxed);
        Ok(socket)
    }

    /// Sends the next datagram on `slot`, on a new socket when `fresh` or when the socket has had its
    /// share; a datagram that cannot be sent at all is counted in send_errors (and not as sent).
    fn send_next(&mut self, slot: &mut Slot, fresh: bool) {
        loop {
            if fresh || (self.per_socket > 0 && slot.uses >= self.per_socket) {
                match self.new_socket() {
                    Ok(socket) => {
                        slot.socket = socket;
                        slot.uses = 0;
                    }
                    Err(e) => {
                        self.totals.send_errors.fetch_add(1, Ordering::Relaxed);
                        say!("udpgen: new socket: {e}");
                        // Out of ports or descriptors: try again at the next turn of the loop.
                        slot.busy = false;
                        return;
                    }
                }
            }
            self.next_seq += 1;
            self.payload[..SEQ_BYTES].copy_from_slice(&self.next_seq.to_le_bytes());
            match slot.socket.send(&self.payload) {
                Ok(_) => {
                    slot.seq = self.next_seq;
                    slot.sent_at = Instant::now();
                    slot.uses += 1;
                    slot.busy = true;
                    self.totals.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // An ICMP error left over from the socket's previous datagram: it says nothing about
                    // this one, which was not sent. Retry on a fresh socket.
                    slot.uses = u64::MAX;
                }
                Err(e) => {
                    self.totals.send_errors.fetch_add(1, Ordering::Relaxed);
                    say!("udpgen: send: {e}");
                    slot.busy = false;
                    return;
                }
            }
        }
    }

    /// Reads what `slot`'s socket holds; true when its datagram was settled (answered or refused).
    fn receive(&mut self, slot: &mut Slot, buffer: &mut [u8]) -> Option<bool> {
        loop {
            match slot.socket.recv(unsafe_uninit(buffer)) {
                Ok(n) => {
                    if n >= SEQ_BYTES && buffer[..SEQ_BYTES] == slot.seq.to_le_bytes() {
                        let rtt = slot.sent_at.elapsed().as_micros() as u64;
                        self.totals.max_rtt_us.fetch_max(rtt, Ordering::Relaxed);
                        self.totals.answered.fetch_add(1, Ordering::Relaxed);
                        return Some(false);
                    }
                    self.totals.unexpected.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.totals.refused.fetch_add(1, Ordering::Relaxed);
                    return Some(true);
                }
                Err(e) => {
                    say!("udpgen: recv: {e}");
                    self.totals.lost.fetch_add(1, Ordering::Relaxed);
                    return Some(true);
                }
            }
        }
    }
}

/// socket2's recv takes `&mut [MaybeUninit<u8>]`; an initialised buffer is a valid one.
fn unsafe_uninit(buffer: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: u8 and MaybeUninit<u8> have the same layout, and recv only writes initialised bytes.
    unsafe { &mut *(buffer as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}

/// One thread's closed loop over `count` slots until `stop` and every slot settled.
fn run_thread(args: &Args, count: u32, totals: Arc<Totals>, stop: Arc<AtomicBool>, end: Instant) {
    let mut sender = Sender {
        server: args.addr.into(),
        domain: Domain::for_address(args.addr),
        payload: vec![b'x'; args.size as usize],
        timeout: Duration::from_millis(args.timeout_ms),
        per_socket: args.datagrams_per_socket,
        next_seq: 0,
        totals,
    };
    let mut buffer = vec![0u8; 65_536];
    let mut slots: Vec<Slot> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let socket = match sender.new_socket() {
            Ok(socket) => socket,
            Err(e) => {
                say!("udpgen: socket: {e}");
                return;
            }
        };
        let mut slot = Slot {
            socket,
            seq: 0,
            sent_at: Instant::now(),
            uses: 0,
            busy: false,
        };
        sender.send_next(&mut slot, false);
        slots.push(slot);
    }
    let mut ready = vec![false; slots.len()];
    loop {
        let sending = !stop.load(Ordering::Relaxed) && Instant::now() < end;
        if !sending && slots.iter().all(|s| !s.busy) {
            return;
        }
        let now = Instant::now();
        let mut wait = Duration::from_millis(MAX_POLL_MS);
        for slot in slots.iter().filter(|s| s.busy) {
            wait = wait.min((slot.sent_at + sender.timeout).saturating_duration_since(now));
        }
        {
            let mut fds: Vec<PollFd> = slots
                .iter()
                .map(|s| {
                    let events = if s.busy {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    };
                    PollFd::new(s.socket.as_fd(), events)
                })
                .collect();
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    say!("udpgen: poll: {e}");
                    return;
                }
            }
            for (flag, fd) in ready.iter_mut().zip(&fds) {
                *flag = fd.revents().is_some_and(|r| !r.is_empty());
            }
        }
        let sending = !stop.load(Ordering::Relaxed) && Instant::now() < end;
        for (slot, &is_ready) in slots.iter_mut().zip(&ready) {
            if !slot.busy {
                if sending {
                    sender.send_next(slot, true);
                }
                continue;
            }
            let mut settled = None;
            if is_ready {
                settled = sender.receive(slot, &mut buffer);
            }
            if settled.is_none() && slot.sent_at.elapsed() >= sender.timeout {
                sender.totals.lost.fetch_add(1, Ordering::Relaxed);
                settled = Some(true);
            }
            let Some(fresh) = settled else { continue };
            slot.busy = false;
            if sending {
                sender.send_next(slot, fresh);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            say!("udpgen: signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let end = start + args.duration_secs;
    let args = Arc::new(args);
    let mut threads = Vec::new();
    for t in 0..args.threads {
        let count =
            args.outstanding / args.threads + u32::from(t < args.outstanding % args.threads);
        if count == 0 {
            continue;
        }
        let (args, totals, stop) = (Arc::clone(&args), Arc::clone(&totals), Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            run_thread(&args, count, totals, stop, end)
        }));
    }
    // Progress once a second, until the sending ends.
    let mut last = 0;
    let mut tick = start;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        tick += Duration::from_secs(1);
        while Instant::now() < tick.min(end) && !stop.load(Ordering::Relaxed) {
            thread::sleep(
                Duration::from_millis(MAX_POLL_MS)
                    .min(tick.saturating_duration_since(Instant::now())),
            );
        }
        let answered = totals.answered.load(Ordering::Relaxed);
        say!(
            "udpgen: {:.0}s answered {}/s lost {} refused {}",
            start.elapsed().as_secs_f64(),
            answered - last,
            totals.lost.load(Ordering::Relaxed),
            totals.refused.load(Ordering::Relaxed)
        );
        last = answered;
    }
    let send_secs = start
        .elapsed()
        .as_secs_f64()
        .min(args.duration_secs.as_secs_f64());
    for thread in threads {
        let _ = thread.join();
    }
    let t = &totals;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let answered = load(&t.answered);
    let report = format!(
        "sent={} answered={} lost={} refused={} unexpected={} send_errors={} sockets={} secs={:.3} \
         answered_per_sec={:.0} max_rtt_us={}\n",
        load(&t.sent),
        answered,
        load(&t.lost),
        load(&t.refused),
        load(&t.unexpected),
        load(&t.send_errors),
        load(&t.sockets),
        send_secs,
        answered as f64 / send_secs,
        load(&t.max_rtt_us)
    );
    let _ = io::stdout().write_all(report.replace(' ', "\n").as_bytes());
    ExitCode::SUCCESS
}
