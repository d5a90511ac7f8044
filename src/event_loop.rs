//! The one event loop, on top of the layers: it owns the kernel-side objects (kernel/), the operator-side
//! ones (operator/) and the decisions (launcher/), and is the only place that connects them. Each
//! wake-up does the same steps in the same order: drain signals -> reap children -> read notify
//! messages -> serve the control socket and the admin endpoint -> fire due timers (and log the counts
//! of rate-limited warnings) -> pass on announcements. The poll timeout is the nearest deadline, so an
//! idle launcher sleeps in poll(2) and uses no CPU.
//!
//! Adding an event source (a socket, a pidfd, a timer of some mechanism) takes three small edits:
//! 1. own it in `Io` below (built in `run`, before the first worker is spawned);
//! 2. add its descriptor(s) to `wait`'s poll set, and its deadline, if it has one, to the `deadline` list;
//! 3. in the loop, when `readable` contains its descriptor, read it and hand what it says to one
//!    `Launcher` method (a new `on_...` in launcher/ if no existing one fits) — never decide here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::kernel::notify_socket::{self, NotifySocket, Received};
use crate::kernel::probes::HealthKind;
use crate::kernel::signals::SignalPipe;
use crate::kernel::steering::group::SteeringGroup;
use crate::kernel::supervisor::Supervisor;
use crate::kernel::{inject, listen, process_tree, sysctl};
use crate::launcher::{thousands, Launcher, NotifyMessage, Outcome, Phase, RateLimit, Verdict};
use crate::operator::admin::AdminServer;
use crate::operator::cli::{Config, SteerArg};
use crate::operator::control::ControlServer;
use crate::operator::systemd::ServiceManager;

/// Signals the launcher acts on, besides `--reload-signal`. SIGCHLD only wakes the loop; reaping
/// happens on every round. SIGTTIN/SIGTTOU scale by one worker up/down, as in einhorn and unicorn.
/// SIGHUP is caught whatever `--reload-signal` says: when another signal reloads, a SIGHUP is logged
/// and ignored rather than left to its default action (ending the launcher).
const HANDLED_SIGNALS: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGCHLD,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Dropped notify messages of one kind from one pid are logged once per this window, then summed up with
/// a count: a flood of spoofed or garbage datagrams must not flood the journal.
const NOTIFY_DROP_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Senders tracked apart in the drop log; more share one "other pids" count, so a flood from many pids
/// is still a few lines.
const NOTIFY_DROP_SENDERS: usize = 16;

