//! A one-request HTTP probe with timeouts: which generation and pid answered `GET /`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, write and read timeout of the probe: a healthy local server answers in microseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `GET /` with `Connection: close` and returns (generation, pid) from X-Generation and X-Pid.
pub fn try_http_get(addr: &str) -> Result<(u32, i32), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read from {addr}: {e} after {} bytes", response.len()))?;
    parse_response(&String::from_utf8_lossy(&response))
}

/// `try_http_get` that panics with the reason.
pub fn http_get(addr: &str) -> (u32, i32) {
    try_http_get(addr).unwrap_or_else(|e| panic!("probe GET http://{addr}/ failed: {e}"))
}

/// Parses a complete response: 200 status, X-Generation and X-Pid headers.
pub fn parse_response(text: &str) -> Result<(u32, i32), String> {
    let status_line = text.lines().next().unwrap_or("");
    if !status_line.starts_with("HTTP/1.1 200") && !status_line.starts_with("HTTP/1.0 200") {
        return Err(format!("unexpected response {:?}", truncate(text)));
    }
    let header = |name: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .ok_or_else(|| format!("response has no {name} header: {:?}", truncate(text)))
    };
    let generation = header("X-Generation")?
        .parse()
        .map_err(|e| format!("bad X-Generation: {e}"))?;
    let pid = header("X-Pid")?
        .parse()
        .map_err(|e| format!("bad X-Pid: {e}"))?;
    Ok((generation, pid))
}

fn truncate(text: &str) -> &str {
    &text[..text.len().min(300)]
}

/// Reads one HTTP response (headers + Content-Length body) from a keep-alive connection.
pub fn read_response(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Err(format!("EOF after {} bytes of headers", buf.len())),
            Ok(_) => buf.push(byte[0]),
            Err(e) => return Err(format!("read: {e} after {} bytes", buf.len())),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    Ok(head + &String::from_utf8_lossy(&body))
}
