//! The `--max-memory SIZE` group of flags (with `--memory-check-interval SECS`), parsed and validated
//! here so cli.rs stays one screenful per concern. Invariant: a SIZE is a whole number of bytes of at
//! least MIN_LIMIT_BYTES, and the decisions only ever see it as `MemoryPolicy`.

use std::time::Duration;

use crate::launcher::MemoryPolicy;

/// Smallest `--max-memory`: no real server runs in less, so a smaller figure is a forgotten unit
/// (`512` meant as `512M`), which would replace every worker at every check.
const MIN_LIMIT_BYTES: u64 = 1 << 20;
/// Largest `--max-memory`, 1 PiB: more is a typo, and it keeps the arithmetic far from overflow.
const MAX_LIMIT_BYTES: u64 = 1 << 50;
/// Shortest `--memory-check-interval`: a reading walks every worker's page tables; more often than
/// this would cost CPU for nothing a leak could show.
const MIN_CHECK_SECS: f64 = 0.1;
/// Longest `--memory-check-interval`: a day; a check that rare protects nothing.
const MAX_CHECK_SECS: f64 = 86_400.0;

/// The `--max-memory` group of flags.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// Replace a worker whose memory exceeds SIZE, gracefully: its replacement starts in the same
    /// slot, and once it is ready the big one is steered out and drained. The figure is the PSS of
    /// the worker's whole process tree (/proc/PID/smaps_rollup). SIZE: a number with K, M or G
    /// (powers of 1024; B or iB may follow, any case), or bytes: 512M, 2G, 1.5GiB [default: off]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,

    /// Seconds between two readings of every serving worker's memory (--max-memory)
    #[arg(
        long,
        value_name = "SECS",
        default_value = "5",
        requires = "max_memory"
    )]
    pub memory_check_interval: f64,
}

impl MemoryArgs {
    /// The policy the decisions get; None without `--max-memory`.
    pub fn policy(&self) -> Result<Option<MemoryPolicy>, String> {
        let Some(limit_bytes) = self.max_memory else {
            return Ok(None);
        };
        let secs = self.memory_check_interval;
        if !(MIN_CHECK_SECS..=MAX_CHECK_SECS).contains(&secs) {
            return Err(format!(
                "--memory-check-interval {secs}: expected seconds from {MIN_CHECK_SECS} to \
                 {MAX_CHECK_SECS}, such as 5"
            ));
        }
        Ok(Some(MemoryPolicy {
            limit_bytes,
            interval: Duration::from_secs_f64(secs),
        }))
    }
}

/// `--max-memory SIZE`: `512M`, `2G`, `1.5GiB`, `300kb`, `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let example = "such as 512M or 2G (K, M, G: powers of 1024; B or iB may follow)";
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: expected one {example}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: expected a size {example}"
            ))
        }
    };
    let bytes = (value * multiplier as f64).round();
    if bytes > MAX_LIMIT_BYTES as f64 {
        return Err(format!("{text} is more than the limit of 1 PiB"));
    }
    let bytes = bytes as u64;
    if bytes < MIN_LIMIT_BYTES {
        let hint = if bytes == 0 {
            "; to turn the limit off, leave --max-memory out".to_string()
        } else if multiplier == 1 {
            format!("; did you mean {number}M?")
        } else {
            String::new()
        };
        return Err(format!(
            "{text} is {bytes} bytes, less than the smallest limit of 1M{hint}"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_k_m_g_with_or_without_b_or_ib_in_any_case() {
        const M: u64 = 1 << 20;
        assert_eq!(parse_size("512M"), Ok(512 * M));
        assert_eq!(parse_size("512m"), Ok(512 * M));
        assert_eq!(parse_size("512MB"), Ok(512 * M));
        assert_eq!(parse_size("512MiB"), Ok(512 * M));
        assert_eq!(parse_size("512 mib"), Ok(512 * M));
        assert_eq!(parse_size("2G"), Ok(2048 * M));
        assert_eq!(parse_size("2gb"), Ok(2048 * M));
        assert_eq!(parse_size("1.5GiB"), Ok(1536 * M));
        assert_eq!(parse_size("2048k"), Ok(2 * M));
        assert_eq!(parse_size("1048576"), Ok(M));
        assert_eq!(parse_size("3145728b"), Ok(3 * M));
    }

    #[test]
    fn bad_sizes_say_what_to_type() {
        let unit = parse_size("512X").unwrap_err();
        assert!(
            unit.contains("unknown unit \"x\"") && unit.contains("such as 512M"),
            "{unit}"
        );
        let number = parse_size("lots").unwrap_err();
        assert!(
            number.contains("not a size") && number.contains("such as 512M"),
            "{number}"
        );
        assert!(parse_size("M").unwrap_err().contains("not a size"));
        assert!(parse_size("1.2.3G").unwrap_err().contains("not a size"));
        let bare = parse_size("512").unwrap_err();
        assert!(bare.contains("did you mean 512M?"), "{bare}");
        assert!(parse_size("0").is_err());
        assert!(parse_size("100K")
            .unwrap_err()
            .contains("smallest limit of 1M"));
        assert!(parse_size("2000000G").unwrap_err().contains("1 PiB"));
    }

    #[test]
    fn the_interval_is_bounded_and_only_matters_with_a_limit() {
        let args = |max_memory, memory_check_interval| MemoryArgs {
            max_memory,
            memory_check_interval,
        };
        assert_eq!(args(None, 0.0).policy(), Ok(None));
        let policy = args(Some(1 << 30), 0.5).policy().unwrap().unwrap();
        assert_eq!(policy.interval, Duration::from_millis(500));
        assert_eq!(policy.limit_bytes, 1 << 30);
        let too_often = args(Some(1 << 30), 0.01).policy().unwrap_err();
        assert!(
            too_often.contains("--memory-check-interval 0.01"),
            "{too_often}"
        );
    }
}
