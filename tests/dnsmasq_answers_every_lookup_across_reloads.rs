//! A real DNS server from Debian's packages, dnsmasq, unchanged (it binds UDP and TCP port P without
//! SO_REUSEPORT and never sends READY=1), queried by a real DNS client, dig, one lookup per process
//! (a fresh client port each, never retried, 1 s timeout), over UDP and over TCP at once, across 10
//! reloads: no lookup fails, every pid is replaced and each generation answers. dnsmasq serves a TXT
//! record naming its generation and pid (the worker script execs it, keeping the shell's pid), so a
//! test can tell who answered.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use support::launcher::reload_and_wait;
use support::udp::parse_tag;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 10;
const START_DEADLINE: Duration = Duration::from_secs(20);
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
/// Answers from each generation before the next reload: dig starts a process per lookup (about 40
/// a second per client here), so this keeps lookups under way through every reload.
const LOOKUPS_PER_GENERATION: usize = 20;
/// Bounds the run whatever happens: at most this many lookups per client.
const MAX_LOOKUPS_PER_CLIENT: u64 = 20_000;

/// Debian's dnsmasq is in /usr/sbin, which a non-root PATH may lack.
fn dnsmasq() -> &'static str {
    if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    }
}

/// One lookup of who.test TXT with dig: Ok((generation, pid)) or what went wrong.
fn lookup(port: u16, tcp: bool) -> Result<(u32, i32), String> {
    let mut dig = Command::new("dig");
    dig.args(["@127.0.0.1", "-p", &port.to_string(), "who.test", "TXT"])
        .args(["+short", "+tries=1", "+time=1"]);
    if tcp {
        dig.arg("+tcp");
    }
    let output = dig
        .output()
        .map_err(|e| format!("unable to run dig (install bind9-dnsutils): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("dig exited with {}: {text}", output.status));
    }
    parse_tag(text.trim().trim_matches('"').as_bytes())
}

#[test]
fn dnsmasq_answers_every_lookup_across_reloads() {
    private_netns(true);
    let dir = TempDir::new("dnsmasq");
    let port = free_port();
    let script = dir.write_script(
        "dns.sh",
        &format!(
            "exec {} --keep-in-foreground --conf-file=/dev/null --port={port} \
             --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --pid-file= \
             --user=root --log-facility=/dev/null \
             --txt-record=who.test,\"gen-${{REUSEPORT_LAUNCH_GENERATION}}-pid-$$\"",
            dnsmasq()
        ),
    );
    let launcher = Launcher::spawn_serving(
        &dir,
        &[
            "--workers",
            &WORKERS.to_string(),
            "--port",
            &port.to_string(),
            "--stop-timeout",
            "10",
            "-v",
            "--",
            script.to_str().unwrap(),
        ],
        START_DEADLINE,
    );
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let mut pids = vec![(1, launcher.workers_of(1))];
    let stop = AtomicBool::new(false);
    let counts = [AtomicU64::new(0), AtomicU64::new(0)];
    let failures = Mutex::new(Vec::new());
    let answered_by = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // Two UDP clients and one TCP client.
        for tcp in [false, false, true] {
            let (stop, counts, failures, answered_by) = (&stop, &counts, &failures, &answered_by);
            s.spawn(move || {
                for _ in 0..MAX_LOOKUPS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    counts[usize::from(tcp)].fetch_add(1, Ordering::Relaxed);
                    match lookup(port, tcp) {
                        Ok(who) => answered_by.lock().unwrap().push(who),
                        Err(e) => failures.lock().unwrap().push((tcp, e)),
                    }
                }
            });
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(
                wait_until(Duration::from_secs(10), || {
                    counts.iter().all(|c| c.load(Ordering::Relaxed) > 5)
                }),
                "dig sent no lookups"
            );
            for generation in 2..=RELOADS + 1 {
                reload_and_wait(&launcher, WORKERS, generation, RELOAD_DEADLINE, || {});
                pids.push((generation, launcher.workers_of(generation)));
                // Lookups answered by the new generation before the next reload.
                let answered = || {
                    answered_by
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|a| a.0 == generation)
                        .count()
                };
                assert!(
                    wait_until(Duration::from_secs(10), || answered()
                        >= LOOKUPS_PER_GENERATION),
                    "generation {generation} answered no lookup"
                );
            }
        }));
        stop.store(true, Ordering::SeqCst);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    let failures = failures.into_inner().unwrap();
    let answered_by = answered_by.into_inner().unwrap();
    eprintln!(
        "dnsmasq over {RELOADS} reloads: {} UDP and {} TCP lookups with dig, {} failed",
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "lookups failed: {failures:?}");
    let mut all: Vec<i32> = pids.iter().flat_map(|(_, p)| p.clone()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        WORKERS * (RELOADS as usize + 1),
        "pids reused: {pids:?}"
    );
    for (generation, pids) in &pids {
        assert!(
            answered_by
                .iter()
                .any(|(g, p)| g == generation && pids.contains(p)),
            "no lookup was answered by generation {generation} ({pids:?})"
        );
    }
}
