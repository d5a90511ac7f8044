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
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::control::{run_bounded, CommandOutput};
use support::launcher::ENV_MARKER;
use support::procfs::{self, Identity};
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
/// systemd 252 refuses `systemd --user` unless this exists (sd_booted()).
const BOOTED_MARKER: &str = "/run/systemd/system";
/// A user manager is up and answering within this, even on a loaded 2-core machine.
const MANAGER_START_DEADLINE: Duration = Duration::from_secs(30);
/// The user manager stops its units (the launcher drains in well under --stop-timeout) and exits within this.
const MANAGER_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// `systemctl start/reload/stop` of the unit: a generation of example-servers is ready in well under a second;
/// --ready-timeout (5 s) bounds a failing reload, --stop-timeout (10 s) a stop.
const SYSTEMCTL_DEADLINE: Duration = Duration::from_secs(60);
/// Quick systemctl queries.
const QUERY_DEADLINE: Duration = Duration::from_secs(15);
/// Old workers drain idle keep-alive connections in --drain-idle-ms (200 ms); this leaves slack.
const OLD_GONE_DEADLINE: Duration = Duration::from_secs(10);
const ENV_GENERATION: &str = "REUSEPORT_LAUNCH_GENERATION";

/// A cgroup of our own, at the same path in every cgroup hierarchy this process is in, below the test's own
/// cgroup; the user manager starts in it. Removed on drop (after killing anything still in it).
struct PrivateCgroup {
    /// `<mount>/<path>` of the leaf in every hierarchy.
    leaves: Vec<PathBuf>,
    /// Directories this guard created, outermost first.
    created: Vec<PathBuf>,
    /// `cgroup.procs` of every leaf, ready for the child to write to between fork and exec.
    procs_files: Vec<CString>,
}

