//! The launcher's Prometheus metrics for the admin endpoint's `/metrics`, encoded by the
//! `prometheus-client` crate. Counters and the reload histogram are fed by the decisions'
//! `Announcement`s (what the launcher did); the gauges are read from a `Snapshot` at every scrape (what
//! is), the kernel's migration counters from kernel/netstat.rs. Invariant: nothing here decides anything, and the metric names are an interface: they never
//! change.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::kernel::netstat;
use crate::launcher::{Announcement, ReloadResult, ReplaceReason, Snapshot};

/// The two exposition formats served: OpenMetrics (what the crate encodes; Prometheus asks for it in
/// its Accept header) and the classic Prometheus text format 0.0.4 (everyone else: curl, older
/// scrapers, text-format parsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    /// The format a client's Accept header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Upper bounds of the reload-duration buckets, in seconds: a reload takes milliseconds for a small
/// server and up to --ready-timeout (60 s by default) for a slow one.
const RELOAD_BUCKETS_SECS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every worker state the `reuseport_launch_workers` gauge reports, zero or not.
const WORKER_STATES: [&str; 5] = ["starting", "ready", "handover", "draining", "stopping"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The kernel's tcp_migrate_req counters of the launcher's network namespace, read at every scrape.
#[derive(Debug)]
struct MigrateReqCollector;

impl Collector for MigrateReqCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counters) = netstat::migrate_req() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "reuseport_launch_tcp_migrate_req",
            "Queued connections the kernel moved (success) or failed to move (failure) from a closing \
             listener to another of its port (net.ipv4.tcp_migrate_req; TcpExt of the launcher's network namespace)",
            None,
            MetricType::Counter,
        )?;
        for (result, value) in [("success", counters.success), ("failure", counters.failure)] {
            ConstCounter::new(value).encode(family.encode_family(&ResultLabel { result })?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    generation: u32,
    slot: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabel {
    slot: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reloads: Family<ResultLabel, Counter>,
    reload_duration: Histogram,
    workers: Family<StateLabel, Gauge>,
    restarts: Counter,
    generation: Gauge,
    slot_generation: Family<SlotLabel, Gauge>,
    accept_queue: Family<WorkerLabel, Gauge>,
    udp_flows: Family<WorkerLabel, Gauge>,
    replacements: Family<ReasonLabel, Counter>,
    memory: Family<WorkerLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let reloads = Family::<ResultLabel, Counter>::default();
        let reload_duration = Histogram::new(RELOAD_BUCKETS_SECS);
        let workers = Family::<StateLabel, Gauge>::default();
        let restarts = Counter::default();
        let generation = Gauge::default();
        let slot_generation = Family::<SlotLabel, Gauge>::default();
        let accept_queue = Family::<WorkerLabel, Gauge>::default();
        let udp_flows = Family::<WorkerLabel, Gauge>::default();
        let replacements = Family::<ReasonLabel, Counter>::default();
        let memory = Family::<WorkerLabel, Gauge>::default();
        let mut registry = Registry::default();
        registry.register(
            "reuseport_launch_reloads",
            "Reloads that ended, by result (failed: rolled back, the old generation kept serving)",
            reloads.clone(),
        );
        registry.register_with_unit(
            "reuseport_launch_reload_duration",
            "Time from a reload's request until every new worker was ready, for succeeded reloads",
            Unit::Seconds,
            reload_duration.clone(),
        );
        registry.register(
            "reuseport_launch_workers",
            "Live worker processes of every generation, by state",
            workers.clone(),
        );
        registry.register(
            "reuseport_launch_worker_restarts",
            "Workers of the serving generation started again after a crash, a missed ready deadline or a watchdog",
            restarts.clone(),
        );
        registry.register(
            "reuseport_launch_generation",
            "The generation that serves (during a reload: the one being replaced)",
            generation.clone(),
        );
        registry.register(
            "reuseport_launch_slot_generation",
            "The generation serving each slot: during a batched reload (--max-surge) and after a failed batch, slots differ",
            slot_generation.clone(),
        );
        registry.register(
            "reuseport_launch_accept_queue",
            "Connections waiting in a worker's listeners' accept queues, for the workers whose listeners the launcher holds",
            accept_queue.clone(),
        );
        registry.register(
            "reuseport_launch_udp_flows",
            "Live UDP flows of a worker (seen within --udp-flow-idle), with --udp-flow-idle",
            udp_flows.clone(),
        );
        registry.register(
            "reuseport_launch_worker_replacements",
            "Serving workers whose replacement was started beside them in their slot, by reason: health (--health-failures) or memory (--max-memory)",
            replacements.clone(),
        );
        registry.register_with_unit(
            "reuseport_launch_worker_memory",
            "The PSS of a worker's process tree, as --max-memory judges it; with --max-memory",
            Unit::Bytes,
            memory.clone(),
        );
        registry.register_collector(Box::new(MigrateReqCollector));
        for reason in ["health", "memory"] {
            let _ = replacements.get_or_create(&ReasonLabel { reason });
        }
        // Both results exist from the start, so a rate() sees the first failure.
        for result in ["succeeded", "failed"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        Metrics {
            registry,
            reloads,
            reload_duration,
            workers,
            restarts,
            generation,
            slot_generation,
            accept_queue,
            udp_flows,
            replacements,
            memory,
        }
    }

    /// Counts what the launcher did.
    pub fn on_announcement(&mut self, announcement: &Announcement) {
        match announcement {
            Announcement::ReloadEnded {
                result: ReloadResult::Succeeded { took, .. },
                ..
            } => {
                self.reloads
                    .get_or_create(&ResultLabel {
                        result: "succeeded",
                    })
                    .inc();
                self.reload_duration.observe(took.as_secs_f64());
            }
            Announcement::ReloadEnded {
                result: ReloadResult::Failed { .. },
                ..
            } => {
                self.reloads
                    .get_or_create(&ResultLabel { result: "failed" })
                    .inc();
            }
            Announcement::Restarted { .. } => {
                self.restarts.inc();
            }
            Announcement::Replacing { reason, .. } => {
                let reason = match reason {
                    ReplaceReason::Health => "health",
                    ReplaceReason::Memory => "memory",
                };
                self.replacements
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            _ => {}
        }
    }

    /// The exposition text in `format`, with the gauges read from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot, format: Format) -> String {
        self.generation.set(i64::from(snapshot.active));
        // `scale` can remove slots: only the current ones are reported.
        self.slot_generation.clear();
        for (slot, &generation) in snapshot.slots.iter().enumerate() {
            self.slot_generation
                .get_or_create(&SlotLabel { slot: slot as u32 })
                .set(i64::from(generation));
        }
        for state in WORKER_STATES {
            let count = snapshot.workers.iter().filter(|w| w.state == state).count();
            self.workers
                .get_or_create(&StateLabel { state })
                .set(count as i64);
        }
        // Workers come and go: only the live ones with a known queue are reported.
        self.accept_queue.clear();
        self.udp_flows.clear();
        self.memory.clear();
        for w in &snapshot.workers {
            if let Some(bytes) = w.memory_bytes {
                let label = WorkerLabel {
                    generation: w.generation,
                    slot: w.slot as u32,
                };
                self.memory
                    .get_or_create(&label)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            if let Some(flows) = w.udp_flows {
                let label = WorkerLabel {
                    generation: w.generation,
                    slot: w.slot as u32,
                };
                self.udp_flows.get_or_create(&label).set(i64::from(flows));
            }
            if let Some(depth) = w.accept_queue {
                let label = WorkerLabel {
                    generation: w.generation,
                    slot: w.slot as u32,
                };
                self.accept_queue
                    .get_or_create(&label)
                    .set(i64::from(depth));
            }
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            log::error!("encoding /metrics failed: {e}; this is a bug in reuseport-launch");
        }
        match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => to_prometheus_text(&out),
        }
    }
}

/// OpenMetrics text to Prometheus text 0.0.4, for the metrics this file registers: a counter's HELP and
/// TYPE name its `_total` sample (OpenMetrics names the family without it), and the `# UNIT` and
/// `# EOF` lines, which the older format does not have, go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(active: u32, states: &[&'static str]) -> Snapshot {
        Snapshot {
            phase: "serving",
            active,
            wanted: states.len(),
            status_line: String::new(),
            last_reload: None,
            slots: vec![active; states.len()],
            workers: states
                .iter()
                .enumerate()
                .map(|(slot, &state)| crate::launcher::WorkerRow {
                    health: None,
                    generation: active,
                    slot,
                    pid: 100 + slot as i32,
                    state,
                    uptime: Duration::ZERO,
                    restarts: 0,
                    ready_after: None,
                    status: None,
                    receiving: None,
                    accept_queue: (slot == 0).then_some(7),
                    udp_flows: (slot == 0).then_some(3),
                    memory_bytes: (slot == 0).then_some(5 << 20),
                    replacing: None,
                })
                .collect(),
        }
    }

    #[test]
    fn counters_follow_announcements_and_gauges_the_snapshot() {
        let mut metrics = Metrics::new();
        metrics.on_announcement(&Announcement::ReloadEnded {
            seq: 1,
            result: ReloadResult::Succeeded {
                generation: 2,
                took: Duration::from_millis(30),
            },
        });
        metrics.on_announcement(&Announcement::ReloadEnded {
            seq: 2,
            result: ReloadResult::Failed {
                generation: 3,
                reason: "x".into(),
            },
        });
        metrics.on_announcement(&Announcement::Restarted {
            generation: 2,
            slot: 0,
        });
        metrics.on_announcement(&Announcement::Replacing {
            generation: 2,
            slot: 1,
            reason: ReplaceReason::Memory,
        });
        let text = metrics.render(
            &snapshot(2, &["ready", "ready", "stopping"]),
            Format::PrometheusText,
        );
        for line in [
            "reuseport_launch_reloads_total{result=\"succeeded\"} 1",
            "reuseport_launch_reloads_total{result=\"failed\"} 1",
            "reuseport_launch_reload_duration_seconds_count 1",
            "reuseport_launch_reload_duration_seconds_bucket{le=\"0.05\"} 1",
            "reuseport_launch_reload_duration_seconds_bucket{le=\"0.025\"} 0",
            "reuseport_launch_worker_restarts_total 1",
            "reuseport_launch_generation 2",
            "reuseport_launch_slot_generation{slot=\"0\"} 2",
            "reuseport_launch_slot_generation{slot=\"2\"} 2",
            "reuseport_launch_workers{state=\"ready\"} 2",
            "reuseport_launch_workers{state=\"stopping\"} 1",
            "reuseport_launch_workers{state=\"draining\"} 0",
            "# TYPE reuseport_launch_reloads_total counter",
            "# TYPE reuseport_launch_reload_duration_seconds histogram",
            "# TYPE reuseport_launch_tcp_migrate_req_total counter",
            "reuseport_launch_accept_queue{generation=\"2\",slot=\"0\"} 7",
            "reuseport_launch_udp_flows{generation=\"2\",slot=\"0\"} 3",
            "reuseport_launch_worker_replacements_total{reason=\"memory\"} 1",
            "reuseport_launch_worker_replacements_total{reason=\"health\"} 0",
            "reuseport_launch_worker_memory_bytes{generation=\"2\",slot=\"0\"} 5242880",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        // Scaled down to one slot: the slots that are gone leave /metrics.
        let fewer = metrics.render(&snapshot(2, &["ready"]), Format::PrometheusText);
        assert!(fewer.contains("reuseport_launch_slot_generation{slot=\"0\"} 2"));
        assert!(
            !fewer.contains("reuseport_launch_slot_generation{slot=\"2\"}"),
            "{fewer}"
        );
        let open = metrics.render(&snapshot(2, &["ready"]), Format::OpenMetrics);
        assert!(open.contains("# TYPE reuseport_launch_reloads counter\n"));
        assert!(open.ends_with("# EOF\n"));
    }
}
