//! `Launcher`: the launcher binary running for one test, with its output in a log file in the test's temp
//! dir. On drop it is stopped (SIGTERM, then SIGKILL after STOP_DEADLINE) and every process it started is
//! SIGKILLed: they all carry the test's marker in their environment, so none can outlive the test.
//! `reload_and_wait` is the one way tests wait for a reload: the new generation exactly, every old pid gone.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::procfs;
use super::{wait_for_exit, wait_until, TempDir, LAUNCHER};

/// Environment variable set on the launcher (and so inherited by every worker and its descendants) to
/// find whatever this test started, without confusing it with a recycled pid.
pub const ENV_MARKER: &str = "RPL_TEST_MARKER";
const ENV_GENERATION: &str = "REUSEPORT_LAUNCH_GENERATION";
/// How long the drop guard waits after SIGTERM before SIGKILL: the tests' stop timeouts are shorter.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long after the old pids are gone the launcher may take to log `reload to generation G done`
/// (it reaps them first; on a loaded 2-core machine its loop can lag).
const LOG_LINE_DEADLINE: Duration = Duration::from_secs(5);

pub struct Launcher {
    child: Child,
    exited: Option<ExitStatus>,
    log_path: PathBuf,
    marker: String,
    /// Every worker pid seen through `workers()`, with its start time (so a recycled pid is never killed).
    seen: Mutex<BTreeMap<i32, u64>>,
}

impl Launcher {
    /// Starts `reuseport-launch ARGS...` with its own XDG_RUNTIME_DIR (so parallel tests never share a
    /// control socket) and stdout+stderr (its own and its workers') in `<dir>/launcher.log`.
    pub fn spawn<S: AsRef<OsStr>>(dir: &TempDir, args: &[S]) -> Launcher {
        Self::spawn_with(dir, args, |_| {})
    }

    /// Like `spawn`, with `tweak` applied to the command (extra environment, say).
    pub fn spawn_with<S: AsRef<OsStr>>(
        dir: &TempDir,
        args: &[S],
        tweak: impl FnOnce(&mut Command),
    ) -> Launcher {
        let mut command = Command::new(LAUNCHER);
        command.args(args);
        Self::spawn_command(dir, command, tweak)
    }

    /// Like `spawn`, with the launcher run by `wrapper` (e.g. `unshare --pid --fork --`): the guard's
    /// pid is then the wrapper's, and `workers()` looks at the wrapper's children.
    pub fn spawn_under<S: AsRef<OsStr>>(dir: &TempDir, wrapper: &[&str], args: &[S]) -> Launcher {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(LAUNCHER).args(args);
        Self::spawn_command(dir, command, |_| {})
    }

    fn spawn_command(
        dir: &TempDir,
        mut command: Command,
        tweak: impl FnOnce(&mut Command),
    ) -> Launcher {
        let runtime = dir.join("run");
        std::fs::create_dir_all(&runtime).expect("create the test's XDG_RUNTIME_DIR");
        let log_path = dir.join("launcher.log");
        let log = File::create(&log_path).expect("create launcher.log");
        let marker = dir.path().display().to_string();
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env(ENV_MARKER, &marker)
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup launcher.log"))
            .stderr(log);
        tweak(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("unable to start {:?}: {e}", command.get_program()));
        Launcher {
            child,
            exited: None,
            log_path,
            marker,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Like `spawn`, then waits until generation 1 serves; panics with the log's tail after `deadline`.
    pub fn spawn_serving<S: AsRef<OsStr>>(
        dir: &TempDir,
        args: &[S],
        deadline: Duration,
    ) -> Launcher {
        let launcher = Self::spawn(dir, args);
        assert!(
            launcher.wait_for_log("generation 1 serving", deadline),
            "generation 1 did not become ready within {deadline:?}: {}",
            launcher.log_tail(20)
        );
        launcher
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The launcher's live children with their generation (REUSEPORT_LAUNCH_GENERATION), sorted by pid.
    pub fn workers(&self) -> Vec<(i32, u32)> {
        let mut workers = Vec::new();
        for pid in procfs::children(self.pid()) {
            if !procfs::alive(pid) {
                continue;
            }
            let Some(generation) = procfs::env_var(pid, ENV_GENERATION) else {
                continue;
            };
            if let Some(started) = procfs::start_time(pid) {
                self.seen.lock().unwrap().insert(pid, started);
            }
            workers.push((pid, generation.parse().unwrap_or(0)));
        }
        workers.sort_unstable();
        workers
    }

    /// Pids of the live workers of `generation`.
    pub fn workers_of(&self, generation: u32) -> Vec<i32> {
        self.workers()
            .into_iter()
            .filter(|&(_, g)| g == generation)
            .map(|(p, _)| p)
            .collect()
    }

    /// Waits until the launcher's children are exactly `count` workers, all of `generation`.
    pub fn wait_for_workers(&self, count: usize, generation: u32, deadline: Duration) -> bool {
        wait_until(deadline, || {
            let workers = self.workers();
            workers.len() == count && workers.iter().all(|&(_, g)| g == generation)
        })
    }

    /// Every live process started by this launcher (workers and their descendants), found by marker.
    pub fn descendants(&self) -> Vec<i32> {
        procfs::processes_with_env(ENV_MARKER, &self.marker)
            .into_iter()
            .filter(|&p| p != self.pid())
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> bool {
        self.wait_for_log_count(needle, 1, deadline)
    }

    /// Waits until at least `count` lines of the log contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, deadline: Duration) -> bool {
        wait_until(deadline, || {
            self.log_text().matches(needle).count() >= count
        })
    }

    /// Waits up to `deadline` for the launcher to exit and reaps it.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_for_exit(&mut self.child, deadline);
        }
        self.exited
    }

    /// True while the launcher runs (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        self.exited.is_none() && self.child.try_wait().ok().flatten().is_none()
    }

