//! Log output: one line per event on stderr. Under systemd (JOURNAL_STREAM set) each line starts with a
//! syslog priority prefix such as `<4>` so the journal records its level; elsewhere it carries a UTC
//! timestamp and the level.

use std::io::Write;

pub fn init(level: log::LevelFilter) {
    let to_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |out, record| {
        if to_journal {
            writeln!(
                out,
                "<{}>{}",
                syslog_priority(record.level()),
                record.args()
            )
        } else {
            writeln!(
                out,
                "{} {:<5} {}",
                out.timestamp_millis(),
                record.level(),
                record.args()
            )
        }
    });
    builder.init();
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Prints `reuseport-launch: error: MESSAGE` on stderr; a closed stderr is not worth a panic.
pub fn report_error(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "reuseport-launch: error: {message}");
}
