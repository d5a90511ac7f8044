//! reuseport-launch: runs N workers of a server on one SO_REUSEPORT port and swaps the whole generation
//! on SIGHUP without refusing a connection. This file maps the outcome to an exit code; the event loop
//! (event_loop.rs) does the work.

mod event_loop;
mod kernel;
mod launcher;
mod operator;

use std::io::Write;
use std::process::ExitCode;

use crate::launcher::Outcome;
use crate::operator::cli::{self, Config, ConfigError};
use crate::operator::logging::{self, report_error};
use crate::operator::{control_client, docs};

/// Exit codes, explained to the reader in operator/help_text.rs (--help, the man page) and the README.
const EXIT_RUNTIME_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_PROGRAM_NOT_FOUND: u8 = 3;
const EXIT_START_FAILED: u8 = 4;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| control_client::SUBCOMMANDS.contains(&a))
    {
        return control_client::main(argv);
    }
    let args = match cli::parse(argv) {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            let _ = writeln!(std::io::stderr(), "hint: reuseport-launch [OPTIONS] -- PROGRAM [ARGS]...; see reuseport-launch --help");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Some(what) = args.generate {
        let mut out = std::io::stdout().lock();
        return match docs::generate(what, &mut out).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report_error(format!("unable to write the generated text to stdout: {e}"));
                ExitCode::from(EXIT_RUNTIME_ERROR)
            }
        };
    }
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            report_error(&e);
            return ExitCode::from(match e {
                ConfigError::Program(_) => EXIT_PROGRAM_NOT_FOUND,
                ConfigError::BadValue(_) => EXIT_USAGE,
            });
        }
    };
    logging::init(config.log_level);
    match event_loop::run(&config) {
        Ok(Outcome::Stopped) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Outcome::StartFailed(reason)) => {
            let injection_off = if config.inject {
                ""
            } else {
                ". With --no-inject every worker must set SO_REUSEPORT itself: if the worker's output \
                 says \"Address already in use\", it does not, and dropping --no-inject lets the launcher set it"
            };
            report_error(format!(
                "generation 1 could not get ready: {reason}. The worker's own output, if any, is above{injection_off}"
            ));
            ExitCode::from(EXIT_START_FAILED)
        }
        Err(message) => {
            report_error(message);
            ExitCode::from(EXIT_RUNTIME_ERROR)
        }
    }
}
