//! Set-ups several tests share: a launcher serving a PROGRAM script that `exec`s example-server, which
//! a test rewrites between reloads the way a deploy replaces a binary.

use std::path::PathBuf;
use std::time::Duration;

use super::{exec_server, free_port, Launcher, TempDir};

/// Start plus readiness of a generation of example-servers on a loaded 2-core machine takes well under this.
pub const GENERATION_DEADLINE: Duration = Duration::from_secs(20);

/// A launcher running `<dir>/server.sh` (which execs example-server on a fresh port).
pub struct ScriptedLauncher {
    pub launcher: Launcher,
    pub script: PathBuf,
    pub port: u16,
    pub addr: String,
}

impl ScriptedLauncher {
    /// Starts the launcher with `launcher_args` (before `--`) on a script running example-server with
    /// `server_args`, and waits until generation 1 serves with `workers` workers.
    pub fn start(
        dir: &TempDir,
        launcher_args: &[&str],
        server_args: &str,
        workers: usize,
    ) -> ScriptedLauncher {
        let port = free_port();
        let script = dir.write_script("server.sh", &exec_server(port, server_args));
        let mut args: Vec<String> = vec!["--workers".into(), workers.to_string()];
        args.extend(launcher_args.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.push(script.display().to_string());
        let launcher = Launcher::spawn(dir, &args);
        assert!(
            launcher.wait_for_log("generation 1 serving", GENERATION_DEADLINE),
            "generation 1 did not become ready"
        );
        assert!(
            launcher.wait_for_workers(workers, 1, Duration::from_secs(5)),
            "generation 1 should have {workers} workers: {:?}",
            launcher.workers()
        );
        ScriptedLauncher {
            launcher,
            script,
            port,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// Replaces the script so that later workers run example-server with `server_args`.
    pub fn deploy(&self, dir: &TempDir, server_args: &str) {
        dir.write_script("server.sh", &exec_server(self.port, server_args));
    }
}

/// A deploy whose new generation cannot get ready (`bad_server_args`) is rolled back under load: no request
/// fails, the same generation-1 pids keep serving, the launcher keeps running and logs why the reload to
/// generation 2 failed (the line must contain every string of `reason_mentions`); after the script is
/// restored, the next reload (generation 3) succeeds.
pub fn failed_reload_keeps_old_generation(
    test_name: &str,
    bad_server_args: &str,
    reason_mentions: &[&str],
) {
    use super::procfs;
    use super::{http_get, private_netns, wait_until, MixedLoad};
    use nix::sys::signal::Signal;

    const WORKERS: usize = 4;
    private_netns(true);
    let dir = TempDir::new(test_name);
    let mut scripted = ScriptedLauncher::start(
        &dir,
        &["--ready-timeout", "2", "--stop-timeout", "10"],
        "",
        WORKERS,
    );
    let addr = scripted.addr.clone();
    let old = scripted.launcher.workers_of(1);
    let old_ids = procfs::snapshot(&old);

    let load = MixedLoad::start(&dir, &addr);

    scripted.deploy(&dir, bad_server_args);
    scripted.launcher.signal(Signal::SIGHUP);
    let launcher = &scripted.launcher;
    assert!(
        launcher.wait_for_log("reload to generation 2 failed", Duration::from_secs(15)),
        "no `reload to generation 2 failed` line"
    );
    let line = launcher
        .log_lines("reload to generation 2 failed")
        .remove(0);
    for mention in reason_mentions
        .iter()
        .chain(&["worker ", "gen 2", "generation 1 keeps serving"])
    {
        assert!(
            line.contains(mention),
            "the failure line does not mention {mention:?}: {line}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || launcher.workers()
            == old.iter().map(|&p| (p, 1)).collect::<Vec<_>>()),
        "after the failed reload the workers are {:?}, not the old {old:?}",
        launcher.workers()
    );
    assert!(
        old_ids.iter().all(|&p| procfs::still_running(p)),
        "an old worker was replaced"
    );
    for _ in 0..8 {
        let (generation, pid) = http_get(&addr);
        assert_eq!(
            generation, 1,
            "pid {pid} of generation {generation} answered after the rollback"
        );
        assert!(
            old.contains(&pid),
            "pid {pid} answered, not one of the old workers {old:?}"
        );
    }
    assert!(
        scripted.launcher.running(),
        "the launcher exited after a failed reload"
    );

    // The fixed deploy goes through: the next reload is generation 3.
    scripted.deploy(&dir, "");
    scripted.launcher.signal(Signal::SIGHUP);
    let launcher = &scripted.launcher;
    assert!(
        launcher.wait_for_workers(WORKERS, 3, GENERATION_DEADLINE),
        "the reload after the fix did not give {WORKERS} workers of generation 3: {:?}",
        launcher.workers()
    );
    let left = procfs::wait_gone(&old_ids, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "old workers {left:?} still run after the successful reload"
    );
    assert_eq!(http_get(&addr).0, 3);

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "keep-alive: {} ok, {} failures, {} retries; connection-per-request: {} ok, {} failures, {} retries",
        keepalive.ok, keepalive.failures, keepalive.retries, close.ok, close.failures, close.retries
    );
    report.assert_no_failures();
}
