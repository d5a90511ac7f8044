//! The HTTP probes under way (`--ready http:PATH`), one at most per worker, each routed by the
//! steering program to the worker it is meant for. Invariant: a probe's routing entry exists exactly
//! while the probe does — it is set before connecting and removed when the probe ends, fails to
//! start, or its worker exits.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::unistd::Pid;
use socket2::{SockRef, Type};

use super::http_probe::{self, HttpProbe};
use super::steering::router::Router;
use crate::launcher::ProbeOutcome;

#[derive(Default)]
pub struct Probes {
    /// `GET` this (`--ready http:PATH`); None: probes are off.
    path: Option<String>,
    under_way: Vec<(Pid, HttpProbe)>,
    /// Outcomes known at start (the probe could not even start), handed out on the next round.
    done: Vec<(Pid, ProbeOutcome)>,
}

impl Probes {
    pub fn new(path: Option<String>) -> Probes {
        Probes {
            path,
            ..Probes::default()
        }
    }

    /// Starts a probe of `worker` through the first of its `listeners` that is a TCP listener.
    pub fn start(
        &mut self,
        worker: Pid,
        listeners: &[BorrowedFd<'_>],
        router: Option<&mut Router>,
        timeout: Duration,
    ) {
        let outcome = match self.try_start(worker, listeners, router, timeout) {
            Ok(()) => return,
            Err(why) => ProbeOutcome::Failed(why),
        };
        self.done.push((worker, outcome));
    }

    fn try_start(
        &mut self,
        worker: Pid,
        listeners: &[BorrowedFd<'_>],
        router: Option<&mut Router>,
        timeout: Duration,
    ) -> Result<(), String> {
        let (Some(path), Some(router)) = (&self.path, router) else {
            return Err(
                "probes need --ready http and steering; this is a bug in reuseport-launch".into(),
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
            None => self.under_way.push((worker, probe)),
            Some(outcome) => {
                router.end_probe(probe.source_port());
                self.done.push((worker, outcome));
            }
        }
        Ok(())
    }

    /// Descriptors to poll, with what for.
    pub fn poll_fds(&self) -> impl Iterator<Item = (BorrowedFd<'_>, PollFlags)> {
        self.under_way
            .iter()
            .map(|(_, p)| (p.as_fd(), p.poll_flags()))
    }

    /// The nearest probe deadline; now when outcomes are waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.done.is_empty() {
            return Some(Instant::now());
        }
        self.under_way.iter().map(|(_, p)| p.deadline()).min()
    }

    /// Advances the probes whose descriptor is in `readable` or whose deadline passed; returns the
    /// outcomes of those that ended.
    pub fn advance(
        &mut self,
        readable: &[RawFd],
        mut router: Option<&mut Router>,
        now: Instant,
    ) -> Vec<(Pid, ProbeOutcome)> {
        let mut ended = std::mem::take(&mut self.done);
        self.under_way.retain_mut(|(worker, probe)| {
            let due = readable.contains(&probe.as_fd().as_raw_fd()) || probe.deadline() <= now;
            let Some(outcome) = due.then(|| probe.advance(now)).flatten() else {
                return true;
            };
            if let Some(router) = router.as_deref_mut() {
                router.end_probe(probe.source_port());
            }
            ended.push((*worker, outcome));
            false
        });
        ended
    }

    /// Drops the probes of a worker that exited.
    pub fn forget(&mut self, worker: Pid, mut router: Option<&mut Router>) {
        self.done.retain(|(w, _)| *w != worker);
        self.under_way.retain(|(w, probe)| {
            if *w == worker {
                if let Some(router) = router.as_deref_mut() {
                    router.end_probe(probe.source_port());
                }
            }
            *w != worker
        });
    }
}
