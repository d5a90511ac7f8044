//! The probes under way (`--ready http:PATH`, `--health http:PATH|ipc`), one at most per worker and
//! purpose: HTTP probes, each routed by the steering program to the worker it is meant for, and
//! `healthcheck` messages over Node IPC channels waiting for `healthy`. Invariant: an HTTP probe's
//! routing entry exists exactly while the probe does — it is set before connecting and removed when
//! the probe ends, fails to start, or its worker exits.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::unistd::Pid;
use socket2::{SockRef, Type};

use super::http_probe::{self, HttpProbe};
use super::steering::router::Router;
use crate::launcher::{Check, ProbeOutcome};

/// How `--health` checks a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// `GET PATH` answers 2xx.
    Http(String),
    /// `healthcheck` over the Node IPC channel is answered `healthy`.
    Ipc,
}

/// A `healthcheck` message sent, waiting for `healthy`.
struct IpcWait {
    worker: Pid,
    sent: Instant,
    deadline: Instant,
}

#[derive(Default)]
pub struct Probes {
    /// `GET` this for readiness (`--ready http:PATH`).
    ready_path: Option<String>,
    /// `--health`.
    health: Option<HealthKind>,
    under_way: Vec<(Pid, Check, HttpProbe)>,
    ipc_waits: Vec<IpcWait>,
    /// Outcomes known at start (the probe could not even start) or from IPC, handed out on the
    /// next round.
    done: Vec<(Pid, Check, ProbeOutcome)>,
}

impl Probes {
    pub fn new(ready_path: Option<String>, health: Option<HealthKind>) -> Probes {
        Probes {
            ready_path,
            health,
            ..Probes::default()
        }
    }

    /// Whether health checks go over the Node IPC channel.
    pub fn health_by_ipc(&self) -> bool {
        self.health == Some(HealthKind::Ipc)
    }

    /// `healthcheck` was sent to `worker` (or could not be: `sent` is the error).
    pub fn wait_for_ipc(&mut self, worker: Pid, sent: Result<(), String>, timeout: Duration) {
        let now = Instant::now();
        match sent {
            Ok(()) => self.ipc_waits.push(IpcWait {
                worker,
                sent: now,
                deadline: now + timeout,
            }),
            Err(why) => self
                .done
                .push((worker, Check::Health, ProbeOutcome::Failed(why))),
        }
    }

    /// `worker` sent `healthy` over its IPC channel: the check waiting for it, if any, passed.
    pub fn ipc_replied(&mut self, worker: Pid) {
        if let Some(i) = self.ipc_waits.iter().position(|w| w.worker == worker) {
            self.ipc_waits.remove(i);
            let reply = ProbeOutcome::Replied("healthy".into());
            self.done.push((worker, Check::Health, reply));
        }
    }

    /// Starts an HTTP probe of `worker` through the first of its `listeners` that is a TCP listener.
    pub fn start(
        &mut self,
        worker: Pid,
        check: Check,
        listeners: &[BorrowedFd<'_>],
        router: Option<&mut Router>,
        timeout: Duration,
    ) {
        let outcome = match self.try_start(worker, check, listeners, router, timeout) {
            Ok(()) => return,
            Err(why) => ProbeOutcome::Failed(why),
        };
        self.done.push((worker, check, outcome));
    }

    fn try_start(
        &mut self,
        worker: Pid,
        check: Check,
        listeners: &[BorrowedFd<'_>],
        router: Option<&mut Router>,
        timeout: Duration,
    ) -> Result<(), String> {
        let path = match (check, &self.health) {
            (Check::Ready, _) => self.ready_path.as_ref(),
            (Check::Health, Some(HealthKind::Http(path))) => Some(path),
            (Check::Health, _) => None,
        };
        let (Some(path), Some(router)) = (path, router) else {
            return Err(
                "HTTP probes need --ready http or --health http, and steering; this is a \
                        bug in reuseport-launch"
                    .into(),
            );
        };
        let (listener, address) = listeners
            .iter()
            .find_map(|&l| {
                let socket = SockRef::from(&l);
                let tcp = socket.r#type().ok()? == Type::STREAM;
                let address = socket.local_addr().ok()?.as_socket()?;
                tcp.then_some((l, address))
            })
            .ok_or("no TCP listener of it is known to the launcher")?;
        let target = http_probe::target_of(address);
        let mut probe = HttpProbe::bind(target, path, timeout, Instant::now())
            .map_err(|e| format!("unable to create a probe socket for {target}: {e}"))?;
        router
            .start_probe(listener, probe.source_port())
            .map_err(|e| format!("unable to route a probe to its listener {address}: {e}"))?;
        match probe.connect() {
            None => self.under_way.push((worker, check, probe)),
            Some(outcome) => {
                router.end_probe(probe.source_port());
                self.done.push((worker, check, outcome));
            }
        }
        Ok(())
    }

    /// Descriptors to poll, with what for.
    pub fn poll_fds(&self) -> impl Iterator<Item = (BorrowedFd<'_>, PollFlags)> {
        self.under_way
            .iter()
            .map(|(_, _, p)| (p.as_fd(), p.poll_flags()))
    }

    /// The nearest probe deadline; now when outcomes are waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.done.is_empty() {
            return Some(Instant::now());
        }
        let ipc = self.ipc_waits.iter().map(|w| w.deadline);
        self.under_way
            .iter()
            .map(|(_, _, p)| p.deadline())
            .chain(ipc)
            .min()
    }

    /// Advances the probes whose descriptor is in `readable` or whose deadline passed; returns the
    /// outcomes of those that ended.
    pub fn advance(
        &mut self,
        readable: &[RawFd],
        mut router: Option<&mut Router>,
        now: Instant,
    ) -> Vec<(Pid, Check, ProbeOutcome)> {
        let mut ended = std::mem::take(&mut self.done);
        self.ipc_waits.retain(|wait| {
            if wait.deadline > now {
                return true;
            }
            let outcome = ProbeOutcome::TimedOut(wait.deadline - wait.sent);
            ended.push((wait.worker, Check::Health, outcome));
            false
        });
        self.under_way.retain_mut(|(worker, check, probe)| {
            let due = readable.contains(&probe.as_fd().as_raw_fd()) || probe.deadline() <= now;
            let Some(outcome) = due.then(|| probe.advance(now)).flatten() else {
                return true;
            };
            if let Some(router) = router.as_deref_mut() {
                router.end_probe(probe.source_port());
            }
            ended.push((*worker, *check, outcome));
            false
        });
        ended
    }

    /// Drops the probes of a worker that exited.
    pub fn forget(&mut self, worker: Pid, mut router: Option<&mut Router>) {
        self.done.retain(|(w, _, _)| *w != worker);
        self.ipc_waits.retain(|wait| wait.worker != worker);
        self.under_way.retain(|(w, _, probe)| {
            if *w == worker {
                if let Some(router) = router.as_deref_mut() {
                    router.end_probe(probe.source_port());
                }
            }
            *w != worker
        });
    }
}
