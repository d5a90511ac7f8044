//! `status` tells, per worker, whether it receives new connections and how many wait in its listener's
//! accept queue. Made deterministic with a stopped worker: generation 1's only worker is SIGSTOPped and
//! connections queue on its listener; a reload steers to generation 2, and the old worker stays in its
//! handover (receiving nothing, its queue full) until it is let go on, accepts its queue and is drained.
//! The queued clients are answered by it: a handover loses nothing.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::control::client;
use support::http::{parse_response, read_response};
use support::json::{self, Value};
use support::procfs;
use support::scenarios::{ScriptedLauncher, GENERATION_DEADLINE};
use support::*;

const QUEUED: usize = 5;
const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// (state, receiving, accept_queue) of the worker `pid` in `status --json`.
fn row(dir: &TempDir, pid: i32) -> Option<(String, Value, Value)> {
    let output = client(dir, &["status", "--json"], STATUS_DEADLINE);
    let status = json::parse(output.stdout.trim()).ok()?;
    let Some(Value::Array(workers)) = status.get("workers") else {
        return None;
    };
    let worker = workers
        .iter()
        .find(|w| w.get("pid").and_then(Value::as_u64) == Some(pid as u64))?;
    let state = match worker.get("state") {
        Some(Value::String(s)) => s.clone(),
        _ => return None,
    };
    Some((
        state,
        worker.get("receiving")?.clone(),
        worker.get("accept_queue")?.clone(),
    ))
}

#[test]
fn status_shows_which_workers_receive_and_their_queue() {
    private_netns(false);
    let dir = TempDir::new("status_receiving_queue");
    let scripted = ScriptedLauncher::start(&dir, &["--stop-timeout", "20"], "", 1);
    let old = scripted.launcher.workers_of(1)[0];
    assert!(
        wait_until(STATUS_DEADLINE, || row(&dir, old)
            == Some(("ready".into(), Value::Bool(true), Value::Number(0.0)))),
        "a serving worker should show as receiving with an empty queue: {:?}",
        row(&dir, old)
    );

    kill(Pid::from_raw(old), Signal::SIGSTOP).expect("SIGSTOP the generation-1 worker");
    let mut queued: Vec<TcpStream> = (0..QUEUED)
        .map(|_| {
            let mut stream = TcpStream::connect(&scripted.addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: q\r\nConnection: close\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    scripted.launcher.signal(Signal::SIGHUP);
    assert!(
        scripted
            .launcher
            .wait_for_log("generation 2 serving", GENERATION_DEADLINE),
        "{}",
        scripted.launcher.log_tail(20)
    );
    let new = scripted.launcher.workers_of(2)[0];
    let queued_count = Value::Number(QUEUED as f64);
    assert!(
        wait_until(STATUS_DEADLINE, || row(&dir, old)
            == Some(("handover".into(), Value::Bool(false), queued_count.clone()))),
        "the stopped old worker should be in its handover, not receiving, with {QUEUED} queued: {:?}",
        row(&dir, old)
    );
    assert_eq!(
        row(&dir, new),
        Some(("ready".into(), Value::Bool(true), Value::Number(0.0)))
    );
    let table = client(&dir, &["status"], STATUS_DEADLINE);
    assert!(
        table.stdout.contains("RECEIVING") && table.stdout.contains("QUEUE"),
        "the table has no RECEIVING/QUEUE columns:\n{}",
        table.stdout
    );
    let old_line = table
        .stdout
        .lines()
        .find(|l| l.contains(&format!(" {old} ")))
        .unwrap_or_else(|| panic!("no row for pid {old}:\n{}", table.stdout));
    let words: Vec<&str> = old_line.split_whitespace().collect();
    assert_eq!(words.get(3), Some(&"handover"), "{old_line}");
    assert_eq!(
        words.last(),
        Some(&QUEUED.to_string().as_str()),
        "{old_line}"
    );

    let old_ids = procfs::snapshot(&[old]);
    kill(Pid::from_raw(old), Signal::SIGCONT).expect("SIGCONT the generation-1 worker");
    for (i, stream) in queued.iter_mut().enumerate() {
        let response = read_response(stream).and_then(|r| parse_response(&r));
        assert!(
            matches!(response, Ok((1, pid)) if pid == old),
            "queued connection {i} was not answered by the old worker {old}: {response:?}"
        );
    }
    assert!(
        procfs::wait_gone(&old_ids, GENERATION_DEADLINE).is_empty(),
        "the old worker was not drained after its queue was accepted"
    );
}
