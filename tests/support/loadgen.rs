//! `Loadgen`: the crate's load client running against a launcher for the length of a test (it inherits
//! the test thread's netns), stopped with SIGINT; `stop()` parses its one-line JSON report.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::json::{self, Value};
use super::{loadgen, wait_until, ChildGuard, TempDir};

/// Upper bound on a loadgen run: tests stop it with SIGINT long before this.
const MAX_RUN_SECS: u32 = 300;
/// How long loadgen may take to print its report after SIGINT (its timeout, TIMEOUT_MS, plus slack).
const REPORT_DEADLINE: Duration = Duration::from_secs(15);
/// Interval of loadgen's progress lines, used to see that traffic flows.
const PROGRESS_MS: u32 = 200;
/// How long a fresh loadgen may take to see its first response from a serving launcher.
const TRAFFIC_DEADLINE: Duration = Duration::from_secs(10);
/// Connections of each loadgen in a `MixedLoad`.
const MIXED_CONNECTIONS: u32 = 4;
/// loadgen's per-step timeout (its default): a local request stalled for 2 s is an outage a user sees,
/// e.g. a SYN dropped while an old listener closes (its retransmit comes after 1 s, then 3 s).
const TIMEOUT_MS: u32 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reuse each connection for many requests.
    KeepAlive,
    /// One connection per request.
    Close,
}

impl Mode {
    fn as_arg(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::Close => "close",
        }
    }
}

/// loadgen's final report.
#[derive(Debug, Clone)]
pub struct LoadgenReport {
    pub requests: u64,
    pub ok: u64,
    pub failures: u64,
    pub retries: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    /// pid -> (generation, responses)
    pub by_pid: BTreeMap<i32, (u32, u64)>,
    pub duration_ms: u64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// The JSON line as printed.
    pub raw: String,
}

impl LoadgenReport {
    /// Parses loadgen's JSON report line.
    pub fn parse(line: &str) -> Result<LoadgenReport, String> {
        let value = json::parse(line.trim())?;
        let number = |key: &str| -> Result<u64, String> {
            value
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("report has no number {key:?}: {line}"))
        };
        let mut failure_kinds = BTreeMap::new();
        if let Some(kinds) = value.get("failure_kinds").and_then(Value::as_object) {
            for (kind, n) in kinds {
                failure_kinds.insert(kind.clone(), n.as_u64().unwrap_or(0));
            }
        }
        let mut by_pid = BTreeMap::new();
        for (pid, entry) in value
            .get("by_pid")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("report has no by_pid object: {line}"))?
        {
            let pid: i32 = pid
                .parse()
                .map_err(|_| format!("by_pid key {pid:?} is not a pid"))?;
            let generation = entry.get("generation").and_then(Value::as_u64).unwrap_or(0) as u32;
            let count = entry.get("count").and_then(Value::as_u64).unwrap_or(0);
            by_pid.insert(pid, (generation, count));
        }
        Ok(LoadgenReport {
            requests: number("requests")?,
            ok: number("ok")?,
            failures: number("failures")?,
            retries: number("retries")?,
            failure_kinds,
            by_pid,
            duration_ms: number("duration_ms")?,
            rps: value.get("rps").and_then(Value::as_f64).unwrap_or(0.0),
            p50_us: value.get("p50_us").and_then(Value::as_u64).unwrap_or(0),
            p99_us: value.get("p99_us").and_then(Value::as_u64).unwrap_or(0),
            raw: line.trim().to_owned(),
        })
    }

    /// Responses per generation.
    pub fn by_generation(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for &(generation, count) in self.by_pid.values() {
            *out.entry(generation).or_insert(0) += count;
        }
        out
    }
}

