//! `--max-memory`: example-servers that leak under load (`--leak-kb-per-request`) are replaced each
//! time one crosses the limit — a replacement starts in its slot, gets ready, is steered in, and only
//! then is the big worker steered out and drained — so both slots are replaced again and again while
//! no request of a keep-alive and a connection-per-request load fails, and every sample of `/status`
//! (every ~20 ms) shows `--workers` ready workers of the serving generation. The log names each
//! worker replaced with its figure, and `/metrics` counts the replacements.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::admin::try_admin_get;
use support::json::{self, Value};
use support::*;

const WORKERS: usize = 2;
/// Each worker holds this much from its start (plus a few MiB of its own)...
const HOLD_MIB: u64 = 16;
/// ...and the limit is this far above: some thousands of requests of leak per worker.
const LIMIT_MIB: u64 = 40;
const LEAK_KB_PER_REQUEST: u64 = 16;
/// Per request, so the load (8 connections) leaks some MiB per second, not hundreds.
const DELAY_MS: u64 = 4;
const CHECK_INTERVAL_SECS: f64 = 0.2;
/// Replacements of each slot the test waits for.
const REPLACEMENTS_PER_SLOT: usize = 2;
/// Leaking ~25 MiB takes seconds per worker at this load; a loaded 2-core machine may be 5× slower.
const REPLACE_DEADLINE: Duration = Duration::from_secs(120);
const START_DEADLINE: Duration = Duration::from_secs(20);
/// smaps_rollup readings timed, for the cost figure the test prints.
const READINGS_TIMED: u32 = 200;

#[test]
fn leaking_worker_is_replaced_at_max_memory_without_failures() {
    private_netns(true);
    let dir = TempDir::new("leaking_worker_max_memory");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", free_port());
    let limit = format!("{LIMIT_MIB}M");
    let args: Vec<String> = [
        "--workers",
        &WORKERS.to_string(),
        "--max-memory",
        &limit,
        "--memory-check-interval",
        &CHECK_INTERVAL_SECS.to_string(),
        "--admin",
        &admin,
        "--",
        example_server(),
        "--port",
        &port.to_string(),
        "--hold-mb",
        &HOLD_MIB.to_string(),
        "--leak-kb-per-request",
        &LEAK_KB_PER_REQUEST.to_string(),
        "--delay-ms",
        &DELAY_MS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 did not get ready: {}",
        launcher.log_tail(20)
    );
    // The figure the launcher judges: a fresh worker is near its --hold-mb, far below the limit.
    let first = sample(&admin).expect("/status answers");
    for (pid, bytes) in &first.memory {
        let mib = bytes >> 20;
        assert!(
            (HOLD_MIB..LIMIT_MIB - 10).contains(&mib),
            "worker {pid} starts at {mib} MiB PSS: expected about {HOLD_MIB} MiB"
        );
    }
    // What one reading costs (the launcher's is the same read, once per process per interval).
    let (pid, _) = first.memory[0];
    let started = std::time::Instant::now();
    for _ in 0..READINGS_TIMED {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    }
    let per_reading = started.elapsed() / READINGS_TIMED;
    eprintln!("one smaps_rollup reading of a {HOLD_MIB} MiB worker: {per_reading:?}");
    let load = MixedLoad::start(&dir, &addr);

    let mut samples = 0;
    let mut short: Vec<String> = Vec::new();
    let replaced_enough = wait_until(REPLACE_DEADLINE, || {
        match sample(&admin) {
            Ok(s) if s.ready >= WORKERS => {}
            Ok(s) => short.push(format!("{} ready: {}", s.ready, s.raw)),
            Err(e) => short.push(e),
        }
        samples += 1;
        let per_slot = replacements(&launcher);
        (0..WORKERS).all(|slot| per_slot.get(&slot).map_or(0, Vec::len) >= REPLACEMENTS_PER_SLOT)
            && launcher
                .log_lines("its replacement is ready; steering it out")
                .len()
                >= WORKERS * REPLACEMENTS_PER_SLOT
    });
    let report = load.stop();
    let per_slot = replacements(&launcher);
    eprintln!(
        "replacements by slot: {per_slot:?}; {samples} samples; load: {} + {} requests, {} + {} failures",
        report.keepalive.requests,
        report.close.requests,
        report.keepalive.failures,
        report.close.failures
    );
    assert!(
        replaced_enough,
        "not every slot was replaced {REPLACEMENTS_PER_SLOT} times within {REPLACE_DEADLINE:?}: \
         {per_slot:?}\n{}",
        launcher.log_tail(30)
    );
    assert!(
        short.is_empty(),
        "{} of {samples} samples had fewer than {WORKERS} ready workers: {:?}",
        short.len(),
        &short[..short.len().min(5)]
    );
    assert!(samples >= 50, "only {samples} samples");
    report.assert_no_failures();
    // Each replaced worker was over the limit when it was replaced, and is gone now.
    let mut replaced_pids = Vec::new();
    for (pid, mib) in per_slot.values().flatten() {
        assert!(
            *mib > LIMIT_MIB as f64,
            "pid {pid} replaced at {mib} MiB, below --max-memory {limit}"
        );
        replaced_pids.push(*pid);
    }
    let gone = wait_until(Duration::from_secs(15), || {
        launcher
            .workers()
            .iter()
            .all(|(pid, _)| !replaced_pids.contains(pid))
    });
    assert!(
        gone,
        "replaced workers still running: {:?}",
        launcher.workers()
    );
    let metrics = try_admin_get(&admin, "/metrics", "").expect("/metrics answers");
    let counted = metrics
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("reuseport_launch_worker_replacements_total{reason=\"memory\"} ")
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(-1.0);
    assert!(
        counted >= (WORKERS * REPLACEMENTS_PER_SLOT) as f64,
        "reuseport_launch_worker_replacements_total{{reason=\"memory\"}} is {counted}: {}",
        metrics.body
    );
}

