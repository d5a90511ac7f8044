//! A stateless UDP server (DNS-style: the legacy python server of tests/support/udp.rs, which binds
//! without SO_REUSEPORT, never sends READY=1 and dies at SIGTERM) reloads 10 times under query load
//! where every query comes from a socket of its own (a fresh client port, as a DNS stub resolver
//! does), never retried: with steering (the default as root) no query is lost and every pid is
//! replaced. The launcher puts the workers' UDP sockets in their group's steering map, steers an old
//! worker out once the new generation is ready, and signals it only once no datagram waits in its
//! receive queue and --handover-grace has passed.
//!
//! Control: with `--steer off` the old generation is signalled as soon as the new one is ready while
//! the kernel's hash still sends it a share of the datagrams; what it had queued, and what reaches it
//! until its socket closes, is lost. Asserted: at least one query lost (each client that loses one
//! waits its 1 s timeout, so the count stays small; 4 runs of 4 lost 3 to 6 on a 2-core machine).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::launcher::reload_and_wait;
use support::udp::{query, write_server};
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 10;
/// Query loops running at once: enough to keep a queue on each python worker, little enough for
/// 2 cores shared with the pythons and the launcher.
const CLIENTS: usize = 3;
/// A query counts lost if no answer came within this: a local python answers in well under 1 ms.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds the run whatever happens: at most this many queries per client.
const MAX_QUERIES_PER_CLIENT: u64 = 200_000;
const START_DEADLINE: Duration = Duration::from_secs(20);
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);

struct Run {
    sent: u64,
    lost: Vec<String>,
    /// Pids that answered, with their generation.
    answered_by: Vec<(u32, i32)>,
    /// Every worker pid of every generation, as the launcher listed them.
    pids: Vec<(u32, Vec<i32>)>,
}

fn run(test: &str, steer: &str) -> Run {
    let dir = TempDir::new(test);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = write_server(&dir);
    let args = [
        "--workers".to_string(),
        WORKERS.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--steer".to_string(),
        steer.to_string(),
        "--stop-timeout".to_string(),
        "10".to_string(),
        "-v".to_string(),
        "--".to_string(),
        python3(),
        server.display().to_string(),
        port.to_string(),
    ];
    let launcher = Launcher::spawn_serving(&dir, &args, START_DEADLINE);
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let mut pids = vec![(1, launcher.workers_of(1))];
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let lost = Mutex::new(Vec::new());
    let answered_by = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let mut mine = Vec::new();
                for n in 0..MAX_QUERIES_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    match query(addr, format!("q{n}").as_bytes(), QUERY_TIMEOUT) {
                        Ok(who) => {
                            if !mine.contains(&who) {
                                mine.push(who);
                            }
                        }
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
            for generation in 2..=RELOADS + 1 {
                reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
                pids.push((generation, launcher.workers_of(generation)));
            }
        }));
        stop.store(true, Ordering::SeqCst);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    let failures = launcher.log_lines("unable to");
    assert!(
        failures.is_empty(),
        "the launcher could not steer: {failures:?}"
    );
    Run {
        sent: sent.into_inner(),
        lost: lost.into_inner().unwrap(),
        answered_by: answered_by.into_inner().unwrap(),
        pids,
    }
}

#[test]
fn udp_queries_survive_reloads_with_steering() {
    private_netns(true);
    let started = Instant::now();
    let steered = run("udp_steer", "on");
    eprintln!(
        "--steer on: {} queries over {RELOADS} reloads, {} lost, in {:?}",
        steered.sent,
        steered.lost.len(),
        started.elapsed()
    );
    assert!(
        steered.lost.is_empty(),
        "{} of {} queries lost with steering: {:?}",
        steered.lost.len(),
        steered.sent,
        &steered.lost[..steered.lost.len().min(5)]
    );
    // Every generation's pids are new, and each answered.
    let mut all: Vec<i32> = steered.pids.iter().flat_map(|(_, p)| p.clone()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        WORKERS * (RELOADS as usize + 1),
        "pids reused: {:?}",
        steered.pids
    );
    for (generation, pids) in &steered.pids {
        assert!(
            steered
                .answered_by
                .iter()
                .any(|(g, p)| g == generation && pids.contains(p)),
            "no query was answered by generation {generation} ({pids:?})"
        );
    }

    let started = Instant::now();
    let unsteered = run("udp_nosteer", "off");
    eprintln!(
        "--steer off: {} queries over {RELOADS} reloads, {} lost, in {:?}",
        unsteered.sent,
        unsteered.lost.len(),
        started.elapsed()
    );
    assert!(
        !unsteered.lost.is_empty(),
        "--steer off lost no query over {RELOADS} reloads ({} sent): the control shows nothing",
        unsteered.sent
    );
}
