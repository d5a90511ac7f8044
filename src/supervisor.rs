//! Only this module spawns, signals or reaps processes. A worker is PROGRAM run with its slot, generation
//! and the launcher's notify socket in its environment, in a process group of its own, and set to die
//! with the launcher (PR_SET_PDEATHSIG), so no worker outlives a launcher killed with SIGKILL.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cli::Config;
use crate::connections;

use crate::inject::{self, BindWatch};

pub const ENV_WORKER: &str = "REUSEPORT_LAUNCH_WORKER";
pub const ENV_GENERATION: &str = "REUSEPORT_LAUNCH_GENERATION";
pub const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The launcher's own service-manager variables: meant for the launcher, never for a worker (a worker's
/// READY=1 must not reach systemd, and socket-activation fds are not the worker's).
const LAUNCHER_ONLY_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "MAINPID",
];

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// exit(code)
    Exited(i32),
    /// Killed by a signal.
    Signaled(Signal),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "status {code}"),
            ExitReason::Signaled(signal) => {
                write!(f, "signal {} ({})", *signal as i32, signal.as_str())
            }
        }
    }
}

/// What the launcher's decisions need from the operating system.
pub trait Processes {
    /// Starts PROGRAM as worker `slot` of `generation`.
    fn spawn(&mut self, generation: u32, slot: usize) -> io::Result<Pid>;
    /// Sends `signal` to the worker's process group.
    fn signal(&mut self, worker: Pid, signal: Signal);
    /// Takes the worker's listening sockets out of the port's SO_REUSEPORT group; false when the
    /// launcher holds none of them.
    fn close_listeners(&mut self, worker: Pid) -> bool;
    /// Whether the worker still has open connections on the ports it listened on.
    fn has_connections(&mut self, worker: Pid) -> bool;
    /// Forgets the copies of the worker's sockets: it drains itself.
    fn release_listeners(&mut self, worker: Pid);
}

/// The real thing: spawns PROGRAM.
pub struct Supervisor {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    notify_socket: PathBuf,
    /// Inject SO_REUSEPORT into workers' binds (see inject.rs), optionally only for this port.
    inject: bool,
    inject_port: Option<u16>,
    /// The bind notifications of every live worker that has injection.
    watches: Vec<BindWatch>,
}

impl Supervisor {
    pub fn new(config: &Config, notify_socket: PathBuf) -> Supervisor {
        Supervisor {
            program: config.program.clone(),
            args: config.program_args.clone(),
            notify_socket,
            inject: config.inject,
            inject_port: config.port,
            watches: Vec::new(),
        }
    }

    /// The descriptors to poll for workers' bind notifications.
    pub fn watch_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.watches.iter().map(|w| w.as_fd()).collect()
    }

    /// Answers the workers' pending bind notifications.
    pub fn handle_binds(&mut self) {
        for watch in &mut self.watches {
            watch.handle_binds();
        }
    }

    /// Which of the `starting` workers now listen. The flag says whether some starting worker still
    /// has to be looked at again.
    pub fn probe_listening(&mut self, starting: &[Pid]) -> (Vec<Pid>, bool) {
        let mut listening = Vec::new();
        let mut again = false;
        for watch in &mut self.watches {
            if !starting.contains(&watch.worker()) {
                continue;
            } else if watch.is_listening() {
                listening.push(watch.worker());
            } else {
                again = true;
            }
        }
        (listening, again)
    }

    fn watch(&mut self, worker: Pid) -> Option<&mut BindWatch> {
        self.watches.iter_mut().find(|w| w.worker() == worker)
    }

    /// Every child that has exited since the last call, without blocking; their watches are closed.
    pub fn reap(&mut self) -> Vec<(Pid, ExitReason)> {
        let exited = reap_children();
        self.watches
            .retain(|w| !exited.iter().any(|(pid, _)| *pid == w.worker()));
        exited
    }
}

impl Processes for Supervisor {
    fn spawn(&mut self, generation: u32, slot: usize) -> io::Result<Pid> {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for name in LAUNCHER_ONLY_ENV {
            command.env_remove(name);
        }
        command
            .env(ENV_WORKER, slot.to_string())
            .env(ENV_GENERATION, generation.to_string())
            .env(ENV_NOTIFY_SOCKET, &self.notify_socket);
        let launcher = Pid::this();
        let channel = if self.inject {
            Some(inject::Channel::new()?)
        } else {
            None
        };
        let channel_fd = channel.as_ref().map(|c| c.worker_fd());
        let no_new_privs = !nix::unistd::geteuid().is_root();
        // SAFETY: runs between fork and exec in a single-threaded launcher; it only makes raw syscalls
        // (setpgid, prctl, getppid, and inject::install_in_child's) and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // Own process group: a terminal's Ctrl-C reaches the launcher only, which drains workers in
                // order; and the stop signal can reach the worker's own children too.
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The launcher may have died before PDEATHSIG was armed.
                if nix::unistd::getppid() != launcher {
                    return Err(io::Error::other("launcher exited"));
                }
                if let Some(fd) = channel_fd {
                    inject::install_in_child(fd, no_new_privs);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.program.display())))?;
        let pid = Pid::from_raw(child.id() as i32);
        if let Some(channel) = channel {
            match channel.receive() {
                Ok(listener) => self
                    .watches
                    .push(BindWatch::new(listener, pid, self.inject_port)),
                Err(why) => warn!("worker pid {pid}: SO_REUSEPORT injection unavailable: {why}"),
            }
        }
        Ok(pid)
    }

    fn signal(&mut self, worker: Pid, signal: Signal) {
        // The group id is the worker's pid (setpgid(0, 0) above). Fall back to the pid alone if the
        // worker left its group (ESRCH for the group while the process still runs).
        match killpg(worker, signal) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                if let Err(e) = nix::sys::signal::kill(worker, signal) {
                    debug!("signal {} to pid {worker}: {e}", signal.as_str());
                }
            }
            Err(e) => debug!("signal {} to process group {worker}: {e}", signal.as_str()),
        }
    }

    fn close_listeners(&mut self, worker: Pid) -> bool {
        self.watch(worker).is_some_and(|w| w.close_listeners())
    }

    fn has_connections(&mut self, worker: Pid) -> bool {
        self.watch(worker)
            .is_some_and(|w| connections::count_open(worker, w.drained_ports()) > 0)
    }

    fn release_listeners(&mut self, worker: Pid) {
        if let Some(watch) = self.watch(worker) {
            watch.release_sockets();
        }
    }
}

fn reap_children() -> Vec<(Pid, ExitReason)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => exited.push((pid, ExitReason::Exited(code))),
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                exited.push((pid, ExitReason::Signaled(signal)))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return exited,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::error!("waitpid failed: {e}; this is a bug in reuseport-launch");
                return exited;
            }
        }
    }
}
