//! Unit tests of `--ready http:PATH` (probes.rs): when workers are probed and what an answer means,
//! with the fake `Processes` and helpers of the parent test module.

use super::*;
use crate::launcher::probes::PROBE_RETRY_INTERVAL;

fn http_ready() -> Policy {
    Policy {
        ready: ReadyMode::Http,
        steer: true,
        ..policy()
    }
}

fn answered(status: u16) -> ProbeOutcome {
    ProbeOutcome::Answered {
        status,
        excerpt: String::new(),
    }
}

#[test]
fn a_worker_is_probed_once_it_listens_and_ready_only_on_2xx() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(http_ready(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    assert!(p.probes.is_empty(), "nothing is probed before it listens");
    // READY=1 does not count with --ready http.
    ready(&mut l, &mut p, &gen1, t0);
    assert_eq!(l.phase(), &Phase::Starting);
    l.on_listening(&mut p, gen1[0], t0);
    l.on_listening(&mut p, gen1[0], t0);
    assert_eq!(p.probes, [gen1[0]], "one probe at a time");
    l.on_probe(&mut p, gen1[0], Check::Ready, answered(503), t0);
    assert_eq!(l.next_deadline().unwrap(), t0 + PROBE_RETRY_INTERVAL);
    l.on_timers(&mut p, t0 + PROBE_RETRY_INTERVAL / 2);
    assert_eq!(p.probes.len(), 1, "not before the retry interval");
    l.on_timers(&mut p, t0 + PROBE_RETRY_INTERVAL);
    assert_eq!(p.probes, [gen1[0], gen1[0]]);
    l.on_probe(
        &mut p,
        gen1[0],
        Check::Ready,
        ProbeOutcome::Failed("refused".into()),
        t0 + PROBE_RETRY_INTERVAL,
    );
    l.on_timers(&mut p, t0 + 2 * PROBE_RETRY_INTERVAL);
    l.on_probe(
        &mut p,
        gen1[0],
        Check::Ready,
        answered(204),
        t0 + 2 * PROBE_RETRY_INTERVAL,
    );
    assert_eq!(l.phase(), &Phase::Starting, "worker 1 is not ready yet");
    l.on_listening(&mut p, gen1[1], t0);
    l.on_probe(
        &mut p,
        gen1[1],
        Check::Ready,
        answered(200),
        t0 + 2 * PROBE_RETRY_INTERVAL,
    );
    assert_eq!(l.phase(), &Phase::Serving);
    // Ready workers are not probed again.
    l.on_timers(&mut p, t0 + SEC);
    assert_eq!(p.probes.len(), 4);
}

#[test]
fn a_worker_whose_probe_never_passes_fails_the_reload_and_the_old_generation_keeps_serving() {
    let t0 = Instant::now();
    let mut p = FakeProcesses::default();
    let mut l = Launcher::new(http_ready(), t0);
    l.start(&mut p, t0);
    let gen1 = pids_of(&p, 1);
    for &pid in &gen1 {
        l.on_listening(&mut p, pid, t0);
        l.on_probe(&mut p, pid, Check::Ready, answered(200), t0);
    }
    assert_eq!(l.phase(), &Phase::Serving);
    l.request_reload(&mut p, t0);
    let gen2 = pids_of(&p, 2);
    let mut now = t0;
    for &pid in &gen2 {
        l.on_listening(&mut p, pid, now);
    }
    while now < t0 + 6 * SEC {
        for &pid in &gen2 {
            l.on_probe(&mut p, pid, Check::Ready, answered(503), now);
        }
        now += PROBE_RETRY_INTERVAL;
        l.on_timers(&mut p, now);
    }
    assert!(p.probes.iter().filter(|&&x| x == gen2[0]).count() >= 40);
    assert_eq!(p.receiving(), gen1, "the old generation still receives");
    assert!(l.take_announcements().iter().any(|a| matches!(
        a,
        Announcement::ReloadEnded {
            result: ReloadResult::Failed { reason, .. },
            ..
        } if reason.contains("--ready http")
    )));
}
