//! `--max-memory`: every `--memory-check-interval` the memory of each ready worker of the serving
//! generation is read (`Processes::memory`: the PSS of its process tree), and one that uses more than
//! the limit is replaced in its slot without losing capacity (replacement.rs): its replacement starts
//! beside it, and it serves until that one is ready. Invariant: one reading per worker per interval,
//! and a timer, never a busy loop; no replacement while a reload, a probation or a stop is under way
//! (a reload replaces every worker anyway); a slot whose workers outgrow the limit before they have
//! proved stable waits a growing backoff between its replacements.

use std::collections::HashSet;
use std::time::Instant;

use log::{debug, warn};
use nix::unistd::Pid;

use super::backoff::{ordinal, Backoff, STABLE_UPTIME};
use super::{
    describe, format_delay, Launcher, MemoryPolicy, Phase, Processes, ReplaceReason, WorkerPhase,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// When memory is read next, and what each slot's replacements have been.
#[derive(Debug)]
pub(super) struct MemoryWatch {
    check_at: Option<Instant>,
    /// By slot: memory replacements in a row of workers younger than STABLE_UPTIME, and when the
    /// slot's next one may start.
    slots: Vec<(Backoff, Option<Instant>)>,
    /// Workers whose memory could not be read, already logged once.
    unreadable: HashSet<Pid>,
}

impl MemoryWatch {
    pub(super) fn new(policy: Option<MemoryPolicy>, now: Instant) -> MemoryWatch {
        MemoryWatch {
            check_at: policy.map(|p| now + p.interval),
            slots: Vec::new(),
            unreadable: HashSet::new(),
        }
    }

    /// When the workers' memory is read next; None without `--max-memory`.
    pub(super) fn next_check(&self) -> Option<Instant> {
        self.check_at
    }

    fn slot(&mut self, slot: usize) -> &mut (Backoff, Option<Instant>) {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Default::default);
        }
        &mut self.slots[slot]
    }
}

impl Launcher {
    /// Reads the serving workers' memory when the check is due, and starts the replacement of each
    /// one over `--max-memory`.
    pub(super) fn check_memory(&mut self, processes: &mut impl Processes, now: Instant) {
        let Some(policy) = self.policy.memory else {
            return;
        };
        if self.memory.check_at.is_none_or(|at| at > now) {
            return;
        }
        self.memory.check_at = Some(now + policy.interval);
        if self.phase != Phase::Serving || self.probation.is_some() {
            return;
        }
        let candidates: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| {
                w.generation == self.slot_generation(w.slot) && w.phase == WorkerPhase::Ready
            })
            .filter(|w| w.replacing.is_none())
            .map(|w| w.pid)
            .collect();
        let live: Vec<Pid> = self.workers.iter().map(|w| w.pid).collect();
        self.memory.unreadable.retain(|pid| live.contains(pid));
        for pid in candidates {
            self.judge_memory(processes, pid, policy, now);
        }
    }

    fn judge_memory(
        &mut self,
        processes: &mut impl Processes,
        pid: Pid,
        policy: MemoryPolicy,
        now: Instant,
    ) {
        let Some(worker) = self.workers.iter().find(|w| w.pid == pid) else {
            return;
        };
        let name = describe(worker);
        let (slot, uptime) = (
            worker.slot,
            now.saturating_duration_since(worker.spawned_at),
        );
        let Some(bytes) = processes.memory(pid) else {
            if self.memory.unreadable.insert(pid) {
                warn!(
                    "{name}: unable to read its memory (/proc/{pid}/smaps_rollup); --max-memory \
                     cannot judge it (a server that makes itself non-dumpable needs a root launcher)"
                );
            }
            return;
        };
        let limit = format_size(policy.limit_bytes);
        if bytes <= policy.limit_bytes {
            debug!(
                "{name} uses {} PSS (--max-memory {limit})",
                format_mib(bytes)
            );
            return;
        }
        let (backoff, not_before) = self.memory.slot(slot);
        if let Some(at) = not_before.filter(|&at| at > now) {
            debug!(
                "{name} uses {} PSS > --max-memory {limit}; its slot's next replacement waits {}",
                format_mib(bytes),
                format_delay(at.saturating_duration_since(now))
            );
            return;
        }
        let (delay, in_a_row) = backoff.record_failure(uptime);
        *not_before = Some(now + delay);
        let churn = if in_a_row > 1 {
            format!(
                " (the {} in a row in this slot of a worker up less than {}s; the slot's next \
                 replacement waits {} at least)",
                ordinal(in_a_row),
                STABLE_UPTIME.as_secs(),
                format_delay(delay)
            )
        } else {
            String::new()
        };
        warn!(
            "{name} uses {} PSS > --max-memory {limit}: replacing it in slot {slot}; it keeps serving \
             until its replacement is ready{churn}",
            format_mib(bytes)
        );
        if let Err(reason) = self.start_replacement(processes, pid, ReplaceReason::Memory, now) {
            warn!(
                "{reason}; {name} keeps serving, and the check in {} tries again",
                format_delay(policy.interval.max(delay))
            );
        }
    }
}

/// "530.2 MiB"
pub fn format_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// A size as `--max-memory` takes it: "2G", "512M", "300K", or "1000000" (bytes).
pub fn format_size(bytes: u64) -> String {
    match bytes {
        0 => "0".into(),
        b if b % GIB == 0 => format!("{}G", b / GIB),
        b if b % MIB == 0 => format!("{}M", b / MIB),
        b if b % KIB == 0 => format!("{}K", b / KIB),
        b => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_back_as_written() {
        assert_eq!(format_size(512 * MIB), "512M");
        assert_eq!(format_size(2 * GIB), "2G");
        assert_eq!(format_size(1536 * KIB), "1536K");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_mib(530 * MIB + MIB / 5), "530.2 MiB");
    }
}
