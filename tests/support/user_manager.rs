//! A private `systemd --user` manager for tests that run a unit under real systemd (systemd 252 here, not
//! PID 1): its own XDG_RUNTIME_DIR / XDG_CONFIG_HOME in the test's temp dir, and a cgroup of its own below
//! the test's: a user manager moves every process of the cgroup it starts in into its init.scope, so
//! starting it in the test's own cgroup would move the test runner (and everything beside it) too.
//! Everything is undone on drop, also when the test fails.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::control::{run_bounded, CommandOutput};
use super::launcher::ENV_MARKER;
use super::{wait_until, TempDir};

/// systemd 252 refuses `systemd --user` unless this exists (sd_booted()).
const BOOTED_MARKER: &str = "/run/systemd/system";
/// A user manager is up and answering within this, even on a loaded 2-core machine.
const MANAGER_START_DEADLINE: Duration = Duration::from_secs(30);
/// The user manager stops its units (the launcher drains in well under --stop-timeout) and exits within this.
const MANAGER_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Quick systemctl queries.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(15);
/// `systemctl start/reload/stop` of the unit: a generation of example-servers is ready in well under a second;
/// --ready-timeout (5 s) bounds a failing reload, --stop-timeout (10 s) a stop.
pub const SYSTEMCTL_DEADLINE: Duration = Duration::from_secs(60);

/// A cgroup of our own, at the same path in every cgroup hierarchy this process is in, below the test's own
/// cgroup; the user manager starts in it. Removed on drop (after killing anything still in it).
pub struct PrivateCgroup {
    /// `<mount>/<path>` of the leaf in every hierarchy.
    leaves: Vec<PathBuf>,
    /// Directories this guard created, outermost first.
    created: Vec<PathBuf>,
    /// `cgroup.procs` of every leaf, ready for the child to write to between fork and exec.
    procs_files: Vec<CString>,
}

impl PrivateCgroup {
    pub fn create(tag: &str) -> PrivateCgroup {
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
    pub fn processes(&self) -> Vec<i32> {
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
pub struct UserManager {
    unit: String,
    child: Child,
    runtime_dir: PathBuf,
    log_path: PathBuf,
    created_booted_marker: bool,
    // Dropped after the manager is gone (fields drop in declaration order, after Drop::drop).
    _cgroup: PrivateCgroup,
}

impl UserManager {
    pub fn start(
        dir: &TempDir,
        runtime_dir: &Path,
        config_dir: &Path,
        default_unit: &str,
        unit: &str,
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
            unit: unit.to_owned(),
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

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn systemctl_with(&self, args: &[&str], deadline: Duration) -> CommandOutput {
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
    pub fn systemctl(&self, args: &[&str]) -> CommandOutput {
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
    pub fn property(&self, property: &str) -> String {
        self.systemctl_with(
            &["show", "-p", property, "--value", &self.unit],
            QUERY_DEADLINE,
        )
        .stdout
        .trim()
        .to_owned()
    }

    /// The unit's status and the end of the manager's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let status = self.systemctl_with(&["status", &self.unit], QUERY_DEADLINE);
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "---- systemctl --user status {} ----\n{}{}\n---- manager log (last 40 lines) ----\n{}",
            self.unit,
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
