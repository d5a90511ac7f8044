//! The control socket and its client commands do what an operator relies on: `status` (table and --json)
//! lists every worker with its generation and pid; `reload --wait` exits 0 once the new generation serves and
//! 1 with the reason when it rolled back (the old generation still serving); `scale` and SIGTTIN/SIGTTOU change
//! the number of workers; `stop` returns once the launcher has exited and no worker is left. The socket is
//! 0600 and refuses other users clearly, and a client that sends nothing, or garbage, never stalls a reload.

mod support;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::control::{client, run_bounded, CommandOutput, CLIENT_DEADLINE};
use support::json::{self, Value};
use support::procfs;
use support::scenarios::{ScriptedLauncher, GENERATION_DEADLINE};
use support::*;

const WORKERS: usize = 2;
/// Instance name given to every launcher here (--name).
const NAME: &str = "ctl";
/// Launcher flags: quick to give up on a broken generation, quick to kill a stuck worker.
const LAUNCHER_ARGS: &[&str] = &[
    "--name",
    NAME,
    "--ready-timeout",
    "5",
    "--stop-timeout",
    "5",
];
/// `reload --wait` and `stop` return within this: a generation of example-servers starts in well under a
/// second, and --stop-timeout is 5 s.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);
/// The unprivileged user the refusal test connects as (nobody).
const OTHER_UID: u32 = 65534;
/// The launcher drops a client that sent no request line after 2 s (control.rs REQUEST_TIMEOUT); this is
/// that plus slack.
const SILENT_CLIENT_DROPPED_WITHIN: Duration = Duration::from_secs(10);

fn start(dir: &TempDir) -> ScriptedLauncher {
    ScriptedLauncher::start(dir, LAUNCHER_ARGS, "", WORKERS)
}

fn socket_path(dir: &TempDir) -> PathBuf {
    dir.join("run")
        .join("reuseport-launch")
        .join(format!("{NAME}.sock"))
}

fn expect_ok(output: &CommandOutput, what: &str) {
    assert_eq!(output.code(), 0, "{what} failed: {}", output.show());
}

/// (generation, pid) of every row of the human status table.
fn table_rows(table: &str) -> BTreeSet<(u32, i32, String)> {
    table
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let generation = words.first()?.parse().ok()?;
            let _slot: usize = words.get(1)?.parse().ok()?;
            let pid = words.get(2)?.parse().ok()?;
            Some((generation, pid, words.get(3)?.to_string()))
        })
        .collect()
}

/// (generation, pid, state) of every worker in `status --json`.
fn json_rows(status: &Value) -> BTreeSet<(u32, i32, String)> {
    let Some(Value::Array(workers)) = status.get("workers") else {
        panic!("status --json has no workers array: {status:?}");
    };
    workers
        .iter()
        .map(|w| {
            let state = match w.get("state") {
                Some(Value::String(s)) => s.clone(),
                other => panic!("worker without a state: {other:?}"),
            };
            (
                w.get("generation")
                    .and_then(Value::as_u64)
                    .expect("generation") as u32,
                w.get("pid").and_then(Value::as_u64).expect("pid") as i32,
                state,
            )
        })
        .collect()
}

/// The launcher's workers as the status commands should list them once all are ready.
fn expected_rows(launcher: &Launcher) -> BTreeSet<(u32, i32, String)> {
    launcher
        .workers()
        .into_iter()
        .map(|(pid, generation)| (generation, pid, "ready".to_string()))
        .collect()
}

fn status_json(dir: &TempDir) -> Value {
    let output = client(dir, &["status", "--name", NAME, "--json"], CLIENT_DEADLINE);
    expect_ok(&output, "status --json");
    json::parse(output.stdout.trim())
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}): {}", output.show()))
}

