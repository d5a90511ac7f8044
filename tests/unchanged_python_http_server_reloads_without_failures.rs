//! `python3 -m http.server`, unchanged (it never sets SO_REUSEPORT and never sends READY=1), reloads 20
//! times under connection-per-request load without one failed request: the launcher sets SO_REUSEPORT on
//! its bind, counts a worker ready once it listens and drains an old worker by its listener
//! (`--drain auto`). The new generation really listens beside the old one: during a reload the port's
//! group holds listeners of old and new pids at once (with steering, the default as root, the old ones
//! receive nothing new once the new generation is ready, so answers switch from old to new pids rather
//! than overlap; the overlaps are printed, not asserted). Control: with `--drain signal` (python dies
//! at SIGTERM with requests in flight; with steering it gets SIGTERM only once its queue is empty) the
//! same run, with 10 reloads to bound the test's time, prints its failures; they are not asserted.
//!
//! python's directory listing names no pid, so each worker serves a directory of its own holding one
//! file named `gen-G-pid-P` (made by the PROGRAM script before it execs python): a probe reads who answered.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::launcher::reload_and_wait;
use support::unchanged::{python3, worker_listeners, Listener};
use support::*;

const WORKERS: usize = 4;
const RELOADS: u32 = 20;
/// Reloads of the control run: enough to show python's lost in-flight requests, half the time.
const CONTROL_RELOADS: u32 = 10;
/// Start of 4 python interpreters on a loaded 2-core machine, plus the drain of the old ones.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
/// Start plus readiness of generation 1.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Timeout of one probe request: a local python answers a directory listing in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between probe requests: enough samples in a reload's overlap, little CPU taken from the servers.
const PROBE_PAUSE: Duration = Duration::from_millis(2);
/// Pause between listener censuses while a reload runs: the all-8 window lasts about one 10 ms
/// listen-probe interval of the launcher.
const CENSUS_PAUSE: Duration = Duration::from_millis(1);

/// PROGRAM: a directory of its own for the worker, one file naming its generation and pid, then python
/// in place of the shell (same pid). python's per-request log goes to /dev/null to keep the launcher log small.
fn script(dir: &TempDir, python: &str, port: u16) -> String {
    let www = dir.join("www");
    format!(
        "d={www}/$$\n\
         mkdir -p \"$d\" && : > \"$d/gen-${{REUSEPORT_LAUNCH_GENERATION}}-pid-$$\" && cd \"$d\" || exit 1\n\
         exec {python} -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1",
        www = www.display()
    )
}

/// One `GET /` with a connection of its own; (generation, pid) read from the listing's `gen-G-pid-P`.
fn probe(addr: &SocketAddr) -> Result<(u32, i32), String> {
    let mut stream =
        TcpStream::connect_timeout(addr, PROBE_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut body = Vec::new();
    stream
        .read_to_end(&mut body)
        .map_err(|e| format!("read: {e} after {} bytes", body.len()))?;
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.0 200") && !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "unexpected response {:?}",
            &text[..text.len().min(200)]
        ));
    }
    let marker = text
        .split("gen-")
        .nth(1)
        .ok_or_else(|| format!("no gen- marker in {} bytes", text.len()))?;
    let (generation, rest) = marker.split_once("-pid-").ok_or("bad marker")?;
    let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Ok((
        generation.parse().map_err(|_| "bad generation")?,
        pid.parse().map_err(|_| "bad pid")?,
    ))
}

/// What one run observed.
struct Run {
    load: LoadgenReport,
    /// (time, who answered) of every successful probe.
    answers: Vec<(Instant, u32, i32)>,
    probe_failures: Vec<String>,
    /// Per reload (index 0 = reload to generation 2): the census with the most listeners of old and
    /// new pids together.
    best_census: Vec<Vec<Listener>>,
    /// How long each reload took, SIGHUP to the old pids gone.
    reload_ms: Vec<u128>,
    /// The launcher's SIGKILL warnings (python dies at SIGTERM at once; there should be none).
    sigkills: Vec<String>,
}

