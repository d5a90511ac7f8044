//! `--health ipc`, the cluster masters' convention: the launcher sends each ready Node worker the
//! message `healthcheck` over its IPC channel every --health-interval and expects `healthy` within
//! --health-timeout. A worker that stops answering (alive, serving, but its event loop no longer
//! tends to the channel in this simulation) is replaced after --health-failures silent checks; the
//! one that answers is not, and no request fails meanwhile.

mod support;

use std::time::{Duration, Instant};

use support::procfs;
use support::*;

const WORKERS: usize = 2;
const START_DEADLINE: Duration = Duration::from_secs(30);
/// 2 failures of 0.5 s checks, one node start, the handover and drain.
const REPLACE_DEADLINE: Duration = Duration::from_secs(15);

/// Answers `healthcheck` with `healthy` until a file `mute-PID` appears in MUTE_DIR.
const APP: &str = r#"
const fs = require('fs');
const http = require('http');
const port = Number(process.argv[2]);
const mute = process.argv[3] + '/mute-' + process.pid;
http.createServer((req, res) => {
  res.setHeader('X-Pid', String(process.pid));
  res.setHeader('X-Generation', process.env.REUSEPORT_LAUNCH_GENERATION);
  res.setHeader('Connection', 'close');
  res.end('ok\n');
}).listen(port, '127.0.0.1', () => process.send('ready'));
process.on('message', (msg) => {
  if (msg === 'healthcheck' && !fs.existsSync(mute)) process.send('healthy');
});
"#;

#[test]
fn node_worker_that_stops_answering_healthcheck_is_replaced() {
    private_netns(true);
    let dir = TempDir::new("node_health_ipc");
    let app = dir.join("app.js");
    std::fs::write(&app, APP).unwrap();
    let mute_dir = dir.join("mute");
    std::fs::create_dir_all(&mute_dir).unwrap();
    let port = free_port();
    let (workers, app, port_arg, mute) = (
        WORKERS.to_string(),
        app.display().to_string(),
        port.to_string(),
        mute_dir.display().to_string(),
    );
    let args = [
        "-v",
        "--workers",
        &workers,
        "--ready",
        "notify",
        "--health",
        "ipc",
        "--health-interval",
        "0.5",
        "--health-timeout",
        "0.5",
        "--health-failures",
        "2",
        "--",
        "node",
        &app,
        &port_arg,
        &mute,
    ];
    let launcher = Launcher::spawn(&dir, &args);
    assert!(
        launcher.wait_for_log("generation 1 serving", START_DEADLINE),
        "generation 1 never served:\n{}",
        launcher.log_tail(30)
    );
    let addr = format!("127.0.0.1:{port}");
    let load = Loadgen::start(&dir, "close", &addr, Mode::Close, 4, &[]);
    assert!(load.wait_for_traffic(Duration::from_secs(10)));
    let healthy = "health check replied \"healthy\"";
    assert!(
        launcher.wait_for_log_count(healthy, 4 * WORKERS, START_DEADLINE),
        "the workers' healthcheck replies were not seen:\n{}",
        launcher.log_tail(30)
    );
    assert!(
        launcher.log_lines("starting its replacement").is_empty(),
        "a worker that answers was replaced"
    );
    let before = launcher.workers_of(1);
    let (muted, answering) = (before[0], before[1]);
    let muted_proc = procfs::snapshot(&[muted]);
    let started = Instant::now();
    std::fs::write(mute_dir.join(format!("mute-{muted}")), "").unwrap();
    let replaced = wait_until(REPLACE_DEADLINE, || {
        let now = launcher.workers_of(1);
        now.len() == WORKERS
            && !now.contains(&muted)
            && !muted_proc.iter().any(|&p| procfs::still_running(p))
    });
    let took = started.elapsed();
    let after = launcher.workers_of(1);
    let report = load.stop();
    eprintln!(
        "muted worker {muted} replaced: {replaced} after {} ms; workers {before:?} -> {after:?}; load: {} \
         requests, {} failures",
        took.as_millis(),
        report.requests,
        report.failures
    );
    assert!(
        replaced,
        "the silent worker was not replaced:\n{}",
        launcher.log_tail(30)
    );
    assert!(
        after.contains(&answering),
        "the answering worker was replaced too: {after:?}"
    );
    let failed = launcher.log_lines("health check failed: no answer within 0.5s");
    assert!(
        !failed.is_empty() && failed.iter().all(|l| l.contains(&format!("pid {muted},"))),
        "the log does not say the muted worker's checks timed out: {failed:?}"
    );
    assert_eq!(launcher.log_lines("starting its replacement").len(), 1);
    assert_eq!(report.failures, 0, "requests failed: {}", report.raw);
}
