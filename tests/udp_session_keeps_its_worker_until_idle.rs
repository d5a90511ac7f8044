//! `--udp-flow-idle`: a session client (one socket, so one 4-tuple, a datagram every 100 ms) keeps
//! its worker across a reload while a new client gets the new generation (the old worker that holds
//! no flow is stopped as without flows); once the session pauses
//! for longer than the idle time, the old generation is stopped and the session's next datagrams go
//! to the new generation. No datagram of the session goes unanswered, and `status --json` shows the
//! session as a live flow of its worker. The server is the legacy
//! python UDP server of tests/support/udp.rs (no SO_REUSEPORT, no sd_notify, dies at SIGTERM).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::control::client;
use support::json::{self, Value};
use support::udp::{parse_tag, query, write_server};
use support::unchanged::python3;
use support::*;

const WORKERS: usize = 2;
/// `--udp-flow-idle`: long against the session's 100 ms beat, short for the test's time.
const IDLE: Duration = Duration::from_secs(1);
/// The session's beat.
const BEAT: Duration = Duration::from_millis(100);
/// Answers the session must get from its old worker after the new generation serves: over a second.
const ANSWERS_ACROSS_RELOAD: usize = 12;
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Bounds every wait of the test.
const DEADLINE: Duration = Duration::from_secs(15);

/// `udp_flows` of the worker `pid` in `status --json`.
fn live_flows(dir: &TempDir, pid: i32) -> Option<u64> {
    let output = client(dir, &["status", "--json"], DEADLINE);
    let status = json::parse(output.stdout.trim()).ok()?;
    let Some(Value::Array(workers)) = status.get("workers") else {
        return None;
    };
    workers
        .iter()
        .find(|w| w.get("pid").and_then(Value::as_u64) == Some(pid as u64))?
        .get("udp_flows")?
        .as_u64()
}

#[test]
fn udp_session_keeps_its_worker_until_idle() {
    private_netns(true);
    let dir = TempDir::new("udp_session");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = write_server(&dir);
    let args = [
        "--workers".to_string(),
        WORKERS.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--udp-flow-idle".to_string(),
        format!("{}", IDLE.as_secs_f64()),
        "--stop-timeout".to_string(),
        "20".to_string(),
        "-v".to_string(),
        "--".to_string(),
        python3(),
        server.display().to_string(),
        port.to_string(),
    ];
    let launcher = Launcher::spawn_serving(&dir, &args, START_DEADLINE);
    assert!(launcher.wait_for_workers(WORKERS, 1, Duration::from_secs(5)));
    let gen1 = launcher.workers_of(1);

    let session = UdpSocket::bind("127.0.0.1:0").unwrap();
    session.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let stop = AtomicBool::new(false);
    let paused = AtomicBool::new(false);
    let answers: Mutex<Vec<(Instant, u32, i32)>> = Mutex::new(Vec::new());
    let lost = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buffer = [0u8; 256];
            for n in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if !paused.load(Ordering::SeqCst) {
                    session.send_to(format!("s{n}").as_bytes(), addr).unwrap();
                    match session.recv_from(&mut buffer) {
                        Ok((len, _)) => {
                            let (g, pid) = parse_tag(&buffer[..len]).unwrap();
                            answers.lock().unwrap().push((Instant::now(), g, pid));
                        }
                        Err(e) => lost.lock().unwrap().push(format!("datagram {n}: {e}")),
                    }
                }
                std::thread::sleep(BEAT); // the session's beat, not synchronisation
            }
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let count = || answers.lock().unwrap().len();
            assert!(
                wait_until(DEADLINE, || count() >= 3),
                "the session got no answer"
            );
            let (_, _, session_pid) = answers.lock().unwrap()[0];
            assert!(gen1.contains(&session_pid));

            launcher.signal(nix::sys::signal::Signal::SIGHUP);
            assert!(launcher.wait_for_log("generation 2 serving", DEADLINE));
            let serving_at = Instant::now();
            let gen2 = launcher.workers_of(2);
            let (g, pid) = query(addr, b"new client", QUERY_TIMEOUT).expect("a new client's query");
            assert_eq!(g, 2, "a new client got pid {pid} of generation {g}");
            let since_reload = || {
                answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.0 > serving_at)
                    .map(|a| a.2)
                    .collect::<Vec<i32>>()
            };
            assert!(wait_until(DEADLINE, || since_reload().len() >= ANSWERS_ACROSS_RELOAD));
            assert!(
                since_reload().iter().all(|&p| p == session_pid),
                "the session left its worker {session_pid} after the reload: {:?}",
                since_reload()
            );
            // (The old worker without a flow is stopped after the grace, as without flows.)
            assert!(
                procfs::alive(session_pid),
                "the session's worker was stopped while the session was active"
            );
            // The session is a live flow of its worker in `status` (the new client's is another).
            assert!(
                live_flows(&dir, session_pid).is_some_and(|n| n >= 1),
                "status shows {:?} live flows for the session's worker",
                live_flows(&dir, session_pid)
            );

            paused.store(true, Ordering::SeqCst);
            let paused_at = Instant::now();
            assert!(
                wait_until(DEADLINE, || gen1.iter().all(|&p| !procfs::alive(p))),
                "the old generation was not stopped after the session went idle: {}",
                launcher.log_tail(20)
            );
            let gone_after = paused_at.elapsed();
            assert!(
                gone_after + BEAT >= IDLE - Duration::from_millis(100),
                "the old generation went {gone_after:?} after the session paused, before the idle time"
            );
            assert!(launcher.wait_for_log("reload to generation 2 done", DEADLINE));
            let resumed_at = Instant::now();
            paused.store(false, Ordering::SeqCst);
            let after_pause = || {
                answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.0 > resumed_at)
                    .map(|a| (a.1, a.2))
                    .collect::<Vec<(u32, i32)>>()
            };
            assert!(wait_until(DEADLINE, || after_pause().len() >= 3));
            assert!(
                after_pause()
                    .iter()
                    .all(|(g, p)| *g == 2 && gen2.contains(p)),
                "after the pause the session was answered by {:?}, not generation 2 ({gen2:?})",
                after_pause()
            );
            eprintln!(
                "session: {} answers, old worker kept {:?} after the new generation served, \
                 old generation gone {gone_after:?} after the session paused",
                answers.lock().unwrap().len(),
                paused_at - serving_at
            );
        }));
        stop.store(true, Ordering::SeqCst);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    let lost = lost.into_inner().unwrap();
    assert!(lost.is_empty(), "the session lost datagrams: {lost:?}");
}
