//! The unit file an operator copies (systemd/reuseport-launch@.service) works under a real systemd: a private
//! `systemd --user` manager (systemd 252 here, not PID 1) starts reuseport-launch@demo from it; five
//! `systemctl --user reload` under load lose no request, keep the same MainPID and show the new generation in
//! the unit's StatusText; a broken deploy makes `systemctl --user reload` fail while the unit stays active and
//! the old generation keeps serving; `systemctl --user stop` drains and leaves no process behind.
//!
//! The manager runs in the test thread's private network namespace (so the service, the launcher's workers and
//! loadgen share 127.0.0.1 and net.ipv4.tcp_migrate_req=1), with its own XDG_RUNTIME_DIR / XDG_CONFIG_HOME in
//! the test's temp dir, and in a cgroup of its own below the test's: a user manager moves every process of the
//! cgroup it starts in into its init.scope, so starting it in the test's own cgroup would move the test runner
//! (and everything beside it) too. Everything is undone on drop, also when the test fails.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::launcher::ENV_MARKER;
use support::procfs::{self, Identity};
use support::user_manager::{UserManager, QUERY_DEADLINE, SYSTEMCTL_DEADLINE};
use support::*;

/// The unit under test, as shipped.
const UNIT_TEMPLATE: &str = include_str!("../systemd/reuseport-launch@.service");
const UNIT: &str = "reuseport-launch@demo.service";
/// Where the shipped unit expects the binary; replaced by the cargo-built one.
const INSTALLED_LAUNCHER: &str = "/usr/local/bin/reuseport-launch";
const WORKERS: usize = 4;
const RELOADS: u32 = 5;
/// Launcher arguments in the env file; --stop-timeout stays below the unit's TimeoutStopSec=45.
/// The quotes around TERM must be removed by systemd (example.env says quotes group words).
const LAUNCH_ARGS: &str = "--workers 4 --ready-timeout 5 --stop-signal \"TERM\" --stop-timeout 10";
/// Old workers drain idle keep-alive connections in --drain-idle-ms (200 ms); this leaves slack.
const OLD_GONE_DEADLINE: Duration = Duration::from_secs(10);
const ENV_GENERATION: &str = "REUSEPORT_LAUNCH_GENERATION";

/// The launcher's live workers: (pid, generation).
fn workers(main_pid: i32) -> Vec<(i32, u32)> {
    let mut found: Vec<(i32, u32)> = procfs::children(main_pid)
        .into_iter()
        .filter(|&pid| procfs::alive(pid))
        .filter_map(|pid| Some((pid, procfs::env_var(pid, ENV_GENERATION)?.parse().ok()?)))
        .collect();
    found.sort_unstable();
    found
}

fn wait_for_generation(main_pid: i32, generation: u32) -> bool {
    wait_until(SYSTEMCTL_DEADLINE, || {
        let now = workers(main_pid);
        now.len() == WORKERS && now.iter().all(|&(_, g)| g == generation)
    })
}

