//! Unit tests of `--max-memory` (memory.rs, replacement.rs): serving workers' memory is read every
//! interval, and one over the limit is replaced in its slot beside it, steered out only once its
//! replacement is ready; never during a reload; a replacement that fails leaves it serving, with the
//! slot's backoff. With the fake `Processes` and helpers of the parent test module.

use super::*;

const INTERVAL: Duration = Duration::from_secs(1);
const MIB: u64 = 1 << 20;
const LIMIT: u64 = 100 * MIB;

fn limited() -> Policy {
    Policy {
        steer: true,
        memory: Some(MemoryPolicy {
            limit_bytes: LIMIT,
            interval: INTERVAL,
        }),
        ..policy()
    }
}

fn set_memory(p: &mut FakeProcesses, pid: Pid, bytes: u64) {
    p.memory.retain(|(q, _)| *q != pid);
    p.memory.push((pid, bytes));
}

/// A launcher with --max-memory serving generation 1, worker 0 over the limit and worker 1 below.
fn one_worker_too_big() -> (Launcher, FakeProcesses, Instant, Pid, Pid) {
    let (l, mut p, t0) = serving_with(limited());
    let gen1 = pids_of(&p, 1);
    set_memory(&mut p, gen1[0], LIMIT + MIB);
    set_memory(&mut p, gen1[1], LIMIT / 2);
    (l, p, t0, gen1[0], gen1[1])
}

