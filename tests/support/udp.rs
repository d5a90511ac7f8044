//! A legacy UDP server for tests (python, binds without SO_REUSEPORT, never sends READY=1, dies at
//! SIGTERM) that answers each datagram with `gen-G-pid-P`, optionally with a TCP listener beside it
//! answering the same; and a client that sends one query from a socket of its own (a fresh source
//! port per query) and reads who answered.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use super::TempDir;

/// The server: `python3 udp-server.py PORT [tcp]`. With `tcp` it also listens on TCP PORT (after the
/// UDP bind, as a DNS server does) and answers every connection with the same tag.
const SERVER: &str = r#"
import os, socket, sys, threading
port = int(sys.argv[1])
tag = ("gen-%s-pid-%d" % (os.environ.get("REUSEPORT_LAUNCH_GENERATION", "?"), os.getpid())).encode()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", port))
if len(sys.argv) > 2 and sys.argv[2] == "tcp":
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
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

/// Writes the server's source into `dir`; run it as `python3 PATH PORT [tcp]`.
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