pub struct Loadgen {
    guard: ChildGuard,
    name: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Loadgen {
    /// Starts `loadgen --addr ADDR --mode MODE --connections C` plus `extra` args, until `stop()`.
    pub fn start(
        dir: &TempDir,
        name: &str,
        addr: &str,
        mode: Mode,
        connections: u32,
        extra: &[&str],
    ) -> Loadgen {
        let stdout_path = dir.join(format!("loadgen-{name}.out"));
        let stderr_path = dir.join(format!("loadgen-{name}.err"));
        let mut command = Command::new(loadgen());
        command
            .args(["--addr", addr, "--mode", mode.as_arg()])
            .args(["--connections", &connections.to_string()])
            .args(["--duration-secs", &MAX_RUN_SECS.to_string()])
            .args(["--progress-ms", &PROGRESS_MS.to_string()])
            .args(["--timeout-ms", &TIMEOUT_MS.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create loadgen stdout file"))
            .stderr(File::create(&stderr_path).expect("create loadgen stderr file"));
        Loadgen {
            guard: ChildGuard::spawn(&mut command),
            name: name.to_owned(),
            stdout_path,
            stderr_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// Waits until a progress line reports at least one successful response.
    pub fn wait_for_traffic(&self, deadline: Duration) -> bool {
        wait_until(deadline, || {
            std::fs::read_to_string(&self.stderr_path).is_ok_and(|text| {
                text.lines()
                    .filter_map(|l| json::parse(l.trim()).ok())
                    .any(|v| v.get("ok").and_then(Value::as_u64).is_some_and(|n| n > 0))
            })
        })
    }

    /// Stops loadgen with SIGINT and returns its report; panics (naming the loadgen) if there is none.
    pub fn stop(mut self) -> LoadgenReport {
        self.guard.signal(Signal::SIGINT);
        let status = self.guard.wait_exit(REPORT_DEADLINE);
        let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "loadgen {} did not exit within {REPORT_DEADLINE:?} of SIGINT",
                self.name
            );
        };
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| {
                panic!(
                    "loadgen {} ({status}) printed no JSON report; stdout: {stdout:?}; stderr tail: {:?}",
                    self.name,
                    tail(&stderr, 10)
                )
            });
        LoadgenReport::parse(line)
            .unwrap_or_else(|e| panic!("loadgen {}: bad report: {e}", self.name))
    }
}

/// The load every reload-under-load test runs: a keep-alive and a connection-per-request loadgen on one
/// address, 4 connections each, both seen answering before `start` returns.
pub struct MixedLoad {
    pub keepalive: Loadgen,
    pub close: Loadgen,
}

impl MixedLoad {
    pub fn start(dir: &TempDir, addr: &str) -> MixedLoad {
        let keepalive = Loadgen::start(
            dir,
            "keepalive",
            addr,
            Mode::KeepAlive,
            MIXED_CONNECTIONS,
            &[],
        );
        let close = Loadgen::start(dir, "close", addr, Mode::Close, MIXED_CONNECTIONS, &[]);
        assert!(
            keepalive.wait_for_traffic(TRAFFIC_DEADLINE),
            "keep-alive loadgen got no response"
        );
        assert!(
            close.wait_for_traffic(TRAFFIC_DEADLINE),
            "connection-per-request loadgen got no response"
        );
        MixedLoad { keepalive, close }
    }

    /// Stops both and returns their reports (keep-alive, connection-per-request).
    pub fn stop(self) -> MixedReport {
        MixedReport {
            keepalive: self.keepalive.stop(),
            close: self.close.stop(),
        }
    }
}

/// The reports of a `MixedLoad`.
pub struct MixedReport {
    pub keepalive: LoadgenReport,
    pub close: LoadgenReport,
}

impl MixedReport {
    /// Asserts that neither loadgen saw a failed request (the raw report is in the message).
    pub fn assert_no_failures(&self) {
        assert_eq!(
            self.keepalive.failures, 0,
            "keep-alive loadgen failed: {}",
            self.keepalive.raw
        );
        assert_eq!(
            self.close.failures, 0,
            "connection-per-request loadgen failed: {}",
            self.close.raw
        );
    }

    /// Responses from `generation`, both loadgens together.
    pub fn served_by(&self, generation: u32) -> u64 {
        [&self.keepalive, &self.close]
            .iter()
            .map(|r| r.by_generation().get(&generation).copied().unwrap_or(0))
            .sum()
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