/// Runs a launcher of `WORKERS` pythons with `drain` and reloads it `reloads` times under load.
fn run(test: &str, drain: &str, python: &str, reloads: u32) -> Run {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let program = dir.write_script("server.sh", &script(&dir, python, port));
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            &WORKERS.to_string(),
            "--drain",
            drain,
            "--stop-timeout",
            "10",
            "-v",
            "--",
            program.to_str().unwrap(),
        ],
    );
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 of python http.server did not become ready"
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(
        load.wait_for_traffic(Duration::from_secs(10)),
        "loadgen got no response from python http.server"
    );

    let stop = AtomicBool::new(false);
    let answers = Mutex::new(Vec::new());
    let probe_failures = Mutex::new(Vec::new());
    let socket_addr: SocketAddr = addr.parse().unwrap();
    let mut best_census = Vec::new();
    let mut reload_ms = Vec::new();
    std::thread::scope(|s| {
        // Threads spawned here share the test thread's private network namespace.
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                match probe(&socket_addr) {
                    Ok((g, p)) => answers.lock().unwrap().push((Instant::now(), g, p)),
                    Err(e) => probe_failures.lock().unwrap().push(e),
                }
                std::thread::sleep(PROBE_PAUSE);
            }
        });
        for generation in 2..=reloads + 1 {
            let started = Instant::now();
            let best: Mutex<Vec<Listener>> = Mutex::new(Vec::new());
            let reloading = AtomicBool::new(true);
            std::thread::scope(|inner| {
                inner.spawn(|| {
                    while reloading.load(Ordering::SeqCst) {
                        let census = worker_listeners(&launcher, port);
                        let old = census.iter().filter(|l| l.generation < generation).count();
                        let new = census.len() - old;
                        let mut best = best.lock().unwrap();
                        let best_old = best.iter().filter(|l| l.generation < generation).count();
                        if old.min(new) > 0
                            && (best_old.min(best.len() - best_old) == 0
                                || census.len() > best.len())
                        {
                            *best = census;
                        }
                        drop(best);
                        std::thread::sleep(CENSUS_PAUSE);
                    }
                });
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {})
                }));
                reloading.store(false, Ordering::SeqCst);
                if let Err(panic) = outcome {
                    stop.store(true, Ordering::SeqCst);
                    std::panic::resume_unwind(panic);
                }
            });
            reload_ms.push(started.elapsed().as_millis());
            best_census.push(best.into_inner().unwrap());
        }
        stop.store(true, Ordering::SeqCst);
    });
    let load = load.stop();
    Run {
        load,
        answers: answers.into_inner().unwrap(),
        probe_failures: probe_failures.into_inner().unwrap(),
        best_census,
        reload_ms,
        sigkills: launcher.log_lines("SIGKILL"),
    }
}

/// Reloads (generation numbers) where a new pid answered a probe before an old pid's last answer.
fn overlapping_answers(answers: &[(Instant, u32, i32)]) -> Vec<(u32, i32, i32)> {
    let mut found = Vec::new();
    for generation in 2..=RELOADS + 1 {
        let first_new = answers.iter().find(|a| a.1 == generation);
        let last_old = answers.iter().rev().find(|a| a.1 == generation - 1);
        if let (Some(new), Some(old)) = (first_new, last_old) {
            if new.0 < old.0 {
                found.push((generation, old.2, new.2));
            }
        }
    }
    found
}

#[test]
fn unchanged_python_http_server_reloads_without_failures() {
    private_netns(true);
    let python = python3();

    let auto = run("python_auto", "auto", &python, RELOADS);
    let overlaps = overlapping_answers(&auto.answers);
    let full_groups = auto
        .best_census
        .iter()
        .filter(|c| c.len() == 2 * WORKERS)
        .count();
    eprintln!(
        "--drain auto: {} requests, {} ok, {} failures, {} reloads; probes: {} answered, {} failed; \
         reloads where a new pid answered before an old pid's last answer: {}/{RELOADS} {overlaps:?}; \
         reloads where all {} listeners (old and new) were seen at once: {full_groups}/{RELOADS}; \
         reload times (ms) {:?}; launcher SIGKILL warnings: {:?}",
        auto.load.requests,
        auto.load.ok,
        auto.load.failures,
        RELOADS,
        auto.answers.len(),
        auto.probe_failures.len(),
        overlaps.len(),
        2 * WORKERS,
        auto.reload_ms,
        auto.sigkills
    );
    if let Some((i, census)) = auto
        .best_census
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| c.len())
    {
        eprintln!(
            "reload to generation {}: most listeners of old and new pids seen at once: {census:?}",
            i + 2
        );
    }
    assert_eq!(
        auto.load.failures, 0,
        "python http.server lost requests over {RELOADS} reloads: {}",
        auto.load.raw
    );
    assert!(auto.load.ok > 0, "no request succeeded: {}", auto.load.raw);
    assert!(
        auto.probe_failures.is_empty(),
        "probe requests failed: {:?}",
        auto.probe_failures
    );
    let seen_together = auto.best_census.iter().filter(|c| !c.is_empty()).count();
    assert!(
        seen_together > 0,
        "in no reload were listeners of old and new pids seen on the port at the same time"
    );

    // Control: python exits at SIGTERM at once, with whatever it was answering.
    let signal = run("python_signal", "signal", &python, CONTROL_RELOADS);
    eprintln!(
        "control --drain signal: {} requests, {} ok, {} failures {:?}, {} reloads; probes: {} answered, {} \
         failed; reload times (ms) {:?}",
        signal.load.requests,
        signal.load.ok,
        signal.load.failures,
        signal.load.failure_kinds,
        CONTROL_RELOADS,
        signal.answers.len(),
        signal.probe_failures.len(),
        signal.reload_ms
    );
}