impl PrivateCgroup {
    fn create(tag: &str) -> PrivateCgroup {
        let membership =
            std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        // The deepest of our paths (e.g. a per-job memory cgroup), so the manager stays inside all of them.
        let base = membership
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .max_by_key(|p| p.len())
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned();
        let leaf = Path::new(&base).join(tag);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        let mut guard = PrivateCgroup {
            leaves: Vec::new(),
            created: Vec::new(),
            procs_files: Vec::new(),
        };
        for line in mountinfo.lines() {
            let Some((mount, rest)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = mount.split_whitespace().nth(4).unwrap_or_default();
            let mut fields = rest.split_whitespace();
            let fstype = fields.next().unwrap_or_default();
            let options = fields.nth(1).unwrap_or_default();
            // cpuset (v1) refuses tasks until cpus/mems are configured, and systemd does not use it there.
            if !(fstype == "cgroup2" || fstype == "cgroup")
                || options.split(',').any(|o| o == "cpuset")
            {
                continue;
            }
            let mut path = PathBuf::from(mount_point);
            for component in leaf.components() {
                path.push(component);
                if !path.exists() {
                    std::fs::create_dir(&path).unwrap_or_else(|e| {
                        panic!("unable to create the cgroup {}: {e}", path.display())
                    });
                    guard.created.push(path.clone());
                }
            }
            guard.procs_files.push(
                CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
                    .expect("cgroup path without NUL"),
            );
            guard.leaves.push(path);
        }
        assert!(
            !guard.leaves.is_empty(),
            "no cgroup hierarchy is mounted; systemd --user needs one"
        );
        guard
    }

    /// Every process in the leaf or below it, in any hierarchy.
    fn processes(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for leaf in &self.leaves {
            let mut stack = vec![leaf.clone()];
            while let Some(dir) = stack.pop() {
                if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    stack.extend(
                        entries
                            .filter_map(|e| e.ok())
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Moves the calling process into the leaf of every hierarchy. Called between fork and exec.
    fn enter_from_child(files: &[CString]) -> std::io::Result<()> {
        for file in files {
            // SAFETY: open/write/close are async-signal-safe system calls; the path was allocated before fork
            // and nothing here allocates, so this is sound in the child of a multi-threaded process.
            unsafe {
                let fd = nix::libc::open(file.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" means the writing process.
                let written = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = std::io::Error::last_os_error();
                nix::libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

impl Drop for PrivateCgroup {
    fn drop(&mut self) {
        let left = self.processes();
        for &pid in &left {
            eprintln!(
                "test cleanup: pid {pid} still in the user manager's cgroup; sending SIGKILL"
            );
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !left.is_empty() {
            wait_until(Duration::from_secs(5), || self.processes().is_empty());
        }
        // Everything the manager created below the leaves, deepest first, then what this guard created.
        for leaf in &self.leaves {
            let mut dirs = Vec::new();
            let mut stack = vec![leaf.clone()];
            while let Some(dir) = stack.pop() {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.filter_map(|e| e.ok()) {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            stack.push(entry.path());
                            dirs.push(entry.path());
                        }
                    }
                }
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                if let Err(e) = std::fs::remove_dir(&dir) {
                    eprintln!(
                        "test cleanup: unable to remove the cgroup {}: {e}",
                        dir.display()
                    );
                }
            }
        }
        for dir in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!(
                    "test cleanup: unable to remove the cgroup {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

/// A private `systemd --user`, stopped by pid on drop (SIGTERM, SIGKILL after MANAGER_STOP_DEADLINE), its
/// cgroup removed, and /run/systemd/system removed again if this test created it.
struct UserManager {
    child: Child,
    runtime_dir: PathBuf,
    log_path: PathBuf,
    created_booted_marker: bool,
    // Dropped after the manager is gone (fields drop in declaration order, after Drop::drop).
    _cgroup: PrivateCgroup,
}

impl UserManager {
    fn start(
        dir: &TempDir,
        runtime_dir: &Path,
        config_dir: &Path,
        default_unit: &str,
    ) -> UserManager {
        let created_booted_marker = !Path::new(BOOTED_MARKER).exists();
        if created_booted_marker {
            std::fs::create_dir_all(BOOTED_MARKER)
                .unwrap_or_else(|e| panic!("unable to create {BOOTED_MARKER}: {e} (needs root)"));
        }
        let cgroup = PrivateCgroup::create(&format!("rpl-user-manager-{}", std::process::id()));
        let membership_before =
            std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let log_path = dir.join("manager.log");
        let log = std::fs::File::create(&log_path).expect("create manager.log");
        let mut command = Command::new("systemd");
        command
            .args(["--user", "--log-target=console", "--log-level=info"])
            .arg(format!("--unit={default_unit}"))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", runtime_dir)
            .env("XDG_CONFIG_HOME", config_dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            // Inherited by every service, so any process the test started can be found by it.
            .env(ENV_MARKER, dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup manager.log"))
            .stderr(log);
        let procs_files = cgroup.procs_files.clone();
        // SAFETY: the closure only calls PrivateCgroup::enter_from_child, which makes async-signal-safe system
        // calls on memory allocated before fork (procs_files is moved in, not allocated here).
        unsafe {
            command.pre_exec(move || PrivateCgroup::enter_from_child(&procs_files));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("unable to start `systemd --user`: {e}"));
        let manager = UserManager {
            child,
            runtime_dir: runtime_dir.to_owned(),
            log_path,
            created_booted_marker,
            _cgroup: cgroup,
        };
        let mut state = String::new();
        let up = wait_until(MANAGER_START_DEADLINE, || {
            let output = manager.systemctl_with(&["is-system-running"], QUERY_DEADLINE);
            state = output.stdout.trim().to_owned();
            state == "running" || state == "degraded"
        });
        assert!(
            up,
            "systemd --user (pid {}) did not come up within {MANAGER_START_DEADLINE:?} (last state {state:?}); \
             its log:\n{}",
            manager.pid(),
            manager.log()
        );
        // The manager moved into init.scope below its own cgroup, and took nobody else along.
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup"),
            membership_before,
            "starting systemd --user moved the test process to another cgroup"
        );
        let manager_cgroups =
            std::fs::read_to_string(format!("/proc/{}/cgroup", manager.pid())).unwrap_or_default();
        let tag = format!("rpl-user-manager-{}", std::process::id());
        assert!(
            manager_cgroups
                .lines()
                .filter(|l| !l.contains("cpuset"))
                .all(|l| l.ends_with(&tag) || l.contains(&format!("{tag}/"))),
            "systemd --user should run in its own cgroup ({tag}), not in {manager_cgroups}"
        );
        manager
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn systemctl_with(&self, args: &[&str], deadline: Duration) -> CommandOutput {
        let mut command = Command::new("systemctl");
        command
            .args(["--user", "--no-pager", "--no-ask-password"])
            .args(args)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("SYSTEMD_PAGER");
        run_bounded(&mut command, deadline)
    }

    /// `systemctl --user ARGS` that must succeed.
    fn systemctl(&self, args: &[&str]) -> CommandOutput {
        let output = self.systemctl_with(args, SYSTEMCTL_DEADLINE);
        assert_eq!(
            output.code(),
            0,
            "systemctl --user {} failed: {}\n{}",
            args.join(" "),
            output.show(),
            self.diagnostics()
        );
        output
    }

    /// `systemctl --user show -p PROPERTY --value UNIT`.
    fn property(&self, property: &str) -> String {
        self.systemctl_with(&["show", "-p", property, "--value", UNIT], QUERY_DEADLINE)
            .stdout
            .trim()
            .to_owned()
    }

    /// The unit's status and the end of the manager's log, for failure messages.
    fn diagnostics(&self) -> String {
        let status = self.systemctl_with(&["status", UNIT], QUERY_DEADLINE);
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "---- systemctl --user status {UNIT} ----\n{}{}\n---- manager log (last 40 lines) ----\n{}",
            status.stdout,
            status.stderr,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            let child = &mut self.child;
            let exited = wait_until(MANAGER_STOP_DEADLINE, || {
                child.try_wait().ok().flatten().is_some()
            });
            if !exited {
                eprintln!(
                    "test cleanup: systemd --user pid {} still running {MANAGER_STOP_DEADLINE:?} after SIGTERM; \
                     sending SIGKILL",
                    self.pid()
                );
                let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        if self.created_booted_marker {
            if let Err(e) = std::fs::remove_dir(BOOTED_MARKER) {
                eprintln!("test cleanup: unable to remove {BOOTED_MARKER}: {e}");
            }
        }
    }
}

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

    let manager = UserManager::start(&dir, &runtime_dir, &config_dir, "rpl-test-idle.target");
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