/// How often starting workers are checked for a listening socket (`--ready listen|auto`); only while
/// some worker is starting, so an idle launcher still never wakes up. Not more often either: a check
/// costs a syscall per starting worker.
const LISTEN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Everything the loop owns besides the decisions.
struct Io {
    signals: SignalPipe,
    notify: NotifySocket,
    control: ControlServer,
    /// `--admin`: the HTTP endpoint; None when off.
    admin: Option<AdminServer>,
    manager: ServiceManager,
    supervisor: Supervisor,
    /// When a dropped notify message is logged, by (kind of drop, sender).
    notify_drops: RateLimit<(&'static str, Option<Pid>)>,
}

pub fn run(config: &Config) -> Result<Outcome, String> {
    if config.inject {
        inject::check_kernel_support().map_err(|e| {
            format!("SO_REUSEPORT injection is unavailable: {e}. Run with --no-inject if the server sets SO_REUSEPORT itself")
        })?;
    }
    listen::check_available(&config.listen)?;
    let now = Instant::now();
    let mut handled = HANDLED_SIGNALS.to_vec();
    if !handled.contains(&config.reload_signal) {
        handled.push(config.reload_signal);
    }
    let signals = SignalPipe::install(&handled)
        .map_err(|e| format!("unable to install signal handlers: {e}"))?;
    let notify = NotifySocket::bind()
        .map_err(|e| format!("unable to create the workers' notify socket: {e}"))?;
    let mut io = Io {
        supervisor: Supervisor::new(config.worker_spec(), notify.path().to_path_buf())?,
        control: ControlServer::bind(&config.name).map_err(|e| e.to_string())?,
        admin: config
            .admin
            .map(|address| {
                AdminServer::bind(address, &config.name)
                    .map_err(|e| format!("unable to listen on --admin {address}: {e}"))
            })
            .transpose()?,
        manager: ServiceManager::from_env(now),
        signals,
        notify,
        notify_drops: RateLimit::new(NOTIFY_DROP_LOG_WINDOW, NOTIFY_DROP_SENDERS),
    };
    let steer = decide_steering(config.steer)?;
    if steer {
        let idle = config.udp_flow_idle;
        io.supervisor
            .enable_steering((!idle.is_zero()).then_some(idle));
    }
    let health = config.health.as_ref().map(|(kind, _)| kind.clone());
    let http_flag = match (&config.ready_path, &health) {
        (Some(_), _) => Some("--ready http"),
        (_, Some(HealthKind::Http(_))) => Some("--health http"),
        _ => None,
    };
    if let (Some(flag), false) = (http_flag, steer) {
        return Err(format!(
            "{flag} needs steering, and steering is off (see above): a probe cannot choose its worker \
             otherwise, so another worker could answer for the one probed. Run the launcher as root, or \
             drop {flag}"
        ));
    }
    if !config.probation.is_zero() && !steer {
        return Err(
            "--probation needs steering, and steering is off (see above): without it the old generation \
             kept for the roll-back would still get a share of the port's new connections. Run the \
             launcher as root, or drop --probation"
                .into(),
        );
    }
    io.supervisor
        .enable_probes(config.ready_path.clone(), health);
    sysctl::report_migrate_req(steer);
    let mut launcher = Launcher::new(config.policy(steer), now);
    launcher.start(&mut io.supervisor, now);
    // When starting workers are next checked for a listening socket; None: on the next round.
    let mut probe_due: Option<Instant> = None;

    loop {
        for announcement in launcher.take_announcements() {
            io.manager.announce(&announcement);
            io.control.on_announcement(&announcement);
            if let Some(admin) = &mut io.admin {
                admin.on_announcement(&announcement);
            }
        }
        if let Phase::Finished(outcome) = launcher.phase() {
            io.supervisor.kill_everything_left();
            return Ok(outcome.clone());
        }
        if probe_due.is_none_or(|due| due <= Instant::now()) {
            let (listening, probe_again) =
                io.supervisor.probe_listening(&launcher.starting_workers());
            for pid in listening {
                launcher.on_listening(&mut io.supervisor, pid, Instant::now());
            }
            probe_due = probe_again.then(|| Instant::now() + LISTEN_PROBE_INTERVAL);
        }
        let deadline = [
            launcher.next_deadline(),
            io.control.next_deadline(),
            io.admin.as_ref().and_then(AdminServer::next_deadline),
            io.manager.next_deadline(),
            io.notify_drops.next_deadline(),
            io.supervisor.next_deadline(),
            probe_due,
        ]
        .into_iter()
        .flatten()
        .min();
        let readable = wait(&io, deadline).map_err(|e| format!("poll failed: {e}"))?;
        let now = Instant::now();

        for signal in io.signals.drain() {
            match signal {
                reload if reload == config.reload_signal => {
                    launcher.request_reload(&mut io.supervisor, now);
                }
                Signal::SIGHUP => info!(
                    "SIGHUP ignored: the reload signal is {} (--reload-signal); send that, or run \
                     `reuseport-launch reload --name {}`",
                    config.reload_signal.as_str(),
                    config.name
                ),
                Signal::SIGTERM | Signal::SIGINT => launcher.request_stop(&mut io.supervisor, now),
                Signal::SIGTTIN | Signal::SIGTTOU => {
                    let wanted =
                        launcher.wanted() as isize + if signal == Signal::SIGTTIN { 1 } else { -1 };
                    if let Err(why) =
                        launcher.scale(&mut io.supervisor, wanted.max(0) as usize, now)
                    {
                        warn!("{} ignored: {why}", signal.as_str());
                    }
                }
                _ => {}
            }
        }
        io.supervisor.handle_binds(&readable);
        for (pid, reason) in io.supervisor.reap() {
            launcher.on_exit(&mut io.supervisor, pid, reason, now);
        }
        io.supervisor.release_exited();
        for received in io.notify.drain() {
            deliver(&mut launcher, &mut io, received, now);
        }
        let ready = NotifyMessage {
            ready: true,
            ..NotifyMessage::default()
        };
        for pid in io.supervisor.read_ipc(&readable) {
            launcher.on_notify(&mut io.supervisor, pid, &ready, now);
        }
        for (pid, check, outcome) in io.supervisor.advance_probes(&readable) {
            launcher.on_probe(&mut io.supervisor, pid, check, outcome, Instant::now());
        }
        io.control.serve(&mut launcher, &mut io.supervisor, now);
        if let Some(admin) = &mut io.admin {
            admin.serve(&launcher, &mut io.supervisor, now);
        }
        let now = Instant::now();
        launcher.on_timers(&mut io.supervisor, now);
        io.manager.on_timers(now);
        for summary in io.notify_drops.due(now) {
            let what = match summary.key {
                Some((kind, Some(pid))) => format!("from pid {pid} ({kind})"),
                Some((kind, None)) => format!("({kind})"),
                None => "from other pids".to_string(),
            };
            warn!(
                "dropped {} more notify messages {what} in the last {}s",
                thousands(summary.suppressed),
                summary.window.as_secs()
            );
        }
        io.supervisor
            .look_for_strangers(|pid| launcher.is_worker(pid));
    }
}

/// Settles `--steer`: `auto` is on when this launcher may load the reuseport program.
fn decide_steering(choice: SteerArg) -> Result<bool, String> {
    if choice == SteerArg::Off {
        return Ok(false);
    }
    let support = SteeringGroup::probe_support();
    if let Some(log) = support.as_ref().err().and_then(|e| e.verifier_log()) {
        debug!("the verifier's log for the steering program:\n{log}");
    }
    match (support, choice) {
        (Ok(()), _) => {
            info!("steering on: the launcher chooses the worker of every new connection");
            Ok(true)
        }
        (Err(why), SteerArg::On) => Err(format!(
            "--steer on: unable to load the reuseport eBPF program: {why}. Run as root, or use --steer auto"
        )),
        (Err(why), _) => {
            warn!(
                "steering off: {why}. Without it a reload can reset connections queued on old listeners \
                 (unless net.ipv4.tcp_migrate_req=1), and other processes listening on the port share its \
                 connections; run the launcher as root to steer"
            );
            Ok(false)
        }
    }
}

/// Hands a notify datagram to the worker it came from, or logs why it was dropped (the first of a kind
/// from a sender in NOTIFY_DROP_LOG_WINDOW; the rest are counted and summed up in the loop).
fn deliver(launcher: &mut Launcher, io: &mut Io, received: Received, now: Instant) {
    let (kind, sender, line) = match received {
        Received::Message { sender, message } => {
            match process_tree::find_ancestor(sender, |pid| launcher.is_worker(pid)) {
                Some(worker) => {
                    launcher.on_notify(&mut io.supervisor, worker, &message, now);
                    return;
                }
                None => (
                    "not from a worker",
                    Some(sender),
                    format!("dropped notify message from pid {sender}: not a worker or a descendant of one"),
                ),
            }
        }
        Received::Oversized { sender } => (
            "oversized",
            sender,
            format!(
                "dropped oversized notify message from pid {}: more than {} bytes",
                show(sender),
                notify_socket::MAX_MESSAGE_BYTES
            ),
        ),
        Received::Malformed { sender, why } => (
            "malformed",
            sender,
            format!(
                "dropped malformed notify message from pid {}: {why}",
                show(sender)
            ),
        ),
        Received::Anonymous => (
            "anonymous",
            None,
            "dropped notify message without sender credentials".to_string(),
        ),
        Received::ReadFailed { why } => (
            "read failed",
            None,
            format!("reading the notify socket failed: {why}; will try again on the next message"),
        ),
    };
    if io.notify_drops.check((kind, sender), now) == Verdict::Log {
        warn!(
            "{line}; more like it are counted for {}s",
            NOTIFY_DROP_LOG_WINDOW.as_secs()
        );
    }
}

/// Sleeps until a signal, a notify datagram, a control or admin client, a worker's bind or IPC message,
/// or the deadline. Returns the descriptors that are readable (or hung up), so that per-worker sources are
/// only read when they have something: a round costs O(ready sources), not O(workers).
fn wait(io: &Io, deadline: Option<Instant>) -> io::Result<Vec<RawFd>> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            // Round up so the loop never wakes a hair early and spins until the deadline.
            let remaining = at.saturating_duration_since(Instant::now());
            let ms = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    let sources: Vec<BorrowedFd> = [io.signals.as_fd(), io.notify.as_fd()]
        .into_iter()
        .chain(io.control.poll_fds())
        .chain(io.supervisor.watch_fds())
        .chain(io.supervisor.ipc_fds())
        .collect();
    let mut fds: Vec<PollFd> = sources
        .into_iter()
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .chain(
            io.admin
                .iter()
                .flat_map(AdminServer::poll_fds)
                .chain(io.supervisor.probe_fds())
                .map(|(fd, flags)| PollFd::new(fd, flags)),
        )
        .collect();
    match poll(&mut fds, timeout) {
        Ok(_) => Ok(fds
            .iter()
            .filter(|fd| fd.any() == Some(true))
            .map(|fd| fd.as_fd().as_raw_fd())
            .collect()),
        Err(nix::errno::Errno::EINTR) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn show(pid: Option<Pid>) -> String {
    pid.map_or_else(|| "?".into(), |p| p.to_string())
}
