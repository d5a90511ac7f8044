//! Short-lived commands a test runs to completion with a deadline: the launcher's control client
//! (`reuseport-launch status|reload|scale|stop`, pointed at the test's own XDG_RUNTIME_DIR) and tools such as
//! systemctl. A command still running at its deadline is SIGKILLed by pid and the test fails naming it.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{wait_until, TempDir, LAUNCHER};

/// Quick control requests (status, scale, reload without --wait) are answered within one turn of the
/// launcher's loop; this leaves room for a loaded 2-core machine.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(15);

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CommandOutput {
    /// The exit code; -1 when a signal ended the command.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// For assertion messages.
    pub fn show(&self) -> String {
        format!(
            "{} after {} ms; stdout: {:?}; stderr: {:?}",
            self.status,
            self.took.as_millis(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` (stdin closed, stdout and stderr captured) until it exits; panics after killing it if it
/// is still running at `deadline`.
pub fn run_bounded(command: &mut Command, deadline: Duration) -> CommandOutput {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("unable to run {command:?}: {e}"));
    // Read both pipes on threads so a chatty command never blocks on a full pipe.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut status = None;
    wait_until(deadline, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        panic!("{command:?} still running after {deadline:?}; killed it");
    };
    // A grandchild holding the pipes open (a daemon the command started) must not hang the test.
    let collect = |handle: std::thread::JoinHandle<String>| {
        let end = Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            handle.join().unwrap_or_default()
        } else {
            "<output still open after the command exited>".to_owned()
        }
    };
    CommandOutput {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
        took: started.elapsed(),
    }
}

/// The control client pointed at the launcher of this test: same XDG_RUNTIME_DIR as `Launcher::spawn` gives
/// the launcher, no RUNTIME_DIRECTORY.
pub fn client_command(dir: &TempDir, args: &[&str]) -> Command {
    let mut command = Command::new(LAUNCHER);
    command
        .args(args)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("NOTIFY_SOCKET");
    command
}

/// Runs `reuseport-launch ARGS` as a control client of this test's launcher, bounded by `deadline`.
pub fn client(dir: &TempDir, args: &[&str], deadline: Duration) -> CommandOutput {
    run_bounded(&mut client_command(dir, args), deadline)
}