#[test]
fn systemd_user_manager_reload() {
    private_netns(true);
    let dir = TempDir::new("sd-user");
    let runtime_dir = dir.join("xdg");
    let config_dir = dir.join("config");
    let unit_dir = config_dir.join("systemd/user");
    std::fs::create_dir_all(&runtime_dir).expect("create XDG_RUNTIME_DIR");
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700))
        .expect("chmod XDG_RUNTIME_DIR 0700");
    std::fs::create_dir_all(unit_dir.join(format!("{UNIT}.d"))).expect("create the unit dirs");
    std::fs::create_dir_all(config_dir.join("reuseport-launch")).expect("create the env file dir");

    // The shipped unit, with the binary paths of this build.
    let unit = UNIT_TEMPLATE.replace(INSTALLED_LAUNCHER, LAUNCHER);
    assert!(unit.contains(LAUNCHER) && !unit.contains(INSTALLED_LAUNCHER));
    std::fs::write(unit_dir.join("reuseport-launch@.service"), unit).expect("install the unit");
    // Test-only drop-in: the launcher's log goes to a file (there is no journald here).
    let service_log = dir.join("service.log");
    std::fs::write(
        unit_dir.join(format!("{UNIT}.d/test-log.conf")),
        format!(
            "[Service]\nStandardOutput=append:{}\nStandardError=inherit\n",
            service_log.display()
        ),
    )
    .expect("install the drop-in");
    // The manager's default unit: nothing but itself (no D-Bus or gpg-agent sockets from the host's units).
    std::fs::write(
        unit_dir.join("rpl-test-idle.target"),
        "[Unit]\nDescription=reuseport-launch test: start nothing else\n",
    )
    .expect("install the idle target");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let script = dir.write_script("server.sh", &exec_server(port, ""));
    // %E/reuseport-launch/%i.env: %E is XDG_CONFIG_HOME for a user manager.
    std::fs::write(
        config_dir.join("reuseport-launch/demo.env"),
        format!(
            "# written by the test\nREUSEPORT_LAUNCH_ARGS={LAUNCH_ARGS} -- {}\n",
            script.display()
        ),
    )
    .expect("write the env file");

    let manager = UserManager::start(
        &dir,
        &runtime_dir,
        &config_dir,
        "rpl-test-idle.target",
        UNIT,
    );
    manager.systemctl(&["start", UNIT]);
    assert_eq!(
        manager.property("ActiveState"),
        "active",
        "{}",
        manager.diagnostics()
    );
    let main_pid: i32 = manager
        .property("MainPID")
        .parse()
        .expect("MainPID is a number");
    assert!(main_pid > 0, "no MainPID: {}", manager.diagnostics());
    assert_eq!(
        std::fs::read_link(format!("/proc/{main_pid}/exe")).ok(),
        Some(PathBuf::from(LAUNCHER)),
        "MainPID {main_pid} should be the launcher"
    );
    assert!(
        wait_for_generation(main_pid, 1),
        "generation 1 should have {WORKERS} workers: {:?}\n{}",
        workers(main_pid),
        manager.diagnostics()
    );
    let socket = runtime_dir.join("reuseport-launch/demo.sock");
    assert!(
        socket.exists(),
        "the control socket should be in $RUNTIME_DIRECTORY: {}",
        socket.display()
    );
    let status = manager.property("StatusText");
    assert!(status.starts_with("gen 1:"), "StatusText {status:?}");

    let mut seen: BTreeMap<i32, Identity> = BTreeMap::new();
    let mut remember = |pids: &[i32]| {
        for identity in procfs::snapshot(pids) {
            seen.entry(identity.pid).or_insert(identity);
        }
    };
    remember(&[main_pid]);
    remember(&workers(main_pid).iter().map(|w| w.0).collect::<Vec<_>>());

    let load = MixedLoad::start(&dir, &addr);

    for generation in 2..=RELOADS + 1 {
        let old = procfs::snapshot(
            &workers(main_pid)
                .iter()
                .filter(|w| w.1 == generation - 1)
                .map(|w| w.0)
                .collect::<Vec<_>>(),
        );
        let started = Instant::now();
        manager.systemctl(&["reload", UNIT]);
        eprintln!(
            "systemctl --user reload #{}: {} ms",
            generation - 1,
            started.elapsed().as_millis()
        );
        assert!(
            wait_for_generation(main_pid, generation),
            "after reload #{} the workers are {:?}, not {WORKERS} of generation {generation}\n{}",
            generation - 1,
            workers(main_pid),
            manager.diagnostics()
        );
        remember(&workers(main_pid).iter().map(|w| w.0).collect::<Vec<_>>());
        let left = procfs::wait_gone(&old, OLD_GONE_DEADLINE);
        assert!(
            left.is_empty(),
            "generation {} pids {left:?} still run",
            generation - 1
        );
        assert_eq!(
            manager.property("MainPID"),
            main_pid.to_string(),
            "a reload must not replace the launcher"
        );
        let status = manager.property("StatusText");
        assert!(
            status.starts_with(&format!("gen {generation}:")) && status.contains("last reload ok"),
            "StatusText after reload #{} should name generation {generation}: {status:?}",
            generation - 1
        );
        assert_eq!(manager.property("ActiveState"), "active");
    }

    // A broken deploy: the new workers exit before they are ready. `systemctl reload` fails, the unit stays
    // active, and the same generation keeps serving.
    let serving = RELOADS + 1;
    let before = workers(main_pid);
    dir.write_script("server.sh", &exec_server(port, "--exit-before-ready 3"));
    let failed = manager.systemctl_with(&["reload", UNIT], SYSTEMCTL_DEADLINE);
    eprintln!(
        "systemctl --user reload of the broken deploy: {}",
        failed.show()
    );
    assert_ne!(
        failed.code(),
        0,
        "systemctl reload of a broken deploy should fail: {}\n{}",
        failed.show(),
        manager.diagnostics()
    );
    let active = manager.systemctl_with(&["is-active", UNIT], QUERY_DEADLINE);
    assert_eq!(
        active.stdout.trim(),
        "active",
        "{}\n{}",
        active.show(),
        manager.diagnostics()
    );
    assert!(
        wait_for_generation(main_pid, serving),
        "{:?}",
        workers(main_pid)
    );
    assert_eq!(
        workers(main_pid),
        before,
        "generation {serving} should be the same processes"
    );
    assert_eq!(manager.property("MainPID"), main_pid.to_string());
    let status = manager.property("StatusText");
    assert!(
        status.starts_with(&format!("gen {serving}:")) && status.contains("failed"),
        "StatusText after the broken deploy should say generation {serving} serves and the reload failed: \
         {status:?}"
    );
    for _ in 0..4 {
        assert_eq!(
            http_get(&addr).0,
            serving,
            "the old generation should answer"
        );
    }

    let report = load.stop();
    let (keepalive, close) = (&report.keepalive, &report.close);
    eprintln!(
        "keep-alive: {} requests, {} failures, {} retries; close: {} requests, {} failures, {} retries",
        keepalive.requests, keepalive.failures, keepalive.retries, close.requests, close.failures, close.retries
    );
    report.assert_no_failures();
    for generation in 1..=serving {
        let served = report.served_by(generation);
        assert!(served > 0, "no response from generation {generation}");
    }

    // Stop: the launcher drains its workers and exits; nothing the service started is left.
    manager.systemctl(&["stop", UNIT]);
    let all: Vec<Identity> = seen.values().copied().collect();
    let left = procfs::wait_gone(&all, Duration::from_secs(2));
    assert!(
        left.is_empty(),
        "after systemctl stop, pids {left:?} still run"
    );
    let stray: Vec<i32> = procfs::processes_with_env(ENV_MARKER, &dir.path().display().to_string())
        .into_iter()
        .filter(|&p| p != manager.pid())
        .collect();
    assert!(
        stray.is_empty(),
        "processes of the service still run after stop: {stray:?}"
    );
    assert_eq!(
        manager.property("ActiveState"),
        "inactive",
        "{}",
        manager.diagnostics()
    );
    assert!(
        !socket.exists(),
        "the launcher should remove its control socket on stop"
    );
    let log = std::fs::read_to_string(&service_log).unwrap_or_default();
    assert!(
        log.contains("stopped"),
        "the launcher's log should end with `stopped`:\n{log}"
    );
}
