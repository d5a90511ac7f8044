//! Only this module spawns, signals or reaps processes. A worker is PROGRAM run with its slot, generation
//! and the launcher's notify socket in its environment, in a process group of its own, and set to die
//! with the launcher (PR_SET_PDEATHSIG), so no worker outlives a launcher killed with SIGKILL. With
//! `--listen` it also gets the launcher-bound sockets (listen.rs); with `--user`/`--group` it drops to
//! that user and group before exec.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use log::{debug, warn};
use nix::errno::Errno;
use nix::libc;
use nix::poll::PollFlags;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use socket2::SockRef;

use super::adopt;
use super::connections;
use super::inject::{self, BindWatch};
use super::listen::{self, Held, ListenAddress};
use super::node_ipc;
use super::notify_socket;
use super::orphans;
use super::probes::{HealthKind, Probes};
use super::steering::queue;
use super::steering::router::Router;
use super::worker_spec::{RunAs, WorkerSpec};
use crate::launcher::{Check, ExitReason, ProbeOutcome, Processes};

/// How long the launcher waits at exit for the processes it killed there to be gone: SIGKILL takes
/// effect within milliseconds unless a process is stuck in the kernel, and then waiting longer won't help.
const FINAL_REAP_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the exit path checks that they are gone.
const FINAL_REAP_POLL: std::time::Duration = std::time::Duration::from_millis(5);
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

/// `--health ipc`: the message a cluster master sends a worker, answered `healthy`.
const HEALTHCHECK_MESSAGE: &str = "healthcheck";

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
    /// `--listen` addresses, bound anew for every worker.
    listen: Vec<ListenAddress>,
    /// LISTEN_FDNAMES for them.
    fd_names: String,
    /// /dev/null placeholders on the free fds below 3 + listen.len(); see listen::reserve_target_fds.
    _reserved_fds: Vec<OwnedFd>,
    /// The launcher's copies of every live worker's launcher-bound sockets.
    held: Vec<Held>,
    /// Whom workers run as.
    run_as: Option<RunAs>,
    /// Give workers a Node IPC channel (NODE_CHANNEL_FD), on fd 3 + listen.len().
    node_ipc: bool,
    /// Sent over the IPC channel instead of the stop signal.
    stop_message: Option<String>,
    /// The IPC channels of live workers.
    ipc: Vec<node_ipc::Channel>,
    /// Copies of the listeners and UDP sockets of workers whose binds the launcher did not see
    /// (`--no-inject`), taken when they are first steered to.
    adopted: Vec<(Pid, Vec<OwnedFd>)>,
    /// `--ready listen` for workers of that kind.
    settling: adopt::Settling,
    /// The copies of the sockets of workers reaped by the last `reap`, kept open until
    /// `release_exited`: closing the last copy of a listener has the kernel migrate its queue by the
    /// steering map, which must first have been updated for the exit (e.g. a roll-back).
    exited_copies: Vec<Vec<OwnedFd>>,
    /// With steering: the reuseport eBPF program of every group the workers listen in.
    router: Option<Router>,
    /// `--ready http`: the probes under way.
    probes: Probes,
}

impl Supervisor {
    pub fn new(config: WorkerSpec, notify_socket: PathBuf) -> Result<Supervisor, String> {
        // Before the first spawn: a worker's orphans (a server that forks into the background) must
        // become our children, so that they can be found, stopped and reaped.
        orphans::become_subreaper()?;
        let fixed_fds = config.listen.len() + usize::from(config.node_ipc);
        let reserved = if fixed_fds == 0 {
            Vec::new()
        } else {
            listen::reserve_target_fds(fixed_fds).map_err(|e| {
                format!(
                    "unable to reserve fds 3..{} for the workers' sockets: {e}",
                    3 + fixed_fds
                )
            })?
        };
        if let Some(run_as) = &config.run_as {
            notify_socket::share_with(&notify_socket, run_as)?;
        }
        Ok(Supervisor {
            program: config.program.clone(),
            args: config.args.clone(),
            notify_socket,
            inject: config.inject,
            inject_port: config.inject_port,
            watches: Vec::new(),
            fd_names: listen::fd_names(config.listen.len()),
            listen: config.listen.clone(),
            _reserved_fds: reserved,
            held: Vec::new(),
            run_as: config.run_as.clone(),
            node_ipc: config.node_ipc,
            stop_message: config.stop_message.clone(),
            ipc: Vec::new(),
            adopted: Vec::new(),
            settling: adopt::Settling::default(),
            exited_copies: Vec::new(),
            router: None,
            probes: Probes::default(),
        })
    }