fn replacements(l: &mut Launcher) -> usize {
    l.take_announcements()
        .iter()
        .filter(|a| {
            matches!(
                a,
                Announcement::Replacing {
                    reason: ReplaceReason::Memory,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn a_worker_over_the_limit_is_replaced_beside_it_and_steered_out_once_its_successor_is_ready() {
    let (mut l, mut p, t0, big, neighbour) = one_worker_too_big();
    assert_eq!(
        l.next_deadline(),
        Some(t0 + INTERVAL),
        "the check is a timer"
    );
    l.on_timers(&mut p, t0 + INTERVAL / 2);
    assert!(p.memory_reads.is_empty(), "not read before the interval");
    l.on_timers(&mut p, t0 + INTERVAL);
    assert_eq!(p.memory_reads, [big, neighbour], "each worker read once");
    let spawned = pids_of(&p, 1);
    assert_eq!(spawned.len(), 3, "one replacement, for the big worker only");
    let replacement = spawned[2];
    assert_eq!(p.spawned[2].1, 0, "in the big worker's slot");
    assert_eq!(replacements(&mut l), 1);
    assert_eq!(
        p.receiving(),
        [big, neighbour],
        "the big worker serves meanwhile"
    );
    assert_eq!(l.next_deadline(), Some(t0 + 2 * INTERVAL));
    // The next check reads the neighbour only, and starts no second replacement.
    l.on_timers(&mut p, t0 + 2 * INTERVAL);
    assert_eq!(&p.memory_reads[2..], [neighbour]);
    assert_eq!(pids_of(&p, 1).len(), 3);
    let row = |l: &Launcher, p: &mut FakeProcesses, pid: Pid| {
        l.snapshot(p, t0 + 2 * INTERVAL)
            .workers
            .into_iter()
            .find(|w| w.pid == pid.as_raw())
            .unwrap()
    };
    let big_row = row(&l, &mut p, big);
    assert_eq!(
        (big_row.state, big_row.replacing, big_row.memory_bytes),
        ("ready", Some("memory"), Some(LIMIT + MIB))
    );
    ready(&mut l, &mut p, &[replacement], t0 + 2 * INTERVAL);
    assert_eq!(p.receiving(), [neighbour, replacement]);
    assert_eq!(row(&l, &mut p, big).state, "handover");
    assert!(
        p.signals.is_empty(),
        "nobody signalled before its queue was handed over"
    );
    l.on_timers(&mut p, t0 + 3 * INTERVAL);
    l.on_timers(&mut p, t0 + 4 * INTERVAL);
    assert!(!p.signals.is_empty() && p.signals.iter().all(|(pid, _)| *pid == big));
    assert_eq!(l.phase(), &Phase::Serving);
}

#[test]
fn without_the_flag_memory_is_never_read_and_no_timer_runs() {
    let (mut l, mut p, t0) = serving_with(steering());
    let first = pids_of(&p, 1)[0];
    set_memory(&mut p, first, 1 << 40);
    assert_eq!(l.next_deadline(), None);
    l.on_timers(&mut p, t0 + 10 * INTERVAL);
    assert!(p.memory_reads.is_empty());
    assert!(l
        .snapshot(&mut p, t0)
        .workers
        .iter()
        .all(|w| w.memory_bytes.is_none()));
    assert_eq!(pids_of(&p, 1).len(), 2);
}

#[test]
fn no_memory_replacement_during_a_reload_the_reload_replaces_it() {
    let (mut l, mut p, t0, _big, _) = one_worker_too_big();
    l.request_reload(&mut p, t0);
    l.on_timers(&mut p, t0 + INTERVAL);
    assert_eq!(pids_of(&p, 1).len(), 2, "generation 1 gets no replacement");
    assert_eq!(pids_of(&p, 2).len(), 2);
    assert_eq!(replacements(&mut l), 0);
    let gen2 = pids_of(&p, 2);
    ready(&mut l, &mut p, &gen2, t0 + INTERVAL);
    set_memory(&mut p, gen2[1], LIMIT + 1);
    l.on_timers(&mut p, t0 + 2 * INTERVAL);
    assert_eq!(
        pids_of(&p, 2).len(),
        3,
        "the new generation's big worker is replaced"
    );
    assert_eq!(p.spawned.last().unwrap().1, 1);
}

#[test]
fn a_reload_during_a_replacement_retires_the_big_worker_and_its_replacement_alike() {
    let (mut l, mut p, t0, big, neighbour) = one_worker_too_big();
    l.on_timers(&mut p, t0 + INTERVAL);
    let replacement = pids_of(&p, 1)[2];
    l.request_reload(&mut p, t0 + INTERVAL);
    let gen2 = pids_of(&p, 2);
    assert_eq!(gen2.len(), 2);
    ready(&mut l, &mut p, &gen2, t0 + INTERVAL);
    assert_eq!(p.receiving(), gen2);
    for t in 2..6 {
        l.on_timers(&mut p, t0 + t * INTERVAL);
    }
    for pid in [big, neighbour, replacement] {
        assert!(
            p.signals.iter().any(|&(q, _)| q == pid),
            "{pid} of generation 1 not stopped: {:?}",
            p.signals
        );
        l.on_exit(&mut p, pid, ExitReason::Exited(0), t0 + 6 * INTERVAL);
    }
    l.on_timers(&mut p, t0 + 7 * INTERVAL);
    assert_eq!(pids_of(&p, 1).len(), 3, "nothing of generation 1 restarted");
    assert_eq!(l.phase(), &Phase::Serving);
}

#[test]
fn a_replacement_that_fails_leaves_the_big_worker_serving_and_is_retried_with_backoff() {
    let (mut l, mut p, t0, big, neighbour) = one_worker_too_big();
    l.on_timers(&mut p, t0 + INTERVAL);
    let first = pids_of(&p, 1)[2];
    let t1 = t0 + INTERVAL + SEC / 10;
    l.on_exit(&mut p, first, ExitReason::Exited(1), t1);
    assert_eq!(
        p.receiving(),
        [big, neighbour],
        "the big worker still serves"
    );
    assert_eq!(l.health(), Ok(l.status_line()), "every slot still served");
    l.on_timers(&mut p, t1 + Duration::from_millis(50));
    assert_eq!(pids_of(&p, 1).len(), 3, "not retried before the backoff");
    l.on_timers(&mut p, t1 + Duration::from_millis(100));
    let spawned = pids_of(&p, 1);
    assert_eq!(spawned.len(), 4, "retried in the slot after the backoff");
    assert_eq!(p.spawned[3].1, 0);
    // A replacement that misses its ready deadline: stopped, the big worker serves on.
    let second = spawned[3];
    let late = t1 + Duration::from_millis(100) + l.policy.ready_timeout;
    l.on_timers(&mut p, late);
    assert!(p.signals.iter().any(|&(pid, _)| pid == second));
    assert_eq!(p.receiving(), [big, neighbour]);
    assert!(!p.signals.iter().any(|&(pid, _)| pid == big));
    // The third try gets ready: only then does the big worker leave.
    l.on_exit(&mut p, second, ExitReason::Signaled(Signal::SIGTERM), late);
    l.on_timers(&mut p, late + SEC);
    let third = *pids_of(&p, 1).last().unwrap();
    assert_ne!(third, second);
    ready(&mut l, &mut p, &[third], late + SEC);
    assert_eq!(p.receiving(), [neighbour, third]);
}

#[test]
fn a_big_worker_that_dies_while_its_replacement_starts_gets_no_second_one() {
    let (mut l, mut p, t0, big, neighbour) = one_worker_too_big();
    l.on_timers(&mut p, t0 + INTERVAL);
    let replacement = pids_of(&p, 1)[2];
    l.on_exit(
        &mut p,
        big,
        ExitReason::Signaled(Signal::SIGKILL),
        t0 + INTERVAL,
    );
    l.on_timers(&mut p, t0 + 2 * INTERVAL);
    assert_eq!(pids_of(&p, 1).len(), 3, "no restart beside the replacement");
    ready(&mut l, &mut p, &[replacement], t0 + 2 * INTERVAL);
    assert_eq!(p.receiving(), [neighbour, replacement]);
    assert!(l.health().is_ok());
}

#[test]
fn workers_that_outgrow_the_limit_right_after_start_are_replaced_with_a_growing_backoff() {
    let (mut l, mut p, t0, big, _) = one_worker_too_big();
    let mut now = t0 + INTERVAL;
    let mut current = big;
    let mut replaced_at = Vec::new();
    // Every new worker of slot 0 is over the limit at once (a limit below the server's size).
    for _ in 0..80 {
        l.on_timers(&mut p, now);
        let newest = *pids_of(&p, 1).last().unwrap();
        if newest != current {
            replaced_at.push(now);
            set_memory(&mut p, newest, LIMIT + MIB);
            ready(&mut l, &mut p, &[newest], now);
            l.on_exit(&mut p, current, ExitReason::Exited(0), now);
            current = newest;
        }
        now += INTERVAL;
    }
    let gaps: Vec<u64> = replaced_at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    // 1, 1, 1, 1, 2, 4, 7, 13 s: the backoff doubles up to the point where a worker lived long
    // enough (STABLE_UPTIME) to count as stable, and starts over.
    assert!(
        gaps.len() >= 8,
        "replaced {} times: {gaps:?}",
        replaced_at.len()
    );
    assert!(
        gaps[..8].windows(2).all(|w| w[1] >= w[0]) && gaps[7] >= 7,
        "the gaps grow: {gaps:?}"
    );
    assert!(
        replaced_at.len() < 30,
        "80 checks, {} replacements",
        replaced_at.len()
    );
}

#[test]
fn a_spawn_failure_marks_nothing_and_the_next_check_tries_again() {
    let (mut l, mut p, t0, big, _) = one_worker_too_big();
    p.fail_spawns = true;
    l.on_timers(&mut p, t0 + INTERVAL);
    assert_eq!(replacements(&mut l), 0);
    let row = l.snapshot(&mut p, t0 + INTERVAL);
    assert!(row.workers.iter().all(|w| w.replacing.is_none()));
    p.fail_spawns = false;
    l.on_timers(&mut p, t0 + 2 * INTERVAL);
    assert_eq!(replacements(&mut l), 1);
    assert_eq!(pids_of(&p, 1).len(), 3);
    assert!(p.memory_reads.iter().filter(|&&pid| pid == big).count() >= 2);
}
