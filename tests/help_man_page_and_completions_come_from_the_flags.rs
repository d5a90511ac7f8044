//! `--help` tells what a newcomer asks first (exit codes, SIGTTIN/SIGTTOU, that a second SIGTERM kills at
//! once), `-h` is the short version, every control command describes `--name`, and `--generate` prints a
//! man page with EXIT STATUS, SIGNALS, ENVIRONMENT, FILES and EXAMPLES plus bash, zsh and fish completions
//! that know the flags and the control commands, all from the same clap definitions.

mod support;

use std::process::Command;
use std::time::Duration;

use support::control::run_bounded;
use support::*;

/// Printing help or generating text takes milliseconds; this only bounds a hang.
const DEADLINE: Duration = Duration::from_secs(15);

fn output_of(args: &[&str]) -> String {
    let output = run_bounded(Command::new(LAUNCHER).args(args), DEADLINE);
    assert_eq!(
        output.code(),
        0,
        "reuseport-launch {args:?}: {}",
        output.show()
    );
    output.stdout
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn long_help_has_exit_codes_and_signals_and_short_help_is_shorter() {
    let long = output_of(&["--help"]);
    let short = output_of(&["-h"]);
    let long_words = words(&long);
    for needle in [
        "Exit status:",
        "PROGRAM not found or not executable",
        "no launcher reachable",
        "SIGTTIN",
        "SIGTTOU",
        "a second SIGTERM or SIGINT kills every worker at once",
        "Environment:",
        "Files:",
        "Examples:",
    ] {
        assert!(
            long_words.contains(needle),
            "--help lacks {needle:?}:\n{long}"
        );
    }
    assert!(
        short.lines().count() * 2 < long.lines().count(),
        "-h ({} lines) should be much shorter than --help ({} lines)",
        short.lines().count(),
        long.lines().count()
    );
    assert!(
        short.contains("--help"),
        "-h should point to --help:\n{short}"
    );
}

#[test]
fn every_control_command_describes_name() {
    for command in ["status", "reload", "scale", "stop"] {
        let help = output_of(&[command, "--help"]);
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with("--name"))
            .unwrap_or_else(|| panic!("{command} --help has no --name:\n{help}"));
        assert!(
            line.contains("Instance name"),
            "{command} --help: --name has no description: {line:?}"
        );
    }
}

#[test]
fn man_page_has_the_reference_sections() {
    let page = output_of(&["--generate", "man"]);
    assert!(
        page.starts_with(".") || page.contains(".TH"),
        "not roff:\n{page}"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "SIGNALS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
    ] {
        assert!(
            page.contains(&format!(".SH {section}\n"))
                || page.contains(&format!(".SH \"{section}\"\n")),
            "the man page has no {section} section"
        );
    }
    // Every long flag of --help is in the man page (roff escapes '-' as '\-').
    let help = output_of(&["--help"]);
    for flag in help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
    {
        let escaped = flag.replace('-', "\\-");
        assert!(page.contains(&escaped), "the man page lacks {flag}");
    }
}

#[test]
fn completions_know_flags_and_commands() {
    for shell in ["complete-bash", "complete-zsh", "complete-fish"] {
        let script = output_of(&["--generate", shell]);
        for word in [
            "workers",
            "stop-timeout",
            "ready-timeout",
            "status",
            "reload",
            "scale",
        ] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
}