    /// From now on the launcher chooses which listeners receive new connections (`Processes::steer`);
    /// with `flow_idle`, UDP flows stay with their socket while they are active (`--udp-flow-idle`).
    pub fn enable_steering(&mut self, flow_idle: Option<Duration>) {
        self.router = Some(Router::new(flow_idle));
    }

    /// From now on `Processes::probe` sends `GET path` (`--ready http:PATH`) and checks health
    /// (`--health`); HTTP probes need steering.
    pub fn enable_probes(&mut self, ready_path: Option<String>, health: Option<HealthKind>) {
        self.probes = Probes::new(ready_path, health);
    }

    /// The descriptors of the probes under way, with what to poll each for.
    pub fn probe_fds(&self) -> impl Iterator<Item = (BorrowedFd<'_>, PollFlags)> {
        self.probes.poll_fds()
    }

    /// The probes that ended, among those whose descriptor is in `readable` or whose time is up.
    pub fn advance_probes(&mut self, readable: &[RawFd]) -> Vec<(Pid, Check, ProbeOutcome)> {
        self.probes
            .advance(readable, self.router.as_mut(), Instant::now())
    }

    /// When the steered ports are next looked at for listeners that are not the workers', or a
    /// probe is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let strangers = self.router.as_ref().and_then(Router::next_deadline);
        strangers
            .into_iter()
            .chain(self.probes.next_deadline())
            .min()
    }

    /// Warns about listeners on the steered ports that are not workers (`is_worker`) or their children.
    pub fn look_for_strangers(&mut self, is_worker: impl Fn(Pid) -> bool) {
        let Some(router) = self.router.as_mut().filter(|r| r.strangers_due()) else {
            return;
        };
        let copies = listeners_where(&self.watches, &self.held, &self.adopted, |_| true);
        let known: HashSet<u64> = copies
            .into_iter()
            .filter_map(|fd| nix::sys::stat::fstat(fd.as_raw_fd()).ok())
            .map(|stat| stat.st_ino)
            .collect();
        router.look_for_strangers(&known, is_worker);
    }

    /// The launcher's copies of the worker's listening sockets, wherever they came from.
    fn listeners(&self, worker: Pid) -> Vec<BorrowedFd<'_>> {
        listeners_where(&self.watches, &self.held, &self.adopted, |pid| {
            pid == worker
        })
    }

    /// The descriptors to poll for workers' bind notifications.
    pub fn watch_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.watches.iter().map(|w| w.as_fd()).collect()
    }

    /// Answers the pending bind notifications of the workers whose seccomp descriptor is in `readable`.
    pub fn handle_binds(&mut self, readable: &[RawFd]) {
        self.watches
            .iter_mut()
            .filter(|watch| is_ready(*watch, readable))
            .for_each(BindWatch::handle_binds);
    }

    /// Which of the `starting` workers now listen. The flag says whether some starting worker still
    /// has to be looked at again.
    pub fn probe_listening(&mut self, starting: &[Pid]) -> (Vec<Pid>, bool) {
        let mut listening = Vec::new();
        let mut again = false;
        let now = Instant::now();
        for held in &self.held {
            if !starting.contains(&held.worker()) {
                continue;
            }
            match held.settled(now) {
                None => again = true,
                Some(true) => listening.push(held.worker()),
                // Exited: the next reap reports it.
                Some(false) => {}
            }
        }
        for watch in &mut self.watches {
            if !starting.contains(&watch.worker()) {
                continue;
            } else if watch.is_listening() {
                listening.push(watch.worker());
            } else {
                again = true;
            }
        }
        // Workers whose binds the launcher does not see (--no-inject): their sockets, from /proc.
        let seen = |pid: &Pid| {
            self.watches.iter().any(|w| w.worker() == *pid)
                || self.held.iter().any(|h| h.worker() == *pid)
        };
        let unseen: Vec<Pid> = starting.iter().copied().filter(|p| !seen(p)).collect();
        let (ready, look_again) = self.settling.ready(&unseen, self.inject_port, now);
        again |= look_again;
        listening.extend(ready);
        (listening, again)
    }

    /// The descriptors to poll for workers' Node IPC messages.
    pub fn ipc_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.ipc.iter().map(|c| c.as_fd()).collect()
    }

    /// Workers that sent `process.send('ready')` since the last call, among those whose IPC channel is
    /// in `readable`.
    /// (`healthy` replies go to the health checks waiting for them.)
    pub fn read_ipc(&mut self, readable: &[RawFd]) -> Vec<Pid> {
        let mut ready = Vec::new();
        for channel in self.ipc.iter_mut().filter(|c| is_ready(*c, readable)) {
            let (said_ready, said_healthy) = channel.read_messages();
            if said_ready {
                ready.push(channel.worker());
            }
            if said_healthy {
                self.probes.ipc_replied(channel.worker());
            }
        }
        ready
    }

    /// PROGRAM with the worker's environment: the launcher's own service-manager variables removed,
    /// slot, generation and notify socket added, plus the socket-activation and user variables.
    fn worker_command(&self, generation: u32, slot: usize) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for name in LAUNCHER_ONLY_ENV {
            command.env_remove(name);
        }
        command
            .env(ENV_WORKER, slot.to_string())
            .env(ENV_GENERATION, generation.to_string())
            .env(ENV_NOTIFY_SOCKET, &self.notify_socket);
        if !self.listen.is_empty() {
            command
                .env(listen::ENV_LISTEN_FDS, self.listen.len().to_string())
                .env(listen::ENV_LISTEN_PID, listen::LISTEN_PID_PLACEHOLDER)
                .env(listen::ENV_LISTEN_FDNAMES, &self.fd_names);
            if let [only] = self.listen[..] {
                command.env(listen::ENV_PORT, only.address.port().to_string());
            }
        }
        if let Some(user) = self.run_as.as_ref().and_then(|r| r.user.as_ref()) {
            command
                .env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("HOME", &user.dir);
        }
        if self.node_ipc {
            command
                .env(node_ipc::ENV_CHANNEL_FD, self.ipc_fd().to_string())
                .env(node_ipc::ENV_SERIALIZATION, "json");
        }
        command
    }

    /// The Node IPC channel's fd number in a worker: right after the --listen sockets.
    fn ipc_fd(&self) -> RawFd {
        listen::LISTEN_FDS_START + self.listen.len() as RawFd
    }

    fn watch(&mut self, worker: Pid) -> Option<&mut BindWatch> {
        self.watches.iter_mut().find(|w| w.worker() == worker)
    }

    fn held(&mut self, worker: Pid) -> Option<&mut Held> {
        self.held.iter_mut().find(|h| h.worker() == worker)
    }

    /// Every child that has exited since the last call, without blocking; their watches and the
    /// launcher's copies of their sockets are closed.
    /// On the way out: kills every process still below the launcher (all workers are gone by now, so
    /// this is what they left behind) and reaps them, waiting at most FINAL_REAP_LIMIT. No process the
    /// launcher started outlives it.
    pub fn kill_everything_left(&mut self) {
        let left = orphans::left_behind(&[], None);
        if left.is_empty() {
            return;
        }
        debug!(
            "at exit: killing {} process(es) left behind by workers (pid {})",
            left.len(),
            left.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.kill_left_behind(&left);
        let deadline = Instant::now() + FINAL_REAP_LIMIT;
        while !orphans::left_behind(&[], None).is_empty() && Instant::now() < deadline {
            reap_children();
            std::thread::sleep(FINAL_REAP_POLL);
        }
        reap_children();
    }

    /// The workers that exited since the last call. Their socket copies leave the steering view at
    /// once but stay open until `release_exited`, called once the launcher has acted on the exits.
    pub fn reap(&mut self) -> Vec<(Pid, ExitReason)> {
        let exited = reap_children();
        let gone = |worker: Pid| exited.iter().any(|(pid, _)| *pid == worker);
        let watches = self.watches.extract_if(.., |w| gone(w.worker()));
        let held = self.held.extract_if(.., |h| gone(h.worker()));
        let adopted = self.adopted.extract_if(.., |(pid, _)| gone(*pid));
        let copies: Vec<Vec<OwnedFd>> = watches
            .map(BindWatch::into_sockets)
            .chain(held.map(Held::into_sockets))
            .chain(adopted.map(|(_, copies)| copies))
            .collect();
        self.exited_copies.extend(copies);
        self.ipc.retain(|c| !gone(c.worker()));
        for (pid, _) in &exited {
            self.probes.forget(*pid, self.router.as_mut());
        }
        exited
    }

    /// Closes the socket copies of the workers the last `reap` returned: call it after the launcher
    /// handled their exits and steering follows it.
    pub fn release_exited(&mut self) {
        self.exited_copies.clear();
    }
}