#[test]
fn status_lists_every_worker_and_reload_wait_reports_the_outcome() {
    private_netns(true);
    let dir = TempDir::new("ctl-status");
    let scripted = start(&dir);
    let launcher = &scripted.launcher;

    let table = client(&dir, &["status", "--name", NAME], CLIENT_DEADLINE);
    expect_ok(&table, "status");
    assert!(
        table
            .stdout
            .contains(&format!("launcher pid {}", launcher.pid()))
            && table.stdout.contains("gen 1"),
        "status should name the launcher pid and generation 1: {}",
        table.show()
    );
    assert_eq!(
        table_rows(&table.stdout),
        expected_rows(launcher),
        "status table rows: {}",
        table.stdout
    );
    let json = status_json(&dir);
    assert_eq!(
        json.get("launcher_pid").and_then(Value::as_u64),
        Some(launcher.pid() as u64)
    );
    assert_eq!(json.get("generation").and_then(Value::as_u64), Some(1));
    assert_eq!(
        json.get("workers_wanted").and_then(Value::as_u64),
        Some(WORKERS as u64)
    );
    assert_eq!(
        json_rows(&json),
        expected_rows(launcher),
        "status --json: {json:?}"
    );

    // reload --wait: exit 0 once generation 2 serves.
    let old = procfs::snapshot(&launcher.workers_of(1));
    let reload = client(&dir, &["reload", "--name", NAME, "--wait"], WAIT_DEADLINE);
    expect_ok(&reload, "reload --wait");
    assert!(
        reload.stdout.contains("generation 2 serving"),
        "reload --wait should say generation 2 serves: {}",
        reload.show()
    );
    assert!(
        launcher.wait_for_workers(WORKERS, 2, GENERATION_DEADLINE),
        "after reload --wait the workers are {:?}",
        launcher.workers()
    );
    assert!(procfs::wait_gone(&old, Duration::from_secs(10)).is_empty());
    assert_eq!(http_get(&scripted.addr).0, 2, "generation 2 should answer");
    let json = status_json(&dir);
    assert_eq!(json.get("generation").and_then(Value::as_u64), Some(2));
    assert_eq!(
        json_rows(&json),
        expected_rows(launcher),
        "status --json: {json:?}"
    );
    let table = client(&dir, &["status", "--name", NAME], CLIENT_DEADLINE);
    assert_eq!(
        table_rows(&table.stdout),
        expected_rows(launcher),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("last reload: ok, generation 2"),
        "{}",
        table.stdout
    );

    // A broken deploy: reload --wait exits 1 with the reason; generation 2 keeps serving, same pids.
    let serving = launcher.workers_of(2);
    scripted.deploy(&dir, "--exit-before-ready 3");
    let failed = client(&dir, &["reload", "--name", NAME, "--wait"], WAIT_DEADLINE);
    assert_eq!(
        failed.code(),
        1,
        "a failed reload --wait should exit 1: {}",
        failed.show()
    );
    assert!(
        failed.stderr.contains("reload to generation 3 failed")
            && failed.stderr.contains("status 3"),
        "the failed reload should print why (generation 3, exit status 3): {}",
        failed.show()
    );
    assert!(
        launcher.wait_for_workers(WORKERS, 2, GENERATION_DEADLINE),
        "generation 2 alone should be left after the rollback: {:?}",
        launcher.workers()
    );
    assert_eq!(
        launcher.workers_of(2),
        serving,
        "generation 2's workers should be the same processes"
    );
    for _ in 0..4 {
        assert_eq!(
            http_get(&scripted.addr).0,
            2,
            "generation 2 should still answer"
        );
    }
    let json = status_json(&dir);
    assert_eq!(json.get("generation").and_then(Value::as_u64), Some(2));
    let last = json.get("last_reload").expect("last_reload");
    assert_eq!(
        last.get("result"),
        Some(&Value::String("failed".into())),
        "{json:?}"
    );
    assert_eq!(
        last.get("generation").and_then(Value::as_u64),
        Some(3),
        "{json:?}"
    );
}

#[test]
fn scale_and_ttin_ttou_change_the_worker_count() {
    private_netns(true);
    let dir = TempDir::new("ctl-scale");
    let scripted = start(&dir);
    let launcher = &scripted.launcher;

    let scale = |count: &str| client(&dir, &["scale", "--name", NAME, count], CLIENT_DEADLINE);
    let up = scale("3");
    expect_ok(&up, "scale 3");
    assert!(
        launcher.wait_for_workers(3, 1, GENERATION_DEADLINE),
        "after scale 3: {:?}",
        launcher.workers()
    );
    assert!(
        wait_until(GENERATION_DEADLINE, || json_rows(&status_json(&dir)).len()
            == 3
            && json_rows(&status_json(&dir)).iter().all(|r| r.2 == "ready")),
        "status should show 3 ready workers: {:?}",
        status_json(&dir)
    );
    assert_eq!(
        status_json(&dir)
            .get("workers_wanted")
            .and_then(Value::as_u64),
        Some(3)
    );

    let down = scale("1");
    expect_ok(&down, "scale 1");
    assert!(
        launcher.wait_for_workers(1, 1, GENERATION_DEADLINE),
        "after scale 1: {:?}",
        launcher.workers()
    );
    assert_eq!(
        status_json(&dir)
            .get("workers_wanted")
            .and_then(Value::as_u64),
        Some(1)
    );

    let zero = scale("0");
    assert_eq!(zero.code(), 1, "scale 0 should be refused: {}", zero.show());
    assert!(
        zero.stderr.contains("0 workers"),
        "scale 0 should say why: {}",
        zero.show()
    );

    launcher.signal(Signal::SIGTTIN);
    assert!(
        launcher.wait_for_workers(2, 1, GENERATION_DEADLINE),
        "after SIGTTIN: {:?}",
        launcher.workers()
    );
    launcher.signal(Signal::SIGTTIN);
    assert!(
        launcher.wait_for_workers(3, 1, GENERATION_DEADLINE),
        "after a second SIGTTIN: {:?}",
        launcher.workers()
    );
    launcher.signal(Signal::SIGTTOU);
    assert!(
        launcher.wait_for_workers(2, 1, GENERATION_DEADLINE),
        "after SIGTTOU: {:?}",
        launcher.workers()
    );
    assert_eq!(
        status_json(&dir)
            .get("workers_wanted")
            .and_then(Value::as_u64),
        Some(2)
    );

    // A reload keeps the scaled count.
    let reload = client(&dir, &["reload", "--name", NAME, "--wait"], WAIT_DEADLINE);
    expect_ok(&reload, "reload --wait after scaling");
    assert!(
        launcher.wait_for_workers(2, 2, GENERATION_DEADLINE),
        "generation 2 should have the scaled count of 2 workers: {:?}",
        launcher.workers()
    );
}

