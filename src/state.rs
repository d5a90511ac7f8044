//! The launcher's decisions: which generation serves, which workers should exist, when a reload
//! succeeds or rolls back, when a crashed worker is restarted, when a slow one is killed. It reacts to
//! events (reload/stop requested, a worker exited, a worker said READY=1, time passed) and acts only
//! through the `Processes` trait, so it is tested without real processes. Invariant: the active
//! generation is never signalled by a reload until every worker of its successor is ready.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::backoff::{ordinal, Backoff};
use crate::notify::NotifyMessage;
use crate::supervisor::{ExitReason, Processes};

/// The lifecycle of one worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPhase {
    /// Spawned; has until `ready_deadline` to send READY=1.
    Starting { ready_deadline: Instant },
    /// Sent READY=1.
    Ready,
    /// Its listening sockets were taken out of the port's group (`--drain listener`); it gets the stop
    /// signal once its connections are gone, checked at `next_check`, or at `signal_at` at the latest.
    Draining {
        signal_at: Instant,
        next_check: Instant,
    },
    /// Sent the stop signal; gets SIGKILL at `kill_at` (None once SIGKILL was sent).
    Stopping { kill_at: Option<Instant> },
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub slot: usize,
    pub generation: u32,
    pub pid: Pid,
    pub phase: WorkerPhase,
    pub spawned_at: Instant,
    /// Time from spawn to READY=1.
    pub ready_after: Option<Duration>,
    /// Last STATUS= the worker sent.
    pub status: Option<String>,
    /// Last WATCHDOG=1 the worker sent.
    pub last_watchdog: Option<Instant>,
    /// The worker has sent at least one notify message.
    pub spoke_notify: bool,
    /// The worker was seen with a TCP socket in LISTEN state.
    pub listening: bool,
}

impl Worker {
    /// Told to stop already (draining or signalled).
    pub fn is_stopping(&self) -> bool {
        matches!(
            self.phase,
            WorkerPhase::Stopping { .. } | WorkerPhase::Draining { .. }
        )
    }
}

/// The lifecycle of the launcher as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Generation 1 is starting; nothing is reported ready yet.
    Starting,
    /// The active generation serves; no reload is running.
    Serving,
    /// Generation `next` is starting beside the active one.
    Reloading { next: u32, started: Instant },
    /// Every worker was told to stop; the launcher ends with `outcome` once none is left.
    Stopping { outcome: Outcome },
    /// Nothing left to do; the event loop returns `Outcome`.
    Finished(Outcome),
}

/// How the launcher ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A stop was requested and every worker has exited.
    Stopped,
    /// Generation 1 never got ready; the reason names the worker.
    StartFailed(String),
}

/// Something the service manager (systemd) and control clients should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// Generation 1 is serving.
    Ready,
    /// Reload number `seq` (see `request_reload`) ended, either way.
    ReloadEnded { seq: u64, result: ReloadResult },
    /// A reload started.
    Reloading,
    /// The launcher is stopping.
    Stopping,
    /// A new one-line status.
    Status(String),
}

/// The result of the latest reload, for status lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new generation serves; it took this long from the request to all workers ready.
    Succeeded { generation: u32, took: Duration },
    /// Rolled back; the reason names the worker.
    Failed { generation: u32, reason: String },
}

/// Timeouts and the stop signal: the parts of the configuration the decisions depend on.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub workers: usize,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    pub stop_signal: Signal,
    /// A worker that sent WATCHDOG=1 once and then stays silent this long is replaced.
    pub watchdog: Option<Duration>,
    /// What counts as ready.
    pub ready: ReadyMode,
    /// How workers are drained.
    pub drain: DrainMode,
}

/// How a worker is drained before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// Send the stop signal; the server drains itself.
    Signal,
    /// First take its listening sockets out of the port's group, wait until its connections are gone
    /// (at most --stop-timeout), then send the stop signal.
    Listener,
    /// `Listener` for servers that do not speak sd_notify (the same test as ReadyMode::Auto), `Signal`
    /// for those that do.
    Auto,
}

/// How often a draining worker's open connections are counted.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// What makes a worker ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// READY=1 on the notify socket, nothing else.
    Notify,
    /// A TCP socket of the worker in LISTEN state.
    Listen,
    /// READY=1 when the server speaks sd_notify (any worker ever sent READY=1, or this worker sent any
    /// notify message); listening otherwise.
    Auto,
}

