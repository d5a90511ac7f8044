//! Restart backoff for one worker slot: capped exponential delays that reset once a worker proves stable.

use std::time::Duration;

/// Delay before the first restart: quick enough that one crash costs little capacity.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between restarts: unbounded backoff would keep capacity down long after a fix.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A worker that ran this long before exiting counts as stable: its slot's failure count starts over.
pub const STABLE_UPTIME: Duration = Duration::from_secs(10);

/// Consecutive failures of one slot.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    failures_in_a_row: u32,
}

impl Backoff {
    /// Records a failure after `uptime` and returns (delay before the restart, failures in a row).
    pub fn record_failure(&mut self, uptime: Duration) -> (Duration, u32) {
        if uptime >= STABLE_UPTIME {
            self.failures_in_a_row = 0;
        }
        let delay = delay_after(self.failures_in_a_row);
        self.failures_in_a_row += 1;
        (delay, self.failures_in_a_row)
    }
}

/// 100 ms, 200 ms, 400 ms, ... capped at MAX_RESTART_DELAY.
fn delay_after(previous_failures: u32) -> Duration {
    let factor = 1u32 << previous_failures.min(16);
    FIRST_RESTART_DELAY
        .saturating_mul(factor)
        .min(MAX_RESTART_DELAY)
}

/// "1st", "2nd", "3rd", "4th", ... for log lines.
pub fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_cap() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(5);
        let delays: Vec<_> = (0..12)
            .map(|_| b.record_failure(quick).0.as_millis())
            .collect();
        assert_eq!(&delays[..5], &[100, 200, 400, 800, 1600]);
        assert_eq!(delays[9], 30_000);
        assert_eq!(delays[11], 30_000);
    }

    #[test]
    fn stable_uptime_resets_the_count() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.record_failure(Duration::ZERO);
        }
        assert_eq!(b.record_failure(STABLE_UPTIME), (FIRST_RESTART_DELAY, 1));
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(23), "23rd");
    }
}
