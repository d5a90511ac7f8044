//! A legacy UDP server for tests (python, binds without SO_REUSEPORT, never sends READY=1, dies at
//! SIGTERM) that answers each datagram with `gen-G-pid-P`, optionally with a TCP listener beside it
//! answering the same (a DNS server's two sides); a client that sends one query from a socket of its
//! own (a fresh source port per query) and reads who answered, and one TCP exchange; and that query
//! load across a launcher's reloads, with TCP connections beside it when asked.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::launcher::reload_and_wait;
use super::{wait_until, Launcher, TempDir};

/// The server: `python3 udp-server.py PORT [tcp [DELAY]] [--reuseport]`. With `tcp` it also binds TCP
/// PORT (after the UDP bind, as a DNS server does), listens DELAY seconds later (default 0) and
/// answers every connection with the same tag. `--reuseport`: it sets SO_REUSEPORT on both itself
/// (for `--no-inject`).
const SERVER: &str = r#"
import os, socket, sys, threading, time
reuseport = "--reuseport" in sys.argv
args = [a for a in sys.argv[1:] if a != "--reuseport"]
port = int(args[0])
tag = ("gen-%s-pid-%d" % (os.environ.get("REUSEPORT_LAUNCH_GENERATION", "?"), os.getpid())).encode()
def bound(kind):
    s = socket.socket(socket.AF_INET, kind)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    elif kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s
udp = bound(socket.SOCK_DGRAM)
if len(args) > 1 and args[1] == "tcp":
    tcp = bound(socket.SOCK_STREAM)
    time.sleep(float(args[2]) if len(args) > 2 else 0)
    tcp.listen(64)
    def serve_tcp():
        while True:
            conn, _ = tcp.accept()
            conn.sendall(tag)
            conn.close()
    threading.Thread(target=serve_tcp, daemon=True).start()
while True:
    data, peer = udp.recvfrom(2048)
    udp.sendto(tag + b" " + data, peer)
"#;

/// Writes the server's source into `dir`; run it as `python3 PATH PORT [tcp [DELAY]] [--reuseport]`.
pub fn write_server(dir: &TempDir) -> PathBuf {
    let path = dir.join("udp-server.py");
    std::fs::write(&path, SERVER).expect("write udp-server.py");
    path
}

/// Reads (generation, pid) from an answer `gen-G-pid-P[ ...]`.
pub fn parse_tag(answer: &[u8]) -> Result<(u32, i32), String> {
    let text = String::from_utf8_lossy(answer);
    let rest = text
        .strip_prefix("gen-")
        .ok_or_else(|| format!("unexpected answer {text:?}"))?;
    let (generation, rest) = rest.split_once("-pid-").ok_or("no -pid- in the answer")?;
    let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Ok((
        generation.parse().map_err(|_| "bad generation")?,
        pid.parse().map_err(|_| "bad pid")?,
    ))
}

/// One query from a new socket (a new source port), never retried; Err when no answer came within
/// `timeout`.
pub fn query(server: SocketAddr, payload: &[u8], timeout: Duration) -> Result<(u32, i32), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    socket
        .send_to(payload, server)
        .map_err(|e| format!("send: {e}"))?;
    let mut buffer = [0u8; 2048];
    let (n, _) = socket
        .recv_from(&mut buffer)
        .map_err(|e| format!("no answer within {timeout:?}: {e}"))?;
    parse_tag(&buffer[..n])
}