/// An old generation that was told to stop because its successor is ready.
#[derive(Debug, Clone)]
struct Retiring {
    generation: u32,
    successor: u32,
    reload_requested: Instant,
    signalled: Instant,
}

/// Restart bookkeeping of one slot of the active generation.
#[derive(Debug, Clone, Default)]
struct Slot {
    backoff: Backoff,
    restart_at: Option<Instant>,
    restarts: u32,
}

/// A point-in-time view of the launcher for `status`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: &'static str,
    pub active: u32,
    pub wanted: usize,
    pub status_line: String,
    pub last_reload: Option<ReloadResult>,
    pub workers: Vec<WorkerRow>,
}

/// One worker in a `Snapshot`.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub generation: u32,
    pub slot: usize,
    pub pid: i32,
    /// starting, ready or draining
    pub state: &'static str,
    pub uptime: Duration,
    /// Restarts of this slot in the active generation.
    pub restarts: u32,
    pub ready_after: Option<Duration>,
    /// The worker's last STATUS= line.
    pub status: Option<String>,
}

pub struct Launcher {
    policy: Policy,
    phase: Phase,
    /// The generation that serves (or, while Starting, is starting).
    active: u32,
    /// The highest generation number used so far; numbers are never reused.
    newest: u32,
    started: Instant,
    /// Every live worker process, of any generation.
    workers: Vec<Worker>,
    slots: Vec<Slot>,
    retiring: Vec<Retiring>,
    reload_queued: bool,
    /// Some worker has sent READY=1: the server speaks sd_notify (for ReadyMode::Auto).
    server_speaks_notify: bool,
    /// Reloads started so far; a reload's sequence number lets a client wait for that very reload.
    reloads_started: u64,
    last_reload: Option<ReloadResult>,
    announcements: Vec<Announcement>,
}

impl Launcher {
    pub fn new(policy: Policy, now: Instant) -> Launcher {
        Launcher {
            policy,
            phase: Phase::Starting,
            active: 1,
            newest: 1,
            started: now,
            workers: Vec::new(),
            slots: vec![Slot::default(); policy.workers],
            retiring: Vec::new(),
            reload_queued: false,
            server_speaks_notify: false,
            reloads_started: 0,
            last_reload: None,
            announcements: Vec::new(),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Workers per generation, as configured or scaled.
    pub fn wanted(&self) -> usize {
        self.policy.workers
    }

    pub fn is_worker(&self, pid: Pid) -> bool {
        self.workers.iter().any(|w| w.pid == pid)
    }

    /// Announcements made since the last call.
    pub fn take_announcements(&mut self) -> Vec<Announcement> {
        std::mem::take(&mut self.announcements)
    }

    /// Spawns generation 1.
    pub fn start(&mut self, processes: &mut impl Processes, now: Instant) {
        info!("generation 1: starting {} workers", self.policy.workers);
        if let Err(reason) = self.spawn_generation(processes, 1, now) {
            self.fail_start(processes, reason, now);
        }
    }

    /// SIGHUP: start a new generation, or queue one reload if one is running. Returns the sequence
    /// number of the reload that will carry out this request (None while stopping).
    pub fn request_reload(&mut self, processes: &mut impl Processes, now: Instant) -> Option<u64> {
        match self.phase {
            Phase::Serving => {
                self.start_reload(processes, now);
                Some(self.reloads_started)
            }
            Phase::Starting | Phase::Reloading { .. } => {
                if !self.reload_queued {
                    info!("reload requested while generation {} is starting; one more reload will follow", self.newest);
                }
                self.reload_queued = true;
                Some(self.reloads_started + 1)
            }
            Phase::Stopping { .. } | Phase::Finished(_) => {
                info!("reload requested while stopping; ignored");
                None
            }
        }
    }

    /// Grows or shrinks the active generation to `workers` without a reload.
    pub fn scale(
        &mut self,
        processes: &mut impl Processes,
        workers: usize,
        now: Instant,
    ) -> Result<(), String> {
        if workers == 0 {
            return Err("cannot scale to 0 workers; use stop to stop the service".into());
        }
        if self.phase != Phase::Serving {
            return Err(format!(
                "cannot scale now ({}); try again when the reload has ended",
                self.status_line()
            ));
        }
        let before = self.policy.workers;
        info!(
            "scaling generation {} from {before} to {workers} workers",
            self.active
        );
        self.policy.workers = workers;
        self.slots.resize_with(workers, Slot::default);
        for slot in before..workers {
            self.spawn_worker(processes, self.active, slot, now)?;
        }
        let surplus: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.generation == self.active && w.slot >= workers && !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        for pid in surplus {
            self.stop_worker(processes, pid, now);
        }
        self.announce_status();
        Ok(())
    }

    /// SIGTERM/SIGINT: drain and stop everything; a second request kills at once.
    pub fn request_stop(&mut self, processes: &mut impl Processes, now: Instant) {
        match self.phase {
            Phase::Stopping { .. } => {
                warn!(
                    "second stop request: killing {} workers now",
                    self.workers.len()
                );
                for worker in &mut self.workers {
                    processes.signal(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Stopping { kill_at: None };
                }
            }
            Phase::Finished(_) => {}
            _ => self.stop_all(processes, Outcome::Stopped, now),
        }
    }

    /// A child exited (reaped by the event loop).
    pub fn on_exit(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        reason: ExitReason,
        now: Instant,
    ) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            debug!("reaped pid {pid} ({reason}), not a worker");
            return;
        };
        let worker = self.workers.remove(index);
        let name = describe(&worker);
        match (&self.phase, worker.phase) {
            (_, WorkerPhase::Stopping { .. } | WorkerPhase::Draining { .. }) => {
                debug!("{name} exited with {reason} after the stop signal");
                                self.retire_if_gone(worker.generation, now);
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.announce_status();
                }
            }
            (Phase::Starting, _) => {
                let when = if worker.phase == WorkerPhase::Ready { "while generation 1 was starting" } else { "before it was ready" };
                self.fail_start(processes, format!("{name} exited with {reason} {when}"), now);
            }
            (Phase::Reloading { next, .. }, _) if worker.generation == *next => {
                let when = if worker.phase == WorkerPhase::Ready { "before its generation was ready" } else { "before it was ready" };
                self.fail_reload(processes, format!("{name} exited with {reason} {when}"), now);
            }
            _ if worker.generation == self.active => self.schedule_restart(&worker, reason, now),
            _ => error!("{name} exited with {reason} in an unexpected state; this is a bug in reuseport-launch"),
        }
        self.finish_if_stopped();
    }