impl Processes for Supervisor {
    fn spawn(&mut self, generation: u32, slot: usize) -> io::Result<Pid> {
        let sockets = listen::open_for_worker(&self.listen)?;
        let socket_fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
        let mut command = self.worker_command(generation, slot);
        let ids = self
            .run_as
            .as_ref()
            .map(|r| (r.uid.map(|u| u.as_raw()), r.gid.as_raw()));
        let mut prepared = if sockets.is_empty() {
            None
        } else {
            Some(listen::PreparedExec::from_command(&command)?)
        };
        let ipc = if self.node_ipc {
            Some((node_ipc::Pending::new()?, self.ipc_fd()))
        } else {
            None
        };
        let ipc_fds = ipc
            .as_ref()
            .map(|(pending, target)| (pending.worker_fd(), *target));
        let launcher = Pid::this();
        let channel = if self.inject {
            Some(inject::Channel::new()?)
        } else {
            None
        };
        let channel_fd = channel.as_ref().map(|c| c.worker_fd());
        let no_new_privs = !nix::unistd::geteuid().is_root();
        // SAFETY: runs between fork and exec in a single-threaded launcher; it only makes raw syscalls
        // (setpgid, seccomp/prctl, setgroups/setgid/setuid, getppid, dup2/fcntl, execve) and allocates
        // nothing: `socket_fds` and `prepared` (argv and envp for the --listen exec) were built before fork.
        // With --listen the closure execs PROGRAM itself (PreparedExec::exec_in_child), after writing the
        // worker's pid into the LISTEN_PID placeholder of its own copy of envp — the pid is only known
        // after fork, and std's Command does not let a closure change the environment it execs with
        // (it installs its envp after the closures run). std's exec-error pipe stays open (close-on-exec)
        // until then, so a failed execve is still reported by spawn().
        unsafe {
            command.pre_exec(move || {
                // Own process group: a terminal's Ctrl-C reaches the launcher only, which drains workers in
                // order; and the stop signal can reach the worker's own children too.
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                // Before the ids change: a root launcher installs the filter without no_new_privs, so
                // file capabilities of PROGRAM keep working.
                if let Some(fd) = channel_fd {
                    inject::install_in_child(fd, no_new_privs);
                }
                // setgroups first (it needs privilege), then setgid, then setuid (after which nothing
                // can be changed back).
                if let Some((uid, gid)) = ids {
                    if libc::setgroups(1, &gid) < 0 || libc::setgid(gid) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if let Some(uid) = uid {
                        if libc::setuid(uid) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                }
                // After the ids change: the kernel clears PDEATHSIG when credentials change.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The launcher may have died before PDEATHSIG was armed.
                if nix::unistd::getppid() != launcher {
                    return Err(io::Error::other("launcher exited"));
                }
                // The listen sockets first (their sources sit at or above 3 + n), then the IPC channel on
                // 3 + n (fds below it are reserved, so its source is not among the listen targets).
                if prepared.is_some() {
                    listen::install_in_child(&socket_fds)?;
                }
                if let Some((from, target)) = ipc_fds {
                    node_ipc::install_in_child(from, target)?;
                }
                if let Some(prepared) = prepared.as_mut() {
                    return Err(prepared.exec_in_child());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.program.display())))?;
        let pid = Pid::from_raw(child.id() as i32);
        if !sockets.is_empty() {
            self.held.push(Held::new(pid, sockets));
        }
        if let Some((pending, _)) = ipc {
            self.ipc.push(pending.into_channel(pid)?);
        }
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

    fn ask_to_stop(&mut self, worker: Pid, signal: Signal) {
        if let Some(message) = &self.stop_message {
            if let Some(channel) = self.ipc.iter_mut().find(|c| c.worker() == worker) {
                match channel.send(message) {
                    Ok(()) => return debug!("sent {message:?} to worker pid {worker} over IPC"),
                    Err(e) => warn!(
                        "unable to send {message:?} to worker pid {worker} ({e}); sending {}",
                        signal.as_str()
                    ),
                }
            }
        }
        self.signal(worker, signal);
    }

    fn close_listeners(&mut self, worker: Pid) -> bool {
        if let Some(held) = self.held(worker) {
            return held.close_listeners();
        }
        self.watch(worker).is_some_and(|w| w.close_listeners())
    }

    fn has_connections(&mut self, worker: Pid) -> bool {
        let mut ports: Vec<u16> = self
            .held(worker)
            .map(|h| h.drained_ports().to_vec())
            .or_else(|| self.watch(worker).map(|w| w.drained_ports().to_vec()))
            .unwrap_or_default();
        // Steered out rather than shut: the listeners are still there to say which ports.
        ports.extend(
            self.listeners(worker)
                .iter()
                .filter_map(|l| SockRef::from(l).local_addr().ok()?.as_socket())
                .map(|a| a.port()),
        );
        !ports.is_empty() && connections::count_open(worker, &ports) > 0
    }

    fn steer(&mut self, receiving: &[Pid]) {
        if self.router.is_none() {
            return;
        }
        for &worker in receiving {
            if self.listeners(worker).is_empty() && !self.adopted.iter().any(|(p, _)| *p == worker)
            {
                let copies = adopt::listeners_of(worker);
                if copies.is_empty() {
                    warn!("worker pid {worker}: no listening socket found to steer connections to");
                }
                self.adopted.push((worker, copies));
            }
        }
        let Some(router) = self.router.as_mut() else {
            return;
        };
        let listeners: Vec<BorrowedFd> = receiving
            .iter()
            .flat_map(|&worker| {
                listeners_where(&self.watches, &self.held, &self.adopted, |pid| {
                    pid == worker
                })
            })
            .collect();
        // The other live workers' sockets, for the flows that may still name them.
        let kept = listeners_where(&self.watches, &self.held, &self.adopted, |pid| {
            !receiving.contains(&pid)
        });
        router.steer(&listeners, &kept);
    }

    fn flow_last_active(&mut self, worker: Pid) -> Option<Instant> {
        let seen_ns = self
            .router
            .as_ref()?
            .flow_last_seen(&self.listeners(worker))?;
        let now_ns = monotonic_ns()?;
        Instant::now().checked_sub(Duration::from_nanos(now_ns.saturating_sub(seen_ns)))
    }

    fn live_flows(&mut self, worker: Pid) -> Option<u32> {
        let now_ns = monotonic_ns()?;
        self.router
            .as_ref()?
            .live_flows(&self.listeners(worker), now_ns)
    }

    fn queued(&mut self, worker: Pid) -> Option<u32> {
        let listeners = self.listeners(worker);
        if listeners.is_empty() {
            return None;
        }
        Some(
            listeners
                .into_iter()
                .filter_map(|l| queue::waiting(l).ok())
                .sum(),
        )
    }

    fn stop_tracking_binds(&mut self, worker: Pid) {
        if let Some(watch) = self.watch(worker) {
            watch.stop_tracking_binds();
        }
    }

    fn release_listeners(&mut self, worker: Pid) {
        if let Some(held) = self.held(worker) {
            held.release();
        }
        if let Some(watch) = self.watch(worker) {
            watch.release_sockets();
        }
    }

    fn probe(&mut self, worker: Pid, check: Check, timeout: Duration) {
        if check == Check::Health && self.probes.health_by_ipc() {
            let sent = match self.ipc.iter_mut().find(|c| c.worker() == worker) {
                Some(channel) => channel
                    .send(HEALTHCHECK_MESSAGE)
                    .map_err(|e| format!("unable to send {HEALTHCHECK_MESSAGE:?} over IPC: {e}")),
                None => Err("it has no IPC channel".into()),
            };
            return self.probes.wait_for_ipc(worker, sent, timeout);
        }
        let listeners = listeners_where(&self.watches, &self.held, &self.adopted, |p| p == worker);
        self.probes
            .start(worker, check, &listeners, self.router.as_mut(), timeout);
    }

    fn left_behind(&mut self, exited: Pid, workers: &[Pid]) -> Vec<Pid> {
        orphans::left_behind(workers, Some(exited))
    }

    fn memory(&mut self, worker: Pid) -> Option<u64> {
        super::memory::tree_pss_bytes(worker)
    }

    fn kill_left_behind(&mut self, pids: &[Pid]) {
        for &pid in pids {
            // By pid, never by group: a daemon's setsid() gave it a group of its own, and a pid of ours is
            // still ours (it is our child or a descendant of one until we reap it).
            if let Err(e) = kill(pid, Signal::SIGKILL) {
                if e != Errno::ESRCH {
                    log::warn!("unable to kill pid {pid}, left behind by a worker: {e}");
                }
            }
        }
    }
}

/// The launcher's copies of the listening sockets of the workers `wanted` picks: from their bind
/// notifications, their `--listen` sockets, or adopted from /proc.
fn listeners_where<'a>(
    watches: &'a [BindWatch],
    held: &'a [Held],
    adopted: &'a [(Pid, Vec<OwnedFd>)],
    wanted: impl Fn(Pid) -> bool,
) -> Vec<BorrowedFd<'a>> {
    let watched = watches.iter().filter(|w| wanted(w.worker()));
    let held = held.iter().filter(|h| wanted(h.worker()));
    let adopted = adopted.iter().filter(|(pid, _)| wanted(*pid));
    watched
        .flat_map(BindWatch::listeners)
        .chain(held.flat_map(Held::listeners))
        .chain(adopted.flat_map(|(_, copies)| copies.iter().map(|c| c.as_fd())))
        .collect()
}

/// CLOCK_MONOTONIC in ns: the clock of the steering program (bpf_ktime_get_ns), and of Instant.
fn monotonic_ns() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    Some(Duration::from(now).as_nanos() as u64)
}

/// Whether poll reported `source` readable (or hung up) in this round.
fn is_ready(source: &impl AsFd, readable: &[RawFd]) -> bool {
    readable.contains(&source.as_fd().as_raw_fd())
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
