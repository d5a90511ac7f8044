//! Helpers shared by every integration test: a private network namespace per test, a temp dir per test,
//! guards that stop the launcher and every process a test starts, a loadgen runner, an HTTP probe and
//! `wait_until` (tests poll conditions with deadlines; they never sleep to synchronise).
//! Invariant: nothing a test starts outlives it, and nothing here touches the host's network or sysctls.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod control;
pub mod http;
pub mod json;
pub mod launcher;
pub mod loadgen;
pub mod netns;
pub mod procfs;
pub mod scenarios;
pub mod static_server;
pub mod udp;
pub mod unchanged;
pub mod user_manager;
pub mod warming_server;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use http::{http_get, try_http_get};
pub use launcher::Launcher;
pub use loadgen::{Loadgen, LoadgenReport, MixedLoad, MixedReport, Mode};
pub use netns::private_netns;

/// The launcher under test.
pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_reuseport-launch");
/// The bundled fixture server (examples/example-server.rs), built on first use.
pub fn example_server() -> &'static str {
    fixture("example-server")
}

/// The bundled load client (examples/loadgen.rs), built on first use.
pub fn loadgen() -> &'static str {
    fixture("loadgen")
}

/// The legacy UDP echo server of scripts/bench-udp (examples/udp-echo-server.rs), built on first use.
pub fn udp_echo_server() -> &'static str {
    fixture("udp-echo-server")
}

/// The closed-loop UDP load generator of scripts/bench-udp (examples/udpgen.rs), built on first use.
pub fn udpgen() -> &'static str {
    fixture("udpgen")
}

/// The fixtures are cargo examples, so that `cargo install` installs only the launcher. `cargo test`
/// builds examples, `cargo test --test NAME` does not: the first call runs `cargo build --examples` with
/// this test binary's profile and target directory (a no-op when they are up to date), once per process.
fn fixture(name: &str) -> &'static str {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let examples = BUILT.get_or_init(|| {
        // This test binary is <target>/<profile dir>/deps/<name>-<hash>.
        let exe = std::env::current_exe().expect("the test binary's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps");
        let target_dir = profile_dir
            .parent()
            .expect("a target directory above the profile");
        let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
            Some("debug") => "dev",
            Some(other) => other,
            None => "release",
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--examples",
                "--profile",
                profile,
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --examples for the test fixtures");
        assert!(status.success(), "cargo build --examples failed ({status})");
        profile_dir.join("examples")
    });
    let path = examples.join(name);
    assert!(path.is_file(), "fixture {} was not built", path.display());
    Box::leak(path.to_string_lossy().into_owned().into_boxed_str())
}

/// How often `wait_until` re-checks its condition: fast enough to see a 100 ms backoff step, cheap on 2 cores.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` every POLL_INTERVAL until it holds (true) or `deadline` has passed (false).
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits up to `deadline` for `child` to exit and reaps it; None if it still runs.
pub fn wait_for_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(deadline, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// A port nobody listens on yet (in a private netns any port would do; this keeps tests honest anyway).
pub fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Characters of the test name in its temp dir's name: the launcher's notify socket lives below it, and a
/// Unix socket path must fit in 108 bytes.
const TEST_TAG_CHARS: usize = 12;

/// A directory of its own for one test, under std::env::temp_dir(); removed on drop unless the test failed
/// (then its path is printed so the logs can be read).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(test_name: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "rpl-{}-{}-{}-{}",
            test_name.chars().take(TEST_TAG_CHARS).collect::<String>(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos % 1_000_000
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("unable to create {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("unable to chmod {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Writes an executable shell script atomically (write a sibling, then rename over), the way a deploy
    /// replaces a binary: a worker starting at that moment sees the old or the new script, never half of one.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.join(name);
        let staging = self.join(format!(".{name}.new"));
        std::fs::write(&staging, format!("#!/bin/sh\n{body}\n"))
            .unwrap_or_else(|e| panic!("unable to write {}: {e}", staging.display()));
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("unable to chmod {}: {e}", staging.display()));
        std::fs::rename(&staging, &path).unwrap_or_else(|e| {
            panic!(
                "unable to rename {} to {}: {e}",
                staging.display(),
                path.display()
            )
        });
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; its files are kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A shell script body that runs example-server with `args` in place of the shell (exec), so the worker's
/// pid is the server's pid.
pub fn exec_server(port: u16, args: &str) -> String {
    format!("exec {} --port {port} {args}", example_server())
}

/// Any other process a test starts: SIGKILLed by pid (and reaped) on drop unless it already exited.
pub struct ChildGuard {
    child: Child,
    program: String,
    exited: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("unable to spawn {:?}: {e}", command.get_program()));
        let program = Path::new(command.get_program())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        ChildGuard {
            child,
            program,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        if self.exited.is_none() {
            let _ = kill(Pid::from_raw(self.pid()), signal);
        }
    }

    /// Waits up to `deadline` for the process to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_for_exit(&mut self.child, deadline);
        }
        self.exited
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
            let _ = self.child.wait();
            eprintln!(
                "test cleanup: {} (pid {}) still ran; killed it with SIGKILL",
                self.program,
                self.pid()
            );
        }
    }
}

/// Runs the launcher binary to completion (for start failures), with a private XDG_RUNTIME_DIR, and
/// returns (exit status, stdout+stderr) after at most `deadline` (panics past it, after killing it).
pub fn run_launcher_to_exit(
    dir: &TempDir,
    args: &[&OsStr],
    deadline: Duration,
) -> (ExitStatus, String) {
    let mut launcher = Launcher::spawn(dir, args);
    let status = launcher
        .wait_exit(deadline)
        .unwrap_or_else(|| panic!("launcher {args:?} still running after {deadline:?}"));
    (status, launcher.log_text())
}
