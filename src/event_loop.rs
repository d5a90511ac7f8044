//! The one event loop. Each wake-up does the same steps in the same order: drain signals -> reap
//! children -> read notify messages -> fire due timers -> tell the service manager. The poll timeout is
//! the nearest deadline, so an idle launcher sleeps in poll(2) and uses no CPU.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use log::{debug, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::cli::Config;
use crate::notify::{NotifySocket, Received};
use crate::process_tree;
use crate::signals::SignalPipe;
use crate::state::{Launcher, Outcome, Phase, Policy};
use crate::supervisor::{self, Supervisor};
use crate::sysctl;
use crate::systemd::ServiceManager;

/// Signals the launcher acts on. SIGCHLD only wakes the loop; reaping happens on every round.
const HANDLED_SIGNALS: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGCHLD,
];

pub fn run(config: &Config) -> io::Result<Outcome> {
    let signals = SignalPipe::install(HANDLED_SIGNALS)?;
    let notify = NotifySocket::bind()?;
    let manager = ServiceManager::from_env();
    sysctl::warn_if_migrate_req_off();
    let mut supervisor = Supervisor::new(config, notify.path().to_path_buf());
    let policy = Policy {
        workers: config.workers,
        ready_timeout: config.ready_timeout,
        stop_timeout: config.stop_timeout,
        stop_signal: config.stop_signal,
    };
    let mut launcher = Launcher::new(policy, Instant::now());
    launcher.start(&mut supervisor, Instant::now());

    loop {
        for announcement in launcher.take_announcements() {
            manager.announce(&announcement);
        }
        if let Phase::Finished(outcome) = launcher.phase() {
            return Ok(outcome.clone());
        }
        wait(&signals, &notify, launcher.next_deadline())?;
        let now = Instant::now();

        for signal in signals.drain() {
            match signal {
                Signal::SIGHUP => launcher.request_reload(&mut supervisor, now),
                Signal::SIGTERM | Signal::SIGINT => launcher.request_stop(&mut supervisor, now),
                _ => {}
            }
        }
        for (pid, reason) in supervisor::reap() {
            launcher.on_exit(&mut supervisor, pid, reason, now);
        }
        for received in notify.drain() {
            match received {
                Received::Message { sender, message } => {
                    match process_tree::find_ancestor(sender, |pid| launcher.is_worker(pid)) {
                        Some(worker) => launcher.on_notify(&mut supervisor, worker, &message, now),
                        None => warn!("dropped notify message from pid {sender}: not a worker or a descendant of one"),
                    }
                }
                Received::Oversized { sender } => warn!(
                    "dropped oversized notify message from pid {}: more than {} bytes",
                    show(sender),
                    crate::notify::MAX_MESSAGE_BYTES
                ),
                Received::Malformed { sender, why } => {
                    warn!(
                        "dropped malformed notify message from pid {}: {why}",
                        show(sender)
                    )
                }
                Received::Anonymous => warn!("dropped notify message without sender credentials"),
            }
        }
        launcher.on_timers(&mut supervisor, Instant::now());
    }
}

/// Sleeps until a signal, a notify datagram or the deadline.
fn wait(signals: &SignalPipe, notify: &NotifySocket, deadline: Option<Instant>) -> io::Result<()> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            // Round up so the loop never wakes a hair early and spins until the deadline.
            let remaining = at.saturating_duration_since(Instant::now());
            let ms = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [
        PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        PollFd::new(notify.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(n) => {
            debug!("woke up: {n} ready");
            Ok(())
        }
        Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn show(pid: Option<nix::unistd::Pid>) -> String {
    pid.map_or_else(|| "?".into(), |p| p.to_string())
}
