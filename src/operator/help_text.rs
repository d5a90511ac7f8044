//! The reference text a person reads in `--help` and in the man page (`--generate man`): exit codes,
//! signals, environment, files and examples, each written once here as (term, description) rows. cli.rs
//! renders them as plain text after `--help`, docs.rs as man page sections. Invariant: no other file
//! spells out an exit code's meaning or a signal's effect for a reader.

/// One titled list of (term, description) rows.
pub struct Section {
    /// Upper-case, as a man page section is named: "EXIT STATUS".
    pub title: &'static str,
    pub rows: &'static [(&'static str, &'static str)],
}

/// Exit codes of the launcher and of the control commands (main.rs and control_client.rs own the numbers).
pub const EXIT_STATUS: Section = Section {
    title: "EXIT STATUS",
    rows: &[
        ("0", "the launcher stopped cleanly; a control command did what it was asked"),
        (
            "1",
            "runtime error (e.g. a launcher of that --name is already running); a control command was refused, \
             or `reload --wait` saw the new generation roll back",
        ),
        (
            "2",
            "bad usage: an unknown flag or command, a bad value; for a control command also: several launchers \
             run and --name does not say which",
        ),
        ("3", "PROGRAM not found or not executable"),
        (
            "4",
            "generation 1 could not get ready: a worker exited, forked into the background, or --ready-timeout \
             passed",
        ),
        ("5", "control commands only: no launcher reachable (none runs, or not as this user)"),
    ],
};

/// What the launcher does on each signal it handles.
pub const SIGNALS: Section = Section {
    title: "SIGNALS",
    rows: &[
        (
            "SIGHUP",
            "reload: start a new generation, and once all of it is ready drain and stop the old one (in batches \
             of --max-surge slots when given). With --reload-signal USR1|USR2 that signal reloads instead, and \
             SIGHUP is logged and ignored",
        ),
        (
            "SIGTERM, SIGINT",
            "graceful stop: --stop-signal to every worker, SIGKILL after --stop-timeout, exit 0; a second SIGTERM \
             or SIGINT kills every worker at once. With --lb-drain the workers first serve that long while \
             /healthz says 503; a second signal then starts the drain at once, a third kills",
        ),
        ("SIGTTIN", "one more worker in the serving generation (like `scale N+1`)"),
        ("SIGTTOU", "one worker less (never below 1)"),
    ],
};

/// Environment the launcher reads, and what every worker gets.
pub const ENVIRONMENT: Section = Section {
    title: "ENVIRONMENT",
    rows: &[
        ("RUST_LOG", "log filter (env_logger syntax); wins over -v and -q"),
        (
            "NOTIFY_SOCKET",
            "set by systemd for a Type=notify unit: the launcher sends READY=1, RELOADING=1, STATUS= and \
             STOPPING=1 there. Workers get a NOTIFY_SOCKET of the launcher's own, never this one",
        ),
        (
            "RUNTIME_DIRECTORY, XDG_RUNTIME_DIR",
            "where the control socket lives (see FILES)",
        ),
        (
            "REUSEPORT_LAUNCH_WORKER, REUSEPORT_LAUNCH_GENERATION",
            "set for every worker: its slot (0..N-1) and its generation (1, 2, ...)",
        ),
        (
            "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, PORT",
            "set for every worker with --listen, as systemd socket activation does",
        ),
        ("NODE_CHANNEL_FD", "set for every worker with --node-ipc (on by default for node)"),
    ],
};

/// Files the launcher uses, and those the package installs.
pub const FILES: Section = Section {
    title: "FILES",
    rows: &[
        (
            "$RUNTIME_DIRECTORY/NAME.sock",
            "the control socket of launcher NAME (--name); else $XDG_RUNTIME_DIR/reuseport-launch/NAME.sock, \
             else /run/reuseport-launch/NAME.sock. Mode 0600",
        ),
        (
            "/etc/reuseport-launch/NAME.env",
            "REUSEPORT_LAUNCH_ARGS for the template unit reuseport-launch@NAME.service",
        ),
        (
            "/lib/systemd/system/reuseport-launch@.service",
            "the template unit (Type=notify, ExecReload=reuseport-launch reload --name %i --wait)",
        ),
        (
            "/usr/lib/sysctl.d/99-reuseport-launch.conf",
            "net.ipv4.tcp_migrate_req=1: connections queued on a closing listener move to the new generation",
        ),
    ],
};

/// Commands a newcomer types first.
pub const EXAMPLES: Section = Section {
    title: "EXAMPLES",
    rows: &[
        (
            "reuseport-launch --workers 4 -- ./server --port 8080",
            "4 workers of ./server on one port",
        ),
        (
            "kill -HUP <launcher pid>",
            "reload: new generation up, then the old one drained and stopped",
        ),
        (
            "kill -TERM <launcher pid>",
            "drain and stop every worker, then exit 0",
        ),
        (
            "reuseport-launch status [--name NAME] [--json]",
            "one row per worker of a running launcher",
        ),
        (
            "reuseport-launch reload [--name NAME] --wait",
            "reload; exit 1 with the reason if it rolled back",
        ),
        (
            "reuseport-launch scale [--name NAME] N",
            "grow or shrink the serving generation to N workers",
        ),
        (
            "reuseport-launch stop [--name NAME]",
            "graceful stop; returns once the launcher has exited",
        ),
        (
            "nginx -g 'daemon off;', apachectl -DFOREGROUND",
            "servers that fork into the background must be kept in the foreground",
        ),
    ],
};

/// Every section, in man page order.
pub const SECTIONS: &[Section] = &[EXIT_STATUS, SIGNALS, ENVIRONMENT, FILES, EXAMPLES];

/// After `-h`: where the rest is.
pub const SHORT_FOOTER: &str = "\
Control commands: reuseport-launch status|reload|scale|stop [--name NAME] (see each one's --help).
Exit codes, signals, environment, files and examples: reuseport-launch --help, or man reuseport-launch.";

/// Width of the plain-text rendering: a terminal of 100 columns.
const TEXT_WIDTH: usize = 100;
/// Indent of a row's description under its term.
const DESCRIPTION_INDENT: usize = 6;

/// The sections as plain text, for `--help`.
pub fn long_footer() -> String {
    let mut text = String::from(
        "Control commands, for a running launcher (see each one's --help):\n  \
         reuseport-launch status|reload|scale|stop [--name NAME]\n",
    );
    for section in SECTIONS {
        text.push('\n');
        text.push_str(&title_case(section.title));
        text.push_str(":\n");
        for (term, description) in section.rows {
            text.push_str("  ");
            text.push_str(term);
            text.push('\n');
            for line in wrap(description, TEXT_WIDTH - DESCRIPTION_INDENT) {
                text.push_str(&" ".repeat(DESCRIPTION_INDENT));
                text.push_str(&line);
                text.push('\n');
            }
        }
    }
    text.trim_end().to_string()
}

/// "EXIT STATUS" -> "Exit status".
fn title_case(title: &str) -> String {
    let lower = title.to_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Greedy word wrap at `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_footer_names_every_section_and_wraps() {
        let text = long_footer();
        for section in SECTIONS {
            assert!(text.contains(&format!("{}:", title_case(section.title))));
        }
        assert!(text
            .lines()
            .all(|l| l.len() <= TEXT_WIDTH || !l.contains(' ')));
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("SIGTTIN") && words.contains("a second SIGTERM or SIGINT kills"));
    }
}