#[test]
fn stop_returns_after_the_launcher_exited() {
    private_netns(true);
    let dir = TempDir::new("ctl-stop");
    let mut scripted = start(&dir);
    let workers = procfs::snapshot(&scripted.launcher.workers_of(1));
    assert_eq!(workers.len(), WORKERS);

    let stop = client(&dir, &["stop", "--name", NAME], WAIT_DEADLINE);
    expect_ok(&stop, "stop");
    assert!(stop.stdout.contains("stopped"), "{}", stop.show());
    // The client returned: the launcher must be gone already (a zombie until reaped here), and every worker.
    assert!(
        !procfs::alive(scripted.launcher.pid()),
        "stop returned but launcher pid {} still runs",
        scripted.launcher.pid()
    );
    let left: Vec<i32> = workers
        .iter()
        .filter(|&&w| procfs::still_running(w))
        .map(|w| w.pid)
        .collect();
    assert!(
        left.is_empty(),
        "stop returned but workers {left:?} still run"
    );
    assert!(
        scripted.launcher.descendants().is_empty(),
        "{:?}",
        scripted.launcher.descendants()
    );
    let status = scripted
        .launcher
        .wait_exit(Duration::from_secs(5))
        .expect("launcher exit status");
    assert!(
        status.success(),
        "the launcher exited with {status} after stop"
    );
    assert!(
        !socket_path(&dir).exists(),
        "the control socket should be removed on exit"
    );

    let after = client(&dir, &["status", "--name", NAME], CLIENT_DEADLINE);
    assert_eq!(
        after.code(),
        5,
        "status with no launcher should exit 5: {}",
        after.show()
    );
}

/// `reuseport-launch ARGS` as uid/gid 65534 with no supplementary groups.
fn client_as_other_user(dir: &TempDir, args: &[&str]) -> CommandOutput {
    let mut command = Command::new("setpriv");
    command
        .args([
            format!("--reuid={OTHER_UID}"),
            format!("--regid={OTHER_UID}"),
            "--clear-groups".to_string(),
        ])
        .arg(LAUNCHER)
        .args(args)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("RUNTIME_DIRECTORY");
    run_bounded(&mut command, CLIENT_DEADLINE)
}

