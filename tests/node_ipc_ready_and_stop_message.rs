//! PM2 conventions for Node workers: `process.send('ready')` over the IPC channel the launcher opens
//! (NODE_CHANNEL_FD) is the readiness gate, and `--stop-message shutdown` stops workers with that
//! message instead of SIGTERM (PM2's wait_ready and shutdown_with_message). Reloads under load lose nothing.

mod support;

use std::time::Duration;

use support::launcher::reload_and_wait;
use support::*;

const WORKERS: usize = 2;
const RELOADS: u32 = 4;
/// The app warms up this long after listening before it says 'ready'.
const WARM_UP_MS: u64 = 700;

/// Listens at once, says 'ready' only after warming up, and on the 'shutdown' message answers the
/// requests still coming with `Connection: close`, closes the server and exits 0. It has no SIGTERM
/// handler: a SIGTERM would kill it (signal 15), which the test would see.
const APP: &str = r#"
const http = require('http');
const port = Number(process.argv[2]);
let closing = false;
const server = http.createServer((req, res) => {
  if (closing) res.setHeader('Connection', 'close');
  res.setHeader('X-Pid', String(process.pid));
  res.setHeader('X-Generation', process.env.REUSEPORT_LAUNCH_GENERATION);
  res.end('ok\n');
});
server.listen(port, '127.0.0.1', () => setTimeout(() => process.send('ready'), WARM_UP_MS));
process.on('message', (msg) => {
  if (msg !== 'shutdown') return;
  closing = true;
  server.close(() => process.exit(0));
  setTimeout(() => server.closeIdleConnections(), 200);
});
"#;

#[test]
fn node_ready_message_gates_reloads_and_shutdown_message_drains() {
    private_netns(true);
    let dir = TempDir::new("node_ipc");
    let app = dir.join("app.js");
    std::fs::write(&app, APP.replace("WARM_UP_MS", &WARM_UP_MS.to_string())).expect("write app.js");
    let port = free_port();
    let workers = WORKERS.to_string();
    let app_path = app.display().to_string();
    let port_arg = port.to_string();
    let args = [
        "-v",
        "--workers",
        &workers,
        "--ready",
        "notify",
        "--stop-message",
        "shutdown",
        "--stop-timeout",
        "5",
        "--",
        "node",
        &app_path,
        &port_arg,
    ];
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", Duration::from_secs(30)),
        "generation 1 never served:\n{}",
        launcher.log_tail(30)
    );
    let addr = format!("127.0.0.1:{port}");
    let close = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    let keepalive = Loadgen::start(&dir, "keepalive", &addr, Mode::KeepAlive, 4, &[]);
    assert!(
        close.wait_for_traffic(Duration::from_secs(10))
            && keepalive.wait_for_traffic(Duration::from_secs(10))
    );
    for generation in 2..=RELOADS + 1 {
        reload_and_wait(
            &launcher,
            WORKERS,
            generation,
            Duration::from_secs(30),
            || {},
        );
    }
    let close = close.stop();
    let keepalive = keepalive.stop();
    println!("node IPC, {RELOADS} reloads: close {close:?}\nkeep-alive {keepalive:?}");
    assert_eq!(
        close.failures,
        0,
        "connection-per-request failures: {close:?}\n{}",
        launcher.log_tail(40)
    );
    assert_eq!(
        keepalive.failures,
        0,
        "keep-alive failures: {keepalive:?}\n{}",
        launcher.log_tail(40)
    );

    // The gate: no generation served before its workers said 'ready' (they listen ~WARM_UP_MS earlier).
    let serving = launcher.log_lines(" serving: ");
    assert_eq!(serving.len() as u32, RELOADS + 1, "{serving:?}");
    for line in &serving {
        let ms: u64 = line
            .split("ready in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no time in {line}"));
        assert!(
            ms >= WARM_UP_MS,
            "a generation served before 'ready': {line}"
        );
    }
    // The stop: every old worker left through the 'shutdown' message (exit 0), none by a signal.
    let exits: Vec<String> = launcher
        .log_lines("after the stop signal")
        .into_iter()
        .filter(|l| l.contains(" exited with "))
        .collect();
    assert_eq!(exits.len(), WORKERS * RELOADS as usize, "{exits:?}");
    assert!(
        exits.iter().all(|l| l.contains("exited with status 0")),
        "not stopped by the message: {exits:?}"
    );
}