    /// A notify message attributed to the worker `pid`.
    pub fn on_notify(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        message: &NotifyMessage,
        now: Instant,
    ) {
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        if let Some(status) = &message.status {
            debug!("{}: STATUS={status}", describe(worker));
            worker.status = Some(status.clone());
        }
        if let Some(errno) = message.errno {
            warn!(
                "{} reports ERRNO={errno} ({})",
                describe(worker),
                nix::errno::Errno::from_raw(errno).desc()
            );
        }
        if message.watchdog {
            worker.last_watchdog = Some(now);
        }
        if message.stopping {
            debug!("{} sent STOPPING=1", describe(worker));
        }
        worker.spoke_notify = true;
        if message.ready {
            self.server_speaks_notify = true;
            if self.policy.ready != ReadyMode::Listen {
                self.mark_ready(processes, pid, "READY=1", now);
            }
        }
    }

    /// The worker `pid` was seen with a TCP socket in LISTEN state.
    pub fn on_listening(&mut self, processes: &mut impl Processes, pid: Pid, now: Instant) {
        let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        worker.listening = true;
        let counts = match self.policy.ready {
            ReadyMode::Notify => false,
            ReadyMode::Listen => true,
            ReadyMode::Auto => !self.server_speaks_notify && !worker.spoke_notify,
        };
        if counts {
            self.mark_ready(processes, pid, "listening", now);
        }
    }

    /// Workers that have not become ready yet.
    pub fn starting_workers(&self) -> Vec<Pid> {
        self.workers
            .iter()
            .filter(|w| matches!(w.phase, WorkerPhase::Starting { .. }))
            .map(|w| w.pid)
            .collect()
    }

    fn mark_ready(&mut self, processes: &mut impl Processes, pid: Pid, signal: &str, now: Instant) {
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        if !matches!(self.workers[index].phase, WorkerPhase::Starting { .. }) {
            return;
        }
        if !self.keeps_listeners(&self.workers[index]) {
            processes.release_listeners(pid);
        }
        let worker = &mut self.workers[index];
        worker.phase = WorkerPhase::Ready;
        let took = now.saturating_duration_since(worker.spawned_at);
        worker.ready_after = Some(took);
        debug!(
            "{} ready ({signal}) after {} ms",
            describe(worker),
            took.as_millis()
        );
        let generation = worker.generation;
        self.on_worker_ready(processes, generation, now);
    }