/// One look at `/status`.
struct Sample {
    /// Ready workers of the serving generation.
    ready: usize,
    /// Each worker's figure: (pid, memory_bytes).
    memory: Vec<(u64, u64)>,
    raw: String,
}

fn sample(admin: &str) -> Result<Sample, String> {
    let response = try_admin_get(admin, "/status", "")?;
    let status = json::parse(response.body.trim())?;
    let active = status.get("generation").and_then(Value::as_u64);
    let Some(Value::Array(workers)) = status.get("workers") else {
        return Err(format!("no workers in {}", response.body));
    };
    let field = |w: &Value, key: &str| w.get(key).cloned().unwrap_or(Value::Null);
    let ready = workers
        .iter()
        .filter(|w| field(w, "state") == Value::String("ready".into()))
        .filter(|w| field(w, "generation").as_u64() == active)
        .count();
    let memory = workers
        .iter()
        .filter_map(|w| {
            Some((
                field(w, "pid").as_u64()?,
                field(w, "memory_bytes").as_u64()?,
            ))
        })
        .collect();
    Ok(Sample {
        ready,
        memory,
        raw: response.body,
    })
}

/// The log's replacements by slot: (pid, MiB) of each worker replaced, from lines like "worker 1 (pid
/// 4242, gen 1) uses 41.3 MiB PSS > --max-memory 40M: replacing it in slot 1; ...".
fn replacements(launcher: &Launcher) -> BTreeMap<usize, Vec<(i32, f64)>> {
    let mut by_slot: BTreeMap<usize, Vec<(i32, f64)>> = BTreeMap::new();
    for line in launcher.log_lines("PSS > --max-memory") {
        let pid = between(&line, "(pid ", ",").and_then(|p| p.parse().ok());
        let mib = between(&line, ") uses ", " MiB").and_then(|m| m.parse().ok());
        let slot = between(&line, "replacing it in slot ", ";").and_then(|s| s.parse().ok());
        if let (Some(pid), Some(mib), Some(slot)) = (pid, mib, slot) {
            by_slot.entry(slot).or_default().push((pid, mib));
        }
    }
    by_slot
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}