/// One TCP exchange with the server's TCP side: who answered, or why not (a refusal says `connect:`).
pub fn tcp_query(server: SocketAddr, timeout: Duration) -> Result<(u32, i32), String> {
    let mut stream =
        TcpStream::connect_timeout(&server, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    parse_tag(&answer)
}

/// Query loops running at once: enough to keep a queue on each python worker, little enough for 2
/// cores shared with the pythons and the launcher.
const LOAD_CLIENTS: usize = 3;
/// A query counts lost if no answer came within this: a local python answers in well under 1 ms.
const LOAD_QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds the run whatever happens: at most this many queries per client.
const MAX_QUERIES_PER_CLIENT: u64 = 200_000;
/// One reload under load, the new generation ready and the old one gone.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);

/// What UDP query load saw across a launcher's reloads.
pub struct QueryLoad {
    pub sent: u64,
    /// TCP exchanges tried (with `reloads_under_query_and_tcp_load`; else 0).
    pub connections: u64,
    /// Why each TCP exchange that failed failed.
    pub tcp_failed: Vec<String>,
    /// Why each query that got no answer failed.
    pub lost: Vec<String>,
    /// (generation, pid) of every worker that answered.
    pub answered_by: Vec<(u32, i32)>,
    /// Every worker pid of every generation, generation 1 first, as the launcher listed them.
    pub pids: Vec<(u32, Vec<i32>)>,
}

/// Reloads `launcher` (serving generation 1 with `workers` workers) `reloads` times while a few
/// loops query `addr`, each query from a fresh client port and never retried. The loops stop once the
/// reloads are done, and also when one of them fails, whose panic then goes on from here.
pub fn reloads_under_query_load(
    launcher: &Launcher,
    workers: usize,
    addr: SocketAddr,
    reloads: u32,
) -> QueryLoad {
    reloads_under_load(launcher, workers, addr, reloads, false)
}

/// Like `reloads_under_query_load`, with one more loop making TCP exchanges with `addr` all along (a
/// DNS server's TCP side), each on a new connection.
pub fn reloads_under_query_and_tcp_load(
    launcher: &Launcher,
    workers: usize,
    addr: SocketAddr,
    reloads: u32,
) -> QueryLoad {
    reloads_under_load(launcher, workers, addr, reloads, true)
}

fn reloads_under_load(
    launcher: &Launcher,
    workers: usize,
    addr: SocketAddr,
    reloads: u32,
    with_tcp: bool,
) -> QueryLoad {
    let mut pids = vec![(1, launcher.workers_of(1))];
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let lost = Mutex::new(Vec::new());
    let answered_by = Mutex::new(Vec::new());
    let connections = AtomicU64::new(0);
    let tcp_failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        if with_tcp {
            s.spawn(|| {
                for _ in 0..MAX_QUERIES_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    connections.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = tcp_query(addr, LOAD_QUERY_TIMEOUT) {
                        tcp_failed.lock().unwrap().push(e);
                    }
                }
            });
        }
        for _ in 0..LOAD_CLIENTS {
            s.spawn(|| {
                let mut mine = Vec::new();
                for n in 0..MAX_QUERIES_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    match query(addr, format!("q{n}").as_bytes(), LOAD_QUERY_TIMEOUT) {
                        Ok(who) if !mine.contains(&who) => mine.push(who),
                        Ok(_) => {}
                        Err(e) => lost.lock().unwrap().push(e),
                    }
                }
                answered_by.lock().unwrap().extend(mine);
            });
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(
                wait_until(Duration::from_secs(10), || sent.load(Ordering::Relaxed)
                    > 100),
                "the clients sent nothing"
            );
            for generation in 2..=reloads + 1 {
                reload_and_wait(launcher, workers, generation, RELOAD_DEADLINE, || {});
                pids.push((generation, launcher.workers_of(generation)));
            }
        }));
        stop.store(true, Ordering::SeqCst);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    QueryLoad {
        sent: sent.into_inner(),
        connections: connections.into_inner(),
        tcp_failed: tcp_failed.into_inner().unwrap(),
        lost: lost.into_inner().unwrap(),
        answered_by: answered_by.into_inner().unwrap(),
        pids,
    }
}

impl QueryLoad {
    /// Every generation's pids are new (none reused across generations), and each generation
    /// answered at least one query. `what` names the run in the messages.
    pub fn assert_every_generation_new_and_answering(&self, what: &str, workers: usize) {
        let mut all: Vec<i32> = self.pids.iter().flat_map(|(_, p)| p.clone()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            workers * self.pids.len(),
            "{what}: pids reused: {:?}",
            self.pids
        );
        for (generation, pids) in &self.pids {
            assert!(
                self.answered_by
                    .iter()
                    .any(|(g, p)| g == generation && pids.contains(p)),
                "{what}: no query was answered by generation {generation} ({pids:?})"
            );
        }
    }
}
