//! Talking to the launcher's admin endpoint (`--admin`) as a load balancer or Prometheus would: one GET
//! with timeouts, and `/metrics` read by a real Prometheus text parser (Python's `prometheus_client`,
//! Debian's python3-prometheus-client), so a test checks what a scraper sees, not our own encoder.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use super::control::run_bounded;
use super::TempDir;

/// Connect, write and read timeout of one admin request: the launcher answers within a loop turn.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Running the Python parser on a loaded 2-core machine.
const PARSER_DEADLINE: Duration = Duration::from_secs(20);

/// An admin response: status code, body, and how long it took.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub took: Duration,
}

/// `GET path` with extra header lines (each ending in \r\n); Err says what failed.
pub fn try_admin_get(addr: &str, path: &str, headers: &str) -> Result<AdminResponse, String> {
    let started = Instant::now();
    let socket: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, ADMIN_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(ADMIN_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(ADMIN_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e} after {} bytes", raw.len()))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status code in {head:?}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(AdminResponse {
        status,
        content_type,
        body: body.to_owned(),
        took: started.elapsed(),
    })
}

/// `try_admin_get` without extra headers that panics with the reason.
pub fn admin_get(addr: &str, path: &str) -> AdminResponse {
    try_admin_get(addr, path, "").unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"))
}

/// A Python 3 that has `prometheus_client` (Debian's lives in /usr/bin/python3, which a pyenv or venv
/// python3 earlier on PATH may not see).
fn python_with_prometheus_client() -> String {
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import prometheus_client.parser"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return candidate.to_owned();
        }
    }
    panic!(
        "no python3 with prometheus_client; install it with `apt-get install python3-prometheus-client` \
         (scripts/test does)"
    )
}

/// Prints every sample as `type<TAB>name<TAB>labels<TAB>value`, labels sorted as k=v joined by commas;
/// the parser is the classic text format's, or OpenMetrics' (stricter: it needs `# EOF`, units, ...).
const PARSE_SCRIPT: &str = r#"
import sys
kind, path = sys.argv[1], sys.argv[2]
if kind == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(open(path).read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{family.type}\t{s.name}\t{labels}\t{s.value}")
"#;

/// What a real parser read from a /metrics text: each sample's value keyed by `name{labels}` (labels
/// as `k=v,...`, no braces without labels), and each sample's family type under the same key.
#[derive(Debug, Default)]
pub struct Scrape {
    pub values: std::collections::BTreeMap<String, f64>,
    pub types: std::collections::BTreeMap<String, String>,
}

impl Scrape {
    /// The value of `key`, panicking with the whole scrape when it is missing.
    pub fn get(&self, key: &str) -> f64 {
        *self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in /metrics: {:?}", self.values))
    }
}

/// Parses a /metrics text with Python's prometheus_client (`openmetrics` picks the parser); panics with
/// the parser's error if it refuses the text.
pub fn parse_metrics(dir: &TempDir, text: &str, openmetrics: bool) -> Scrape {
    let path = dir.join(if openmetrics {
        "metrics.om.txt"
    } else {
        "metrics.txt"
    });
    std::fs::write(&path, text).expect("write the metrics text");
    let kind = if openmetrics { "openmetrics" } else { "text" };
    let mut command = Command::new(python_with_prometheus_client());
    command.arg("-c").arg(PARSE_SCRIPT).arg(kind).arg(&path);
    let output = run_bounded(&mut command, PARSER_DEADLINE);
    assert!(
        output.status.success(),
        "the {kind} parser refused /metrics: {}\n---- text ----\n{text}",
        output.stderr
    );
    let mut scrape = Scrape::default();
    for line in output.stdout.lines() {
        if let [family_type, name, labels, value] = line.split('\t').collect::<Vec<_>>()[..] {
            let key = if labels.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{labels}}}")
            };
            scrape
                .values
                .insert(key.clone(), value.parse().unwrap_or(f64::NAN));
            scrape.types.insert(key, family_type.to_owned());
        }
    }
    scrape
}