    /// Acts on every deadline that has passed: ready timeouts, kill timeouts, due restarts.
    pub fn on_timers(&mut self, processes: &mut impl Processes, now: Instant) {
        self.signal_drained(processes, now);
        self.kill_overdue(processes, now);
        if let Some(late) = self.workers.iter().find(|w| matches!(w.phase, WorkerPhase::Starting { ready_deadline } if ready_deadline <= now)).cloned() {
            let hint = match (self.policy.ready, late.listening) {
                (ReadyMode::Listen, _) => "check that it listens on a TCP port",
                (_, true) => {
                    "it listens but never sent READY=1; if the server does not speak sd_notify, use --ready listen"
                }
                _ => "check that it listens, or sends READY=1 to $NOTIFY_SOCKET",
            };
            let reason = format!(
                "{} not ready after {:.1}s (--ready-timeout); {hint}",
                describe(&late),
                self.policy.ready_timeout.as_secs_f64()
            );
            match self.phase {
                Phase::Starting => self.fail_start(processes, reason, now),
                Phase::Reloading { next, .. } if late.generation == next => self.fail_reload(processes, reason, now),
                _ => self.replace(processes, &late, &reason, now),
            }
        }
        if let Some(silent) = self.watchdog_overdue(now) {
            let reason = format!(
                "{} silent for {:.1}s since its last WATCHDOG=1 (--watchdog)",
                describe(&silent),
                now.saturating_duration_since(silent.last_watchdog.unwrap_or(now))
                    .as_secs_f64()
            );
            self.replace(processes, &silent, &reason, now);
        }
        self.restart_due(processes, now);
        self.finish_if_stopped();
    }

    /// The nearest deadline, to bound the event loop's wait.
    pub fn next_deadline(&self) -> Option<Instant> {
        let watchdog = self.policy.watchdog;
        let workers = self.workers.iter().filter_map(move |w| match w.phase {
            WorkerPhase::Starting { ready_deadline } => Some(ready_deadline),
            WorkerPhase::Stopping { kill_at } => kill_at,
            WorkerPhase::Draining { next_check, .. } => Some(next_check),
            WorkerPhase::Ready => w.last_watchdog.zip(watchdog).map(|(at, limit)| at + limit),
        });
        let restarts = self.slots.iter().filter_map(|s| s.restart_at);
        workers.chain(restarts).min()
    }