#[test]
fn only_the_owner_may_use_the_socket() {
    private_netns(true);
    let dir = TempDir::new("ctl-uid");
    let scripted = start(&dir);
    let socket = socket_path(&dir);
    let meta = std::fs::metadata(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "control socket mode"
    );
    assert_eq!(
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
        "control socket owner"
    );
    let socket_dir = socket.parent().expect("socket dir");
    let dir_mode = std::fs::metadata(socket_dir)
        .expect("socket dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        dir_mode,
        0o700,
        "the launcher creates {} with mode 0700",
        socket_dir.display()
    );

    // 1. Directories opened up, socket still 0600: connect(2) is refused by the file mode.
    for path in [dir.path(), &dir.join("run"), socket_dir] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
    }
    let denied = client_as_other_user(&dir, &["reload", "--name", NAME]);
    eprintln!("another uid, socket 0600: {}", denied.show());
    assert_ne!(denied.code(), 0, "{}", denied.show());
    assert!(
        denied.stderr.contains("Permission denied") && denied.stderr.contains(NAME),
        "the refusal should name the launcher and the permission problem: {}",
        denied.show()
    );

    // 2. Even a socket made world-writable by mistake: the launcher checks the peer's uid.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod 0666");
    let refused = client_as_other_user(&dir, &["reload", "--name", NAME]);
    eprintln!("another uid, socket 0666: {}", refused.show());
    assert_eq!(
        refused.code(),
        1,
        "the launcher should refuse uid {OTHER_UID}: {}",
        refused.show()
    );
    assert!(
        refused.stderr.contains(&format!("uid {OTHER_UID}"))
            && refused.stderr.contains("may not control"),
        "the refusal should name the uid and say it may not control the launcher: {}",
        refused.show()
    );

    // Back to how the launcher set things up.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    for path in [dir.path(), &dir.join("run"), socket_dir] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    }

    // None of it did anything: still generation 1, the same workers, no reload.
    assert!(scripted
        .launcher
        .wait_for_workers(WORKERS, 1, Duration::from_secs(2)));
    let json = status_json(&dir);
    assert_eq!(
        json.get("generation").and_then(Value::as_u64),
        Some(1),
        "{json:?}"
    );
    assert_eq!(json.get("last_reload"), Some(&Value::Null), "{json:?}");
    assert_eq!(http_get(&scripted.addr).0, 1);

    // 3. As set up: the directories are 0700, so another user cannot even see the socket.
    let hidden = client_as_other_user(&dir, &["status", "--name", NAME]);
    eprintln!("another uid, socket dir 0700: {}", hidden.show());
    assert_ne!(
        hidden.code(),
        0,
        "another uid must be refused: {}",
        hidden.show()
    );
    assert!(
        hidden.stderr.contains("reuseport-launch: error:") && hidden.stdout.is_empty(),
        "the refusal should be an error message, and no status: {}",
        hidden.show()
    );
    assert!(
        hidden.stderr.contains("ermission denied") || hidden.stderr.contains("as this user"),
        "the refusal should say that permissions stopped it (not only that no launcher runs): {}",
        hidden.show()
    );
}

/// True while the launcher keeps `stream` open (nothing to read yet), false once it closed it.
fn still_open(stream: &mut UnixStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 64];
    match stream.read(&mut byte) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Ok(0) => false,
        Ok(_) => false, // the launcher answered (an error line) and will close
        Err(_) => false,
    }
}

#[test]
fn silent_and_garbage_clients_do_not_stall_a_reload() {
    private_netns(true);
    let dir = TempDir::new("ctl-stall");
    let scripted = start(&dir);
    let launcher = &scripted.launcher;
    let socket = socket_path(&dir);

    let mut silent = UnixStream::connect(&socket).expect("connect the silent client");
    let mut garbage = UnixStream::connect(&socket).expect("connect the garbage client");
    let mut bytes = Vec::with_capacity(10 * 1024);
    let mut seed: u32 = 0x2545_f491;
    while bytes.len() < 10 * 1024 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        bytes.push((seed & 0xff) as u8);
    }
    garbage
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    // The launcher may close the connection after reading its limit: a failed write is fine, a stall is not.
    let written = garbage.write_all(&bytes);
    eprintln!("garbage client: write of 10 KiB -> {written:?}");

    let started = Instant::now();
    let reload = client(&dir, &["reload", "--name", NAME, "--wait"], WAIT_DEADLINE);
    let took = started.elapsed();
    expect_ok(
        &reload,
        "reload --wait with a silent and a garbage client connected",
    );
    assert!(
        still_open(&mut silent),
        "the silent client was dropped before the reload finished ({} ms): the reload waited for it",
        took.as_millis()
    );
    assert!(
        launcher.wait_for_workers(WORKERS, 2, GENERATION_DEADLINE),
        "{:?}",
        launcher.workers()
    );
    assert_eq!(http_get(&scripted.addr).0, 2);

    // The garbage client got an error line (or was closed), never a stall.
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut answer = String::new();
    let _ = garbage.read_to_string(&mut answer);
    eprintln!("garbage client got {answer:?}");
    assert!(
        answer.is_empty() || answer.starts_with("error:"),
        "garbage must not be taken for a request: {answer:?}"
    );

    // The silent client is dropped after a bounded time.
    assert!(
        wait_until(SILENT_CLIENT_DROPPED_WITHIN, || !still_open(&mut silent)),
        "the silent client is still connected after {SILENT_CLIENT_DROPPED_WITHIN:?}"
    );
    let status = client(&dir, &["status", "--name", NAME], CLIENT_DEADLINE);
    expect_ok(&status, "status after the bad clients");
    assert!(status.stdout.contains("gen 2"), "{}", status.show());
}
