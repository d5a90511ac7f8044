//! When a repeated warning is written: the first one of a kind (a key, e.g. "malformed notify message
//! from pid 42") is logged at once, the next ones within WINDOW are only counted, and when the window
//! ends the count is handed back to be logged as one line ("dropped 12,345 more ... in the last 10 s").
//! So a flood writes two lines per key per window, not one per event. Pure: time is passed in; the
//! caller logs. Invariant: every event is either logged or counted in exactly one summary, and at most
//! `max_keys` keys are tracked at once — the rest share one overflow key (None).

use std::time::{Duration, Instant};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it now: the first of its key in this window.
    Log,
    /// Counted; it will be part of a summary.
    Count,
}

/// The events of one key that were counted rather than logged during a window that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    /// The key; None for the keys beyond `max_keys`, counted together.
    pub key: Option<K>,
    pub suppressed: u64,
    /// The window's length, for "in the last 10 s".
    pub window: Duration,
}

#[derive(Debug, Clone)]
struct Entry<K> {
    key: Option<K>,
    ends: Instant,
    suppressed: u64,
}

#[derive(Debug, Clone)]
pub struct RateLimit<K> {
    window: Duration,
    max_keys: usize,
    entries: Vec<Entry<K>>,
    /// Summaries of windows found ended by `check`, with when they ended; handed out by the next `due`.
    ended: Vec<(Instant, Summary<K>)>,
}

impl<K: PartialEq + Clone> RateLimit<K> {
    pub fn new(window: Duration, max_keys: usize) -> RateLimit<K> {
        RateLimit {
            window,
            max_keys: max_keys.max(1),
            entries: Vec::new(),
            ended: Vec::new(),
        }
    }

    /// One event of `key` at `now`: log it, or count it.
    pub fn check(&mut self, key: K, now: Instant) -> Verdict {
        let key = if self.entries.iter().any(|e| e.key.as_ref() == Some(&key))
            || self.entries.iter().filter(|e| e.key.is_some()).count() < self.max_keys
        {
            Some(key)
        } else {
            None
        };
        match self.entries.iter().position(|e| e.key == key) {
            Some(i) if self.entries[i].ends > now => {
                self.entries[i].suppressed += 1;
                Verdict::Count
            }
            Some(i) => {
                let old = std::mem::replace(
                    &mut self.entries[i],
                    Entry {
                        key,
                        ends: now + self.window,
                        suppressed: 0,
                    },
                );
                self.push_summary(old);
                Verdict::Log
            }
            None => {
                self.entries.push(Entry {
                    key,
                    ends: now + self.window,
                    suppressed: 0,
                });
                Verdict::Log
            }
        }
    }

    /// The summaries of every window that has ended by `now`; forgets those keys.
    pub fn due(&mut self, now: Instant) -> Vec<Summary<K>> {
        let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.ends <= now);
        self.entries = kept;
        for entry in ended {
            self.push_summary(entry);
        }
        std::mem::take(&mut self.ended)
            .into_iter()
            .map(|(_, summary)| summary)
            .collect()
    }

    /// When the next summary is due (only windows that counted something need a wake-up).
    pub fn next_deadline(&self) -> Option<Instant> {
        let counting = self.entries.iter().filter(|e| e.suppressed > 0);
        let ended = self.ended.iter().map(|(ends, _)| *ends);
        counting.map(|e| e.ends).chain(ended).min()
    }

    fn push_summary(&mut self, entry: Entry<K>) {
        if entry.suppressed > 0 {
            let summary = Summary {
                key: entry.key,
                suppressed: entry.suppressed,
                window: self.window,
            };
            self.ended.push((entry.ends, summary));
        }
    }
}

/// "12,345": counts in log lines read better with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn the_first_event_is_logged_the_rest_counted_until_the_window_ends() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(WINDOW, 8);
        assert_eq!(limit.check(42, t0), Verdict::Log);
        assert_eq!(limit.next_deadline(), None, "nothing counted: no wake-up");
        for i in 1..=12_345u64 {
            assert_eq!(
                limit.check(42, t0 + Duration::from_micros(i)),
                Verdict::Count
            );
        }
        assert_eq!(
            limit.check(7, t0),
            Verdict::Log,
            "another key has its own window"
        );
        assert_eq!(limit.next_deadline(), Some(t0 + WINDOW));
        assert!(limit.due(t0 + WINDOW - Duration::from_millis(1)).is_empty());
        assert_eq!(
            limit.due(t0 + WINDOW),
            vec![Summary {
                key: Some(42),
                suppressed: 12_345,
                window: WINDOW
            }]
        );
        assert_eq!(limit.next_deadline(), None);
        assert_eq!(limit.check(42, t0 + WINDOW), Verdict::Log, "a new window");
    }

    #[test]
    fn a_window_found_ended_by_check_still_hands_in_its_count() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(WINDOW, 8);
        limit.check("x", t0);
        limit.check("x", t0);
        assert_eq!(limit.check("x", t0 + 2 * WINDOW), Verdict::Log);
        assert_eq!(
            limit.next_deadline(),
            Some(t0 + WINDOW),
            "the ended window's summary is due at once"
        );
        let due = limit.due(t0 + 2 * WINDOW);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].suppressed, 1);
    }

    #[test]
    fn keys_beyond_the_bound_share_one_overflow_count() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(WINDOW, 2);
        assert_eq!(limit.check(1, t0), Verdict::Log);
        assert_eq!(limit.check(2, t0), Verdict::Log);
        assert_eq!(
            limit.check(3, t0),
            Verdict::Log,
            "the overflow key's first event"
        );
        for pid in 4..1000 {
            assert_eq!(limit.check(pid, t0), Verdict::Count);
        }
        let due = limit.due(t0 + WINDOW);
        assert_eq!(
            due,
            vec![Summary {
                key: None,
                suppressed: 996,
                window: WINDOW
            }]
        );
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