    /// Everything `reuseport-launch status` shows.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut workers: Vec<WorkerRow> = self
            .workers
            .iter()
            .map(|w| WorkerRow {
                generation: w.generation,
                slot: w.slot,
                pid: w.pid.as_raw(),
                state: match w.phase {
                    WorkerPhase::Starting { .. } => "starting",
                    WorkerPhase::Ready => "ready",
                    WorkerPhase::Stopping { .. } | WorkerPhase::Draining { .. } => "draining",
                },
                uptime: now.saturating_duration_since(w.spawned_at),
                restarts: if w.generation == self.active {
                    self.slots.get(w.slot).map_or(0, |s| s.restarts)
                } else {
                    0
                },
                ready_after: w.ready_after,
                status: w.status.clone(),
            })
            .collect();
        workers.sort_by_key(|w| (w.generation, w.slot, w.pid));
        Snapshot {
            phase: match self.phase {
                Phase::Starting => "starting",
                Phase::Serving => "serving",
                Phase::Reloading { .. } => "reloading",
                Phase::Stopping { .. } | Phase::Finished(_) => "stopping",
            },
            active: self.active,
            wanted: self.policy.workers,
            status_line: self.status_line(),
            last_reload: self.last_reload.clone(),
            workers,
        }
    }

    /// A one-line summary for humans and for systemd's STATUS=.
    pub fn status_line(&self) -> String {
        let ready = self.count(self.active, |p| p == WorkerPhase::Ready);
        let base = format!(
            "gen {}: {}/{} ready",
            self.active, ready, self.policy.workers
        );
        match (&self.phase, &self.last_reload) {
            (Phase::Starting, _) => {
                format!("gen 1 starting: {}/{} ready", ready, self.policy.workers)
            }
            (Phase::Reloading { next, .. }, _) => {
                let next_ready = self.count(*next, |p| p == WorkerPhase::Ready);
                format!(
                    "{base}; reloading to gen {next}: {next_ready}/{} ready",
                    self.policy.workers
                )
            }
            (Phase::Stopping { .. } | Phase::Finished(_), _) => {
                format!("stopping: {} workers left", self.workers.len())
            }
            (_, Some(ReloadResult::Succeeded { took, .. })) => {
                format!("{base}; last reload ok in {} ms", took.as_millis())
            }
            (_, Some(ReloadResult::Failed { generation, reason })) => {
                format!("{base}; reload to gen {generation} failed: {reason}")
            }
            (_, None) => base,
        }
    }

    fn count(&self, generation: u32, phase: impl Fn(WorkerPhase) -> bool) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == generation && phase(w.phase))
            .count()
    }

    fn spawn_generation(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        now: Instant,
    ) -> Result<(), String> {
        for slot in 0..self.policy.workers {
            self.spawn_worker(processes, generation, slot, now)?;
        }
        Ok(())
    }

    fn spawn_worker(
        &mut self,
        processes: &mut impl Processes,
        generation: u32,
        slot: usize,
        now: Instant,
    ) -> Result<(), String> {
        let pid = processes.spawn(generation, slot).map_err(|e| {
            format!("unable to spawn worker {slot} of generation {generation}: {e}")
        })?;
        debug!("worker {slot} (pid {pid}, gen {generation}) spawned");
        self.workers.push(Worker {
            slot,
            generation,
            pid,
            phase: WorkerPhase::Starting {
                ready_deadline: now + self.policy.ready_timeout,
            },
            spawned_at: now,
            ready_after: None,
            status: None,
            last_watchdog: None,
            spoke_notify: false,
            listening: false,
        });
        Ok(())
    }

    fn on_worker_ready(&mut self, processes: &mut impl Processes, generation: u32, now: Instant) {
        let ready = self.count(generation, |p| p == WorkerPhase::Ready);
        let total = self.policy.workers;
        match self.phase {
            Phase::Starting | Phase::Reloading { .. } if generation == self.newest => {
                info!("generation {generation}: {ready}/{total} workers ready");
                if ready == total {
                    self.promote(processes, generation, now);
                } else {
                    self.announce_status();
                }
            }
            _ if generation == self.active => {
                info!("generation {generation}: {ready}/{total} workers ready (slot refilled)")
            }
            _ => {}
        }
    }

    /// Every worker of `generation` is ready: it becomes the active generation.
    fn promote(&mut self, processes: &mut impl Processes, generation: u32, now: Instant) {
        let (requested, previous) = match self.phase {
            Phase::Reloading { started, .. } => (started, Some(self.active)),
            _ => (self.started, None),
        };
        let took = now.saturating_duration_since(requested);
        info!(
            "generation {generation} serving: {} workers ready in {} ms",
            self.policy.workers,
            took.as_millis()
        );
        self.active = generation;
        self.slots = vec![Slot::default(); self.policy.workers];
        self.phase = Phase::Serving;
        if let Some(old) = previous {
            let result = ReloadResult::Succeeded { generation, took };
            self.last_reload = Some(result.clone());
            self.announcements.push(Announcement::ReloadEnded {
                seq: self.reloads_started,
                result,
            });
            let old_pids: Vec<Pid> = self
                .workers
                .iter()
                .filter(|w| w.generation == old)
                .map(|w| w.pid)
                .collect();
            info!("generation {old}: stopping {} workers", old_pids.len());
            for pid in old_pids {
                self.stop_worker(processes, pid, now);
            }
            self.retiring.push(Retiring {
                generation: old,
                successor: generation,
                reload_requested: requested,
                signalled: now,
            });
            self.retire_if_gone(old, now);
        } else {
            self.announcements.push(Announcement::Ready);
        }
        self.announce_status();
        if std::mem::take(&mut self.reload_queued) {
            self.start_reload(processes, now);
        }
    }

    fn start_reload(&mut self, processes: &mut impl Processes, now: Instant) {
        self.newest += 1;
        self.reloads_started += 1;
        let next = self.newest;
        info!(
            "reload: starting generation {next} ({} workers) beside generation {}",
            self.policy.workers, self.active
        );
        self.phase = Phase::Reloading { next, started: now };
        self.announcements.push(Announcement::Reloading);
        self.announce_status();
        if let Err(reason) = self.spawn_generation(processes, next, now) {
            self.fail_reload(processes, reason, now);
        }
    }

    fn fail_reload(&mut self, processes: &mut impl Processes, reason: String, now: Instant) {
        let Phase::Reloading { next, .. } = self.phase else {
            error!("reload failure outside a reload ({reason}); this is a bug in reuseport-launch");
            return;
        };
        warn!(
            "reload to generation {next} failed: {reason}; generation {} keeps serving",
            self.active
        );
        let doomed: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.generation == next)
            .map(|w| w.pid)
            .collect();
        for pid in doomed {
            self.stop_worker(processes, pid, now);
        }
        let result = ReloadResult::Failed {
            generation: next,
            reason,
        };
        self.last_reload = Some(result.clone());
        self.announcements.push(Announcement::ReloadEnded {
            seq: self.reloads_started,
            result,
        });
        self.phase = Phase::Serving;
        self.announce_status();
        if std::mem::take(&mut self.reload_queued) {
            self.start_reload(processes, now);
        }
    }

    fn fail_start(&mut self, processes: &mut impl Processes, reason: String, now: Instant) {
        error!("generation 1 failed to start: {reason}");
        self.stop_all(processes, Outcome::StartFailed(reason), now);
    }

    fn stop_all(&mut self, processes: &mut impl Processes, outcome: Outcome, now: Instant) {
        let live: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| !w.is_stopping())
            .map(|w| w.pid)
            .collect();
        if outcome == Outcome::Stopped {
            info!(
                "stopping {} workers ({} after their drain; SIGKILL {:.1}s later)",
                live.len(),
                self.policy.stop_signal.as_str(),
                self.policy.stop_timeout.as_secs_f64()
            );
        }
        for pid in live {
            self.stop_worker(processes, pid, now);
        }
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        self.reload_queued = false;
        self.phase = Phase::Stopping { outcome };
        self.announcements.push(Announcement::Stopping);
        self.announce_status();
        self.finish_if_stopped();
    }

    /// Starts stopping a worker: listener drain first where it applies, else the stop signal.
    fn stop_worker(&mut self, processes: &mut impl Processes, pid: Pid, now: Instant) {
        let Some(worker) = self.workers.iter().find(|w| w.pid == pid) else {
            return;
        };
        let drain_listener = worker.phase == WorkerPhase::Ready
            && self.keeps_listeners(worker)
            && processes.close_listeners(pid);
        let phase = if drain_listener {
            debug!(
                "{}: listener closed; draining its connections",
                describe(worker)
            );
            WorkerPhase::Draining {
                signal_at: now + self.policy.stop_timeout,
                next_check: now + DRAIN_CHECK_INTERVAL,
            }
        } else {
            processes.ask_to_stop(pid, self.policy.stop_signal);
            WorkerPhase::Stopping {
                kill_at: Some(now + self.policy.stop_timeout),
            }
        };
        if let Some(worker) = self.workers.iter_mut().find(|w| w.pid == pid) {
            worker.phase = phase;
        }
    }

    /// Whether the launcher drains this worker by its listener (and so keeps copies of its listeners).
    fn keeps_listeners(&self, worker: &Worker) -> bool {
        match self.policy.drain {
            DrainMode::Signal => false,
            DrainMode::Listener => true,
            DrainMode::Auto => !self.server_speaks_notify && !worker.spoke_notify,
        }
    }

    /// Draining workers whose connections are gone, or whose time is up, get the stop signal.
    fn signal_drained(&mut self, processes: &mut impl Processes, now: Instant) {
        for worker in &mut self.workers {
            let WorkerPhase::Draining {
                signal_at,
                next_check,
            } = worker.phase
            else {
                continue;
            };
            if next_check > now {
                continue;
            }
            let idle = !processes.has_connections(worker.pid);
            if idle || signal_at <= now {
                // Counting connections reads /proc and may take a while on a loaded machine: the
                // SIGKILL grace period starts when the signal is really sent.
                let signalled_at = now.max(Instant::now());
                let why = if idle {
                    "no connections left"
                } else {
                    "--stop-timeout passed"
                };
                debug!(
                    "{}: {why}; sending {}",
                    describe(worker),
                    self.policy.stop_signal.as_str()
                );
                processes.ask_to_stop(worker.pid, self.policy.stop_signal);
                worker.phase = WorkerPhase::Stopping {
                    kill_at: Some(signalled_at + self.policy.stop_timeout),
                };
            } else {
                worker.phase = WorkerPhase::Draining {
                    signal_at,
                    next_check: now + DRAIN_CHECK_INTERVAL,
                };
            }
        }
    }

    fn kill_overdue(&mut self, processes: &mut impl Processes, now: Instant) {
        for worker in &mut self.workers {
            if let WorkerPhase::Stopping { kill_at: Some(at) } = worker.phase {
                if at <= now {
                    warn!(
                        "{} still running {:.1}s after {}; sending SIGKILL",
                        describe(worker),
                        self.policy.stop_timeout.as_secs_f64(),
                        self.policy.stop_signal.as_str()
                    );
                    processes.signal(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Stopping { kill_at: None };
                }
            }
        }
    }

    /// Stops a misbehaving worker of the active generation and schedules its slot's restart.
    fn replace(
        &mut self,
        processes: &mut impl Processes,
        worker: &Worker,
        reason: &str,
        now: Instant,
    ) {
        self.stop_worker(processes, worker.pid, now);
        let slot = &mut self.slots[worker.slot];
        let (delay, in_a_row) = slot.backoff.record_failure(Duration::ZERO);
        slot.restart_at = Some(now + delay);
        warn!(
            "{reason}; replacing it in {} ({} failure in a row)",
            format_delay(delay),
            ordinal(in_a_row)
        );
    }

    fn watchdog_overdue(&self, now: Instant) -> Option<Worker> {
        let limit = self.policy.watchdog?;
        self.workers
            .iter()
            .find(|w| {
                w.phase == WorkerPhase::Ready && w.last_watchdog.is_some_and(|at| at + limit <= now)
            })
            .cloned()
    }

    fn schedule_restart(&mut self, worker: &Worker, reason: ExitReason, now: Instant) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Finished(_)) {
            return;
        }
        let slot = &mut self.slots[worker.slot];
        let (delay, in_a_row) = slot
            .backoff
            .record_failure(now.saturating_duration_since(worker.spawned_at));
        slot.restart_at = Some(now + delay);
        let when = if worker.phase == WorkerPhase::Ready {
            ""
        } else {
            " before ready"
        };
        warn!(
            "{} exited with {reason}{when}; restarting in {} ({} failure in a row)",
            describe(worker),
            format_delay(delay),
            ordinal(in_a_row)
        );
        self.announce_status();
    }

    fn restart_due(&mut self, processes: &mut impl Processes, now: Instant) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].restart_at.is_none_or(|at| at > now) {
                continue;
            }
            self.slots[slot].restart_at = None;
            self.slots[slot].restarts += 1;
            let generation = self.active;
            if let Err(reason) = self.spawn_worker(processes, generation, slot, now) {
                let (delay, in_a_row) = self.slots[slot].backoff.record_failure(Duration::ZERO);
                self.slots[slot].restart_at = Some(now + delay);
                warn!(
                    "{reason}; retrying in {} ({} failure in a row)",
                    format_delay(delay),
                    ordinal(in_a_row)
                );
            }
        }
    }

    /// Logs the end of a reload once the last process of the retired generation is gone.
    fn retire_if_gone(&mut self, generation: u32, now: Instant) {
        if self.workers.iter().any(|w| w.generation == generation) {
            return;
        }
        if let Some(index) = self
            .retiring
            .iter()
            .position(|r| r.generation == generation)
        {
            let r = self.retiring.remove(index);
            info!(
                "generation {} gone {} ms after the stop signal; reload to generation {} done in {} ms",
                r.generation,
                now.saturating_duration_since(r.signalled).as_millis(),
                r.successor,
                now.saturating_duration_since(r.reload_requested).as_millis()
            );
        }
    }

    fn finish_if_stopped(&mut self) {
        if let Phase::Stopping { outcome } = &self.phase {
            if self.workers.is_empty() {
                self.phase = Phase::Finished(outcome.clone());
            }
        }
    }

    fn announce_status(&mut self) {
        self.announcements
            .push(Announcement::Status(self.status_line()));
    }
}

/// "worker 2 (pid 1234, gen 3)"
fn describe(worker: &Worker) -> String {
    format!(
        "worker {} (pid {}, gen {})",
        worker.slot, worker.pid, worker.generation
    )
}

/// "100 ms" below a second, "2.2s" above.
fn format_delay(delay: Duration) -> String {
    if delay < Duration::from_secs(1) {
        format!("{} ms", delay.as_millis())
    } else {
        format!("{:.1}s", delay.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
