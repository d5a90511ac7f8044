//! A local flood does not take the launcher's own endpoints away: while a helper process sends 100,000
//! datagrams (spoofed READY=1, garbage, oversized) to the workers' NOTIFY_SOCKET and 200 idle clients
//! hang on the control socket, `reload --wait` and `status` still answer, the spoofed readiness counts
//! for nothing, and the log stays at a few lines: the first drop of each kind, then one line with the
//! count when the 10 s window ends — and the counts add up to every datagram sent.

mod support;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::control::client;
use support::procfs;
use support::*;

const DATAGRAMS: u64 = 100_000;
const IDLE_CONTROL_CLIENTS: usize = 200;
/// Kinds of datagram the helper sends, in turn: spoofed READY=1 (twice), non-UTF-8 garbage, a line
/// without `=`, and one over the 4096-byte limit — three kinds of drop for the launcher.
const FLOOD_SCRIPT: &str = r#"
import socket, sys
path, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
kinds = [b"READY=1", b"\xff\xfe\x00garbage", b"READY", b"X" * 5000, b"READY=1\nSTATUS=spoofed"]
for i in range(count):
    s.send(kinds[i % len(kinds)])
print("sent", count, flush=True)
"#;
/// After the flood, the last window's summaries are due within the window (10 s), plus slack.
const SUMMARY_DEADLINE: Duration = Duration::from_secs(25);
/// The flood takes about a second; this bounds a loaded 2-core machine.
const FLOOD_DEADLINE: Duration = Duration::from_secs(60);
/// `reload --wait` of two example servers takes milliseconds; under the flood, still well under this.
const RELOAD_BOUND: Duration = Duration::from_secs(10);
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Log lines about drops allowed per started 10 s window of the flood: the first drop of each of the 3
/// kinds and their 3 summaries, and a first line and a summary of evicted control clients.
const DROP_LINES_PER_WINDOW: usize = 8;
/// The drop log's window.
const DROP_WINDOW: Duration = Duration::from_secs(10);

#[test]
fn flooded_local_endpoints_still_answer() {
    private_netns(true);
    let dir = TempDir::new("flooded_endpoints");
    let port = free_port().to_string();
    let launcher = Launcher::spawn(
        &dir,
        &[
            "--workers",
            "2",
            "--name",
            "flood",
            "--",
            example_server(),
            "--port",
            &port,
        ],
    );
    assert!(launcher.wait_for_log("generation 1 serving", READY_DEADLINE));
    let notify = launcher
        .workers()
        .first()
        .and_then(|&(pid, _)| procfs::env_var(pid, "NOTIFY_SOCKET"))
        .expect("a worker's NOTIFY_SOCKET");
    let control_path = dir.join("run/reuseport-launch/flood.sock");

    let started = Instant::now();
    let mut flooder = ChildGuard::spawn(
        std::process::Command::new("python3")
            .args(["-c", FLOOD_SCRIPT, &notify, &DATAGRAMS.to_string()])
            .stdout(std::process::Stdio::null()),
    );
    let connect_idle = || -> Vec<UnixStream> {
        (0..IDLE_CONTROL_CLIENTS)
            .map(|i| {
                UnixStream::connect(&control_path)
                    .unwrap_or_else(|e| panic!("idle control client {i}: {e}"))
            })
            .collect()
    };
    let mut idle = connect_idle();

    // While the flood runs: reload --wait and status answer, again and again, each time beside a fresh
    // crowd of idle clients (more than the 64 the control socket keeps waiting).
    let mut rounds = 0;
    let mut during_flood = 0;
    let mut reload_times = Vec::new();
    let mut generation = 1;
    while rounds < 3 || flooder.wait_exit(Duration::ZERO).is_none() {
        let flooding = flooder.wait_exit(Duration::ZERO).is_none();
        idle = connect_idle();
        let reload = client(&dir, &["reload", "--wait"], RELOAD_BOUND);
        assert_eq!(
            reload.code(),
            0,
            "reload --wait under the flood: {}",
            reload.show()
        );
        generation += 1;
        assert!(
            reload
                .stdout
                .contains(&format!("generation {generation} serving")),
            "{}",
            reload.show()
        );
        reload_times.push(reload.took);
        let status = client(&dir, &["status"], RELOAD_BOUND);
        assert_eq!(
            status.code(),
            0,
            "status under the flood: {}",
            status.show()
        );
        assert!(
            status.stdout.contains(&format!("gen {generation}")),
            "{}",
            status.show()
        );
        rounds += 1;
        if flooding {
            during_flood += 1;
        }
        assert!(
            started.elapsed() < FLOOD_DEADLINE,
            "the flood did not end within {FLOOD_DEADLINE:?}"
        );
    }
    let flood_took = started.elapsed();
    reload_times.sort();
    let median_reload = reload_times[reload_times.len() / 2];
    let slowest_reload = reload_times[reload_times.len() - 1];
    let flood_status = flooder
        .wait_exit(FLOOD_DEADLINE)
        .expect("the flooder ended");
    assert!(
        flood_status.success(),
        "the flooding helper failed: {flood_status}"
    );
    assert!(during_flood >= 1, "no reload happened while the flood ran");
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", launcher.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    drop(idle);

    // The spoofed READY=1 made nothing ready: every generation became ready by its own workers only.
    assert!(launcher.wait_for_workers(2, generation, READY_DEADLINE));

    // Each kind of drop: one line at once, then one summary with the count per 10 s window; together,
    // every datagram sent.
    let accounted = || -> u64 {
        let text = launcher.log_text();
        let first_lines = text
            .lines()
            .filter(|l| l.contains("notify message from pid"))
            .count() as u64;
        let counted: u64 = text
            .lines()
            .filter(|l| l.contains("more notify messages from pid"))
            .filter_map(|l| {
                let after = l.split("dropped ").nth(1)?;
                after
                    .split(' ')
                    .next()?
                    .replace(',', "")
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        first_lines + counted
    };
    assert!(
        wait_until(SUMMARY_DEADLINE, || accounted() == DATAGRAMS),
        "the logged and counted drops ({}) do not add up to the {DATAGRAMS} datagrams sent:\n{}",
        accounted(),
        launcher.log_lines("notify message").join("\n")
    );
    let summaries = launcher.log_lines("more notify messages from pid");
    let notify_first = launcher.log_lines("notify message from pid").len();
    let drop_log: Vec<String> = launcher
        .log_text()
        .lines()
        .filter(|l| l.contains("dropped") || l.contains("control client"))
        .map(str::to_owned)
        .collect();
    let drop_lines = drop_log.len();
    eprintln!(
        "{DATAGRAMS} datagrams + {IDLE_CONTROL_CLIENTS} idle control clients in {} ms: {rounds} reload --wait \
         ({during_flood} during the flood, median {} ms, slowest {} ms), launcher RSS {rss_kb}; {drop_lines} log lines about \
         drops ({notify_first} first notify drops, {} summaries)",
        flood_took.as_millis(),
        median_reload.as_millis(),
        slowest_reload.as_millis(),
        summaries.len()
    );
    let windows = (flood_took.as_secs() / DROP_WINDOW.as_secs() + 1) as usize;
    assert!(
        drop_lines <= DROP_LINES_PER_WINDOW * windows + 2,
        "{drop_lines} log lines about drops:\n{}",
        drop_log.join("\n")
    );
}
