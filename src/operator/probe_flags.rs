//! The flags of per-worker probes: `--ready http:PATH` (a value of `--ready`) and the `--health`
//! group, parsed and validated here so cli.rs stays one screenful per concern. Invariant: an HTTP
//! check is only accepted where the launcher can route its probe to the worker it means.

use std::time::Duration;

use crate::kernel::probes::HealthKind;
use crate::launcher::HealthPolicy;

/// Longest `--health-interval`/`--health-timeout`: a day; longer is a typo, and a check that rare
/// protects nothing.
const MAX_HEALTH_SECS: f64 = 86_400.0;
/// Most `--health-failures`: beyond this a sick worker serves errors for too long to call it checked.
const MAX_HEALTH_FAILURES: u32 = 1000;

/// `--ready` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyArg {
    Notify,
    Listen,
    Auto,
    /// `http:PATH`
    Http(String),
}

/// `--ready notify|listen|auto|http:PATH`.
pub fn parse_ready(text: &str) -> Result<ReadyArg, String> {
    match text {
        "notify" => Ok(ReadyArg::Notify),
        "listen" => Ok(ReadyArg::Listen),
        "auto" => Ok(ReadyArg::Auto),
        _ => match text.strip_prefix("http:") {
            Some(path) => Ok(ReadyArg::Http(http_path(path)?)),
            None => {
                Err("expected notify, listen, auto or http:PATH (such as http:/healthz)".into())
            }
        },
    }
}

/// `--health http:PATH|ipc`.
pub fn parse_health(text: &str) -> Result<HealthKind, String> {
    match (text, text.strip_prefix("http:")) {
        ("ipc", _) => Ok(HealthKind::Ipc),
        (_, Some(path)) => Ok(HealthKind::Http(http_path(path)?)),
        _ => Err("expected http:PATH (such as http:/healthz) or ipc".into()),
    }
}

fn http_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(path.to_string())
    } else {
        Err(format!(
            "expected http:PATH with PATH starting with / and without spaces, such as http:/healthz (got {path:?})"
        ))
    }
}

/// The `--health` group of flags.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Check every ready worker: `http:PATH` (GET PATH over a connection steered to that very
    /// worker answers 2xx; needs steering) or `ipc` (Node: the message `healthcheck` over the IPC
    /// channel is answered `healthy`). A worker failing --health-failures checks in a row is
    /// replaced: its replacement starts in the same slot, and once it is ready the sick one is
    /// steered out and drained [default: off]
    #[arg(long, value_name = "CHECK", value_parser = parse_health)]
    pub health: Option<HealthKind>,

    /// Seconds from a worker's ready (or its last check) to its next health check
    #[arg(long, value_name = "SECS", default_value = "10")]
    pub health_interval: f64,

    /// Seconds one health check may take before it counts as failed
    #[arg(long, value_name = "SECS", default_value = "2")]
    pub health_timeout: f64,

    /// Failed health checks in a row that get a worker replaced
    #[arg(long, value_name = "N", default_value = "3")]
    pub health_failures: u32,

    /// After a reload's new generation is ready, keep the old one alive (receiving nothing, not
    /// signalled) this many seconds; a new worker that exits or fails its health checks meanwhile
    /// rolls the reload back to it at once; 0: off
    #[arg(long, value_name = "SECS", default_value = "0")]
    pub probation: f64,
}

impl HealthArgs {
    /// `--probation`, validated.
    pub fn probation(&self) -> Result<Duration, String> {
        match self.probation {
            0.0 => Ok(Duration::ZERO),
            secs if secs > 0.0 && secs <= MAX_HEALTH_SECS => Ok(Duration::from_secs_f64(secs)),
            secs => Err(format!(
                "--probation {secs}: expected seconds from 0 to {MAX_HEALTH_SECS}"
            )),
        }
    }

    /// The checks, validated: `sees_listeners` (injection or --listen: the launcher holds copies of
    /// the workers' listeners), `steer_off` (--steer off), `node_ipc` (workers have an IPC channel).
    pub fn resolve(
        &self,
        sees_listeners: bool,
        steer_off: bool,
        node_ipc: bool,
    ) -> Result<Option<(HealthKind, HealthPolicy)>, String> {
        let Some(kind) = self.health.clone() else {
            return Ok(None);
        };
        match &kind {
            HealthKind::Http(_) if steer_off => return Err(
                "--health http needs steering (a probe cannot choose its worker otherwise: the kernel would hand it \
                 to any worker of the port); drop --steer off, or use --health ipc for Node workers".into(),
            ),
            HealthKind::Http(_) if !sees_listeners => return Err(
                "--health http needs injection or --listen (the probe connects to the listener the launcher holds \
                 a copy of); drop --no-inject".into(),
            ),
            HealthKind::Ipc if !node_ipc => return Err(
                "--health ipc needs the Node IPC channel: PROGRAM must be node, or add --node-ipc".into(),
            ),
            _ => {}
        }
        let seconds = |flag: &str, value: f64| {
            if value > 0.0 && value <= MAX_HEALTH_SECS {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(format!(
                    "{flag} {value}: expected seconds above 0, at most {MAX_HEALTH_SECS}"
                ))
            }
        };
        if self.health_failures == 0 || self.health_failures > MAX_HEALTH_FAILURES {
            return Err(format!(
                "--health-failures {}: expected 1 to {MAX_HEALTH_FAILURES}",
                self.health_failures
            ));
        }
        let policy = HealthPolicy {
            interval: seconds("--health-interval", self.health_interval)?,
            timeout: seconds("--health-timeout", self.health_timeout)?,
            failures: self.health_failures,
        };
        Ok(Some((kind, policy)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_health_values_parse_or_say_what_to_type() {
        assert_eq!(
            parse_ready("http:/healthz"),
            Ok(ReadyArg::Http("/healthz".into()))
        );
        assert!(parse_ready("http:healthz")
            .unwrap_err()
            .contains("such as http:/healthz"));
        assert_eq!(parse_health("ipc"), Ok(HealthKind::Ipc));
        assert_eq!(parse_health("http:/up"), Ok(HealthKind::Http("/up".into())));
        assert!(parse_health("tcp").unwrap_err().contains("or ipc"));
    }

    #[test]
    fn health_http_needs_steering_and_ipc_needs_the_channel() {
        let args = |health| HealthArgs {
            health: Some(health),
            health_interval: 10.0,
            health_timeout: 2.0,
            health_failures: 3,
            probation: 0.0,
        };
        let http = args(HealthKind::Http("/h".into()));
        assert!(http
            .resolve(true, true, false)
            .unwrap_err()
            .contains("a probe cannot choose its worker"));
        assert!(http.resolve(true, false, false).unwrap().is_some());
        assert!(args(HealthKind::Ipc)
            .resolve(true, true, false)
            .unwrap_err()
            .contains("--node-ipc"));
        assert!(args(HealthKind::Ipc)
            .resolve(false, true, true)
            .unwrap()
            .is_some());
    }
}
