//! `--watchdog SECS`: a worker that sent WATCHDOG=1 once and then stays silent longer than that is
//! replaced in its slot (logged with how long it was silent); a worker that keeps pinging is left alone.

mod support;

use std::time::Duration;

use support::*;

/// A worker that sends READY=1 and WATCHDOG=1, then keeps pinging only if PING is set, and otherwise
/// hangs silently (the way a deadlocked server does).
const WORKER: &str = r#"
import os, socket, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
sock.send(b"READY=1\nWATCHDOG=1")
while True:
    time.sleep(0.2)
    if os.environ.get("PING") == "1":
        sock.send(b"WATCHDOG=1")
"#;

fn start(dir: &TempDir, ping: bool) -> Launcher {
    let script = dir.join("worker.py");
    std::fs::write(&script, WORKER).expect("write worker.py");
    let args = [
        "--workers",
        "2",
        "--watchdog",
        "1",
        "--stop-timeout",
        "1",
        "--",
        "python3",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(script.display().to_string());
    let launcher = Launcher::spawn_with(dir, &args, |c| {
        c.env("PING", if ping { "1" } else { "0" });
    });
    assert!(
        launcher.wait_for_log("generation 1 serving", Duration::from_secs(20)),
        "generation 1 never served:\n{}",
        launcher.log_tail(30)
    );
    launcher
}

#[test]
fn silent_worker_is_replaced() {
    private_netns(true);
    let dir = TempDir::new("watchdog_silent");
    let launcher = start(&dir, false);
    let first = launcher.workers_of(1);
    assert_eq!(first.len(), 2);
    assert!(
        launcher.wait_for_log(
            "since its last WATCHDOG=1 (--watchdog)",
            Duration::from_secs(10)
        ),
        "no watchdog replacement:\n{}",
        launcher.log_tail(30)
    );
    let line = launcher.log_lines("since its last WATCHDOG=1").remove(0);
    assert!(
        line.contains("silent for 1."),
        "silence not reported in seconds: {line}"
    );
    // Both silent workers are replaced by new processes in the same generation.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = launcher.workers_of(1);
            now.len() == 2 && now.iter().all(|pid| !first.contains(pid))
        }),
        "silent workers were not replaced: before {first:?}, now {:?}\n{}",
        launcher.workers_of(1),
        launcher.log_tail(30)
    );
}

#[test]
fn pinging_worker_is_left_alone() {
    private_netns(true);
    let dir = TempDir::new("watchdog_ping");
    let launcher = start(&dir, true);
    let first = launcher.workers_of(1);
    // Three watchdog periods without a replacement; the condition must stay false for the whole wait.
    let replaced = wait_until(Duration::from_secs(3), || {
        launcher.log_text().contains("--watchdog")
    });
    assert!(
        !replaced,
        "a pinging worker was replaced:\n{}",
        launcher.log_tail(30)
    );
    assert_eq!(launcher.workers_of(1), first);
}