    pub fn signal(&self, signal: Signal) {
        if self.exited.is_none() {
            kill(Pid::from_raw(self.pid()), signal)
                .unwrap_or_else(|e| panic!("unable to send {signal} to the launcher: {e}"));
        }
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- launcher log ({}), last 80 lines ----\n{}\n---- end of launcher log ----",
                self.log_path.display(),
                self.log_tail(80)
            );
        }
        if self.running() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            if self.wait_exit(STOP_DEADLINE).is_none() {
                eprintln!(
                    "test cleanup: launcher pid {} still running {STOP_DEADLINE:?} after SIGTERM; sending SIGKILL",
                    self.pid()
                );
                let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        let _ = self.child.try_wait();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        for (pid, started) in seen {
            if procfs::alive(pid) && procfs::start_time(pid) == Some(started) {
                eprintln!("test cleanup: worker pid {pid} outlived its launcher; sending SIGKILL");
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for pid in procfs::processes_with_env(ENV_MARKER, &self.marker) {
            eprintln!(
                "test cleanup: pid {pid} started by the launcher is still running; sending SIGKILL"
            );
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Sends SIGHUP and waits until the launcher's workers are exactly `workers` of `generation`, every
/// process of generation `generation - 1` is gone and the log says the reload is done. `on_poll` runs at
/// every check (to sample state during the reload). Panics, naming what is missing, after `deadline`.
pub fn reload_and_wait(
    launcher: &Launcher,
    workers: usize,
    generation: u32,
    deadline: Duration,
    mut on_poll: impl FnMut(),
) {
    let old = procfs::snapshot(&launcher.workers_of(generation - 1));
    assert_eq!(
        old.len(),
        workers,
        "before reload {generation}, generation {} has {} workers, not {workers}: {:?}",
        generation - 1,
        old.len(),
        launcher.workers()
    );
    launcher.signal(Signal::SIGHUP);
    let done = wait_until(deadline, || {
        on_poll();
        let current = launcher.workers();
        current.len() == workers
            && current.iter().all(|&(_, g)| g == generation)
            && !old.iter().any(|&p| procfs::still_running(p))
    });
    assert!(
        done,
        "reload to generation {generation} did not finish within {deadline:?}: workers now {:?}, old still \
         running {:?}",
        launcher.workers(),
        old.iter()
            .filter(|&&p| procfs::still_running(p))
            .map(|p| p.pid)
            .collect::<Vec<_>>()
    );
    // The launcher reaps the old processes, then says so: the line follows their exit closely.
    let line = format!("reload to generation {generation} done");
    assert!(
        launcher.wait_for_log(&line, LOG_LINE_DEADLINE),
        "the old pids are gone but the log never says `{line}`"
    );
}
