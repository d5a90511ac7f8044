//! `reuseport-launch --generate man|complete-bash|complete-zsh|complete-fish`: the man page and the shell
//! completions, generated from the clap definitions of cli.rs and control_client.rs (clap_mangen,
//! clap_complete) plus the reference sections of help_text.rs, so they never drift from the flags.
//! Invariant: everything here is rendered from those definitions; nothing is written twice.

use std::io::{self, Write};

use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use super::cli::{self, Generate};
use super::control_client;
use super::help_text::SECTIONS;

/// The launcher's command with the control commands as subcommands: what a shell completes and what the
/// man page describes.
fn full_command() -> clap::Command {
    cli::command()
        .subcommands(control_client::subcommands())
        .disable_help_subcommand(true)
}

/// Writes the man page or a completion script to `out`.
pub fn generate(what: Generate, out: &mut impl Write) -> io::Result<()> {
    let mut command = full_command();
    command.build();
    let shell = match what {
        Generate::Man => return man_page(&command, out),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "reuseport-launch", out);
    Ok(())
}

/// reuseport-launch(1): clap_mangen's sections for the flags, one subsection per control command, then
/// help_text's sections.
fn man_page(command: &clap::Command, out: &mut impl Write) -> io::Result<()> {
    // The man page has its own EXIT STATUS, SIGNALS... sections; clap_mangen's EXTRA would repeat them.
    let launcher = command
        .clone()
        .after_help(None::<&str>)
        .after_long_help(None::<&str>);
    let man = Man::new(launcher.clone()).manual("User Commands");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "A running launcher is controlled through its control socket (see FILES):",
    )]);
    out.write_all(roff.render().as_bytes())?;
    for sub in command.get_subcommands() {
        let mut sub = sub.clone();
        sub.build();
        let mut heading = Roff::new();
        // Built as a subcommand of full_command(), its usage starts with "reuseport-launch NAME".
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ");
        heading.control("SS", [usage]);
        if let Some(about) = sub.get_about() {
            heading.text([roman(about.to_string())]);
        }
        out.write_all(heading.render().as_bytes())?;
        // The subcommand's flags, without clap_mangen's own ".SH OPTIONS" heading.
        let mut options = Vec::new();
        Man::new(sub).render_options_section(&mut options)?;
        let options = String::from_utf8_lossy(&options);
        out.write_all(options.replace(".SH OPTIONS\n", "").as_bytes())?;
    }

    for section in SECTIONS {
        let mut roff = Roff::new();
        roff.control("SH", [section.title]);
        for (term, description) in section.rows {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*description)]);
        }
        out.write_all(roff.render().as_bytes())?;
    }
    let mut see_also = Roff::new();
    see_also.control("SH", ["SEE ALSO"]);
    see_also.text([roman(
        "systemd.service(5), sd_notify(3), socket(7) (SO_REUSEPORT), and the README of reuseport-launch",
    )]);
    out.write_all(see_also.render().as_bytes())?;
    man.render_version_section(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(what: Generate) -> String {
        let mut out = Vec::new();
        generate(what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn man_page_has_the_reference_sections_and_every_flag() {
        let page = generated(Generate::Man);
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
                "no {section} section in:\n{page}"
            );
        }
        for flag in [
            "workers",
            "stop\\-timeout",
            "ready",
            "drain",
            "listen",
            "generate",
        ] {
            assert!(
                page.contains(&format!("\\-\\-{flag}")),
                "no --{flag} in the man page"
            );
        }
        assert!(page.contains("reuseport\\-launch status"));
    }

    #[test]
    fn completions_know_the_commands_and_flags() {
        for what in [
            Generate::CompleteBash,
            Generate::CompleteZsh,
            Generate::CompleteFish,
        ] {
            let script = generated(what);
            for word in ["status", "reload", "--stop-timeout", "--workers"] {
                let word = word.trim_start_matches("--");
                assert!(script.contains(word), "{what:?} lacks {word}");
            }
        }
    }
}
