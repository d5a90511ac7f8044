//! The steering flags' values and bounds: `--steer`, `--handover-grace` and `--udp-flow-idle`, kept
//! here so cli.rs stays one screenful per concern. Invariant: a flow idle time that passes
//! `parse_flow_idle` fits the program's age comparison and `Instant` arithmetic.

use std::time::Duration;

/// `--handover-grace` default: a SYN that reached an old listener just before it was steered out
/// completes its handshake one round trip later; 100 ms covers most WAN round trips, costs 100 ms per
/// reload, and measured 0 resets here down to 5 ms (README, "Steering").
pub const DEFAULT_HANDOVER_GRACE_MS: u64 = 100;
/// The longest `--handover-grace`: beyond it the old generation lingers for nothing.
pub const MAX_HANDOVER_GRACE_MS: u64 = 60_000;
/// The longest `--udp-flow-idle`: an hour, far above QUIC's usual 30 s idle timeout; an old
/// generation waits this long for an idle session at most.
const MAX_UDP_FLOW_IDLE_SECS: f64 = 3600.0;

/// `--steer` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SteerArg {
    On,
    Off,
    Auto,
}

/// `--udp-flow-idle SECS`: 0 (off) up to MAX_UDP_FLOW_IDLE_SECS, fractions allowed.
pub fn parse_flow_idle(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.0..=MAX_UDP_FLOW_IDLE_SECS).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        Ok(_) => Err(format!(
            "expected seconds from 0 (off) to {MAX_UDP_FLOW_IDLE_SECS}, such as 30"
        )),
        Err(_) => Err("expected a number of seconds, such as 30 (0: off)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_idle_is_bounded() {
        assert_eq!(parse_flow_idle("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_flow_idle("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_flow_idle("-1").is_err());
        assert!(parse_flow_idle("3601").is_err());
        assert!(parse_flow_idle("soon").is_err());
    }
}
