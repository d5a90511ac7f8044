//! Renders a launcher `Snapshot` for `reuseport-launch status`: a table for people (in the spirit of
//! `pm2 ls`) and JSON for scripts. Pure formatting; the numbers come from launcher/snapshot.rs.

use std::fmt::Write;
use std::time::Duration;

use crate::launcher::{format_mib, ReloadResult, Snapshot};

pub fn render_table(name: &str, snapshot: &Snapshot) -> String {
    let mut out = format!(
        "{name} (launcher pid {}): {}\n",
        std::process::id(),
        snapshot.status_line
    );
    // The HEALTH column only with --health (once a check has ended): the table stays as it was without.
    let checked = snapshot.workers.iter().any(|w| w.health.is_some());
    // The FLOWS column only with --udp-flow-idle, likewise.
    let flows = snapshot.workers.iter().any(|w| w.udp_flows.is_some());
    // The MEMORY column only with --max-memory, likewise.
    let memory = snapshot.workers.iter().any(|w| w.memory_bytes.is_some());
    let _ = writeln!(
        out,
        "{:>4}  {:>4}  {:>8}  {:<8}  {:>8}  {:>8}  {:>9}  {:>9}  {:>5}{}{}{}",
        "GEN",
        "SLOT",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "READY IN",
        "RECEIVING",
        "QUEUE",
        if flows { "  FLOWS" } else { "" },
        if memory { "  MEMORY (PSS)" } else { "" },
        if checked { "  HEALTH" } else { "" }
    );
    for w in &snapshot.workers {
        let ready = w
            .ready_after
            .map_or_else(|| "-".to_string(), |d| format!("{} ms", d.as_millis()));
        let receiving = match w.receiving {
            None => "-",
            Some(true) => "yes",
            Some(false) => "no",
        };
        let queue = w
            .accept_queue
            .map_or_else(|| "-".to_string(), |q| q.to_string());
        let udp_flows = match w.udp_flows {
            _ if !flows => String::new(),
            None => format!("  {:>5}", "-"),
            Some(n) => format!("  {n:>5}"),
        };
        let memory = match (w.memory_bytes, w.replacing) {
            _ if !memory => String::new(),
            (None, _) => format!("  {:>13}", "-"),
            (Some(bytes), None) => format!("  {:>13}", format_mib(bytes)),
            (Some(bytes), Some(why)) => format!(
                "  {:>13}",
                format!("{} (replacing: {why})", format_mib(bytes))
            ),
        };
        let health = match &w.health {
            _ if !checked => String::new(),
            None => "  -".to_string(),
            Some(h) if h.passed => format!("  ok ({}) {} ago", h.result, human_duration(h.ago)),
            Some(h) => format!(
                "  FAILED {} in a row ({}) {} ago",
                h.failures_in_a_row,
                h.result,
                human_duration(h.ago)
            ),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:>4}  {:>8}  {:<8}  {:>8}  {:>8}  {:>9}  {:>9}  {:>5}{udp_flows}{memory}{health}",
            w.generation,
            w.slot,
            w.pid,
            w.state,
            human_duration(w.uptime),
            w.restarts,
            ready,
            receiving,
            queue
        );
    }
    let slots: Vec<String> = snapshot
        .slots
        .iter()
        .enumerate()
        .map(|(slot, generation)| format!("{slot}=gen {generation}"))
        .collect();
    let _ = writeln!(out, "slots: {}", slots.join(", "));
    match &snapshot.last_reload {
        None => out.push_str("last reload: none yet\n"),
        Some(ReloadResult::Succeeded { generation, took }) => {
            let _ = writeln!(
                out,
                "last reload: ok, generation {generation} serving after {} ms",
                took.as_millis()
            );
        }
        Some(ReloadResult::Failed { generation, reason }) => {
            let _ = writeln!(
                out,
                "last reload: to generation {generation} FAILED: {reason}"
            );
        }
    }
    out
}

pub fn render_json(name: &str, snapshot: &Snapshot) -> String {
    let workers: Vec<String> = snapshot
        .workers
        .iter()
        .map(|w| {
            format!(
                r#"{{"generation":{},"slot":{},"pid":{},"state":"{}","uptime_ms":{},"restarts":{},"ready_ms":{},"status":{},"receiving":{},"accept_queue":{},"udp_flows":{},"memory_bytes":{},"replacing":{},"health":{}}}"#,
                w.generation,
                w.slot,
                w.pid,
                w.state,
                w.uptime.as_millis(),
                w.restarts,
                                w.ready_after.map_or_else(|| "null".to_string(), |d| d.as_millis().to_string()),
                w.status.as_deref().map_or_else(|| "null".to_string(), json_string),
                w.receiving.map_or_else(|| "null".to_string(), |r| r.to_string()),
                w.accept_queue.map_or_else(|| "null".to_string(), |q| q.to_string()),
                w.udp_flows.map_or_else(|| "null".to_string(), |n| n.to_string()),
                w.memory_bytes.map_or_else(|| "null".to_string(), |n| n.to_string()),
                w.replacing.map_or_else(|| "null".to_string(), json_string),
                w.health.as_ref().map_or_else(|| "null".to_string(), |h| format!(
                    r#"{{"ok":{},"result":{},"ago_ms":{},"failures_in_a_row":{}}}"#,
                    h.passed,
                    json_string(&h.result),
                    h.ago.as_millis(),
                    h.failures_in_a_row
                ))
            )
        })
        .collect();
    let last_reload = match &snapshot.last_reload {
        None => "null".to_string(),
        Some(ReloadResult::Succeeded { generation, took }) => {
            format!(
                r#"{{"result":"ok","generation":{generation},"duration_ms":{}}}"#,
                took.as_millis()
            )
        }
        Some(ReloadResult::Failed { generation, reason }) => {
            format!(
                r#"{{"result":"failed","generation":{generation},"reason":{}}}"#,
                json_string(reason)
            )
        }
    };
    let slots: Vec<String> = snapshot
        .slots
        .iter()
        .enumerate()
        .map(|(slot, generation)| format!(r#"{{"slot":{slot},"generation":{generation}}}"#))
        .collect();
    format!(
        r#"{{"name":{},"launcher_pid":{},"phase":"{}","generation":{},"workers_wanted":{},"status":{},"last_reload":{},"slots":[{}],"workers":[{}]}}"#,
        json_string(name),
        std::process::id(),
        snapshot.phase,
        snapshot.active,
        snapshot.wanted,
        json_string(&snapshot.status_line),
        last_reload,
        slots.join(","),
        workers.join(",")
    )
}

/// "3s", "4m05s", "2h10m", "3d04h".
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn durations_read_like_pm2() {
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2h01m");
    }
}
