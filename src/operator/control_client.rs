//! The client side of the control socket: `reuseport-launch status|reload|scale|stop`. It sends one
//! request line, prints the reply, and turns it into an exit code (0 ok, 1 the launcher refused or the
//! reload failed, 2 bad usage or several launchers and no --name, 5 no launcher reachable; help_text.rs
//! says so to the reader).

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};

use super::control::{self, Request};
use super::logging::report_error;
use super::rollout_flags::parse_max_surge;

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 5;
/// How long quick requests (status, scale, reload without --wait) may take: the launcher answers them
/// within one turn of its loop.
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for a stopped launcher's pid to disappear.
const EXIT_POLL: Duration = Duration::from_millis(20);

pub const SUBCOMMANDS: &[&str] = &["status", "reload", "scale", "stop"];

/// Talk to a running reuseport-launch through its control socket.
#[derive(Debug, Parser)]
#[command(name = "reuseport-launch", version)]
struct ClientArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every worker: generation, slot, pid, state, uptime, restarts, time to ready
    Status {
        /// Instance name (--name of the launcher); may be left out when only one launcher runs
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Start a new generation and stop the old one once the new one is ready
    Reload {
        /// Instance name (--name of the launcher); may be left out when only one launcher runs
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Wait for the outcome: exit 0 when the new generation serves, 1 with the reason when it rolled back
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait
        #[arg(long, value_name = "SECS", default_value = "300")]
        timeout: f64,
        /// Replace at most N workers at a time in this reload (overrides the launcher's --max-surge)
        #[arg(long, value_name = "N", value_parser = parse_max_surge)]
        max_surge: Option<usize>,
    },
    /// Grow or shrink the serving generation to N workers, without a reload
    Scale {
        /// Instance name (--name of the launcher); may be left out when only one launcher runs
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Number of workers
        #[arg(value_name = "N")]
        workers: usize,
    },
    /// Drain and stop every worker; returns once the launcher has exited
    Stop {
        /// Instance name (--name of the launcher); may be left out when only one launcher runs
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Seconds to wait for the launcher to exit
        #[arg(long, value_name = "SECS", default_value = "300")]
        timeout: f64,
    },
}

/// The control commands as clap subcommands, for the man page and the shell completions.
pub fn subcommands() -> Vec<clap::Command> {
    ClientArgs::command().get_subcommands().cloned().collect()
}

pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = match ClientArgs::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (name, request, timeout) = match args.command {
        Command::Status { name, json } => (
            name,
            if json {
                Request::StatusJson
            } else {
                Request::Status
            },
            QUICK_TIMEOUT,
        ),
        Command::Reload {
            name,
            wait,
            timeout,
            max_surge,
        } => (name, Request::Reload { wait, max_surge }, seconds(timeout)),
        Command::Scale { name, workers } => (name, Request::Scale(workers), QUICK_TIMEOUT),
        Command::Stop { name, timeout } => (name, Request::Stop, seconds(timeout)),
    };
    match run(name.as_deref(), &request, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            report_error(message);
            ExitCode::from(code)
        }
    }
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(QUICK_TIMEOUT)
}

fn run(name: Option<&str>, request: &Request, timeout: Duration) -> Result<(), (u8, String)> {
    let path = control::find_socket(name).map_err(|e| match e {
        control::NotFound::Usage(message) => (EXIT_USAGE, message),
        control::NotFound::Unreachable(message) => (EXIT_UNREACHABLE, message),
    })?;
    let instance = control::name_of(&path);
    let unreachable = |e: std::io::Error| {
        (
            EXIT_UNREACHABLE,
            format!(
                "unable to reach launcher {instance} at {}: {e}",
                path.display()
            ),
        )
    };
    let mut stream = UnixStream::connect(&path).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    // A refused client may see its write fail; the launcher's reply still says why.
    let written = stream.write_all(format!("{request}\n").as_bytes());

    let deadline = Instant::now() + timeout;
    let reply = read_reply(&mut stream).map_err(|e| {
        let what = if e.kind() == ErrorKind::WouldBlock {
            format!("no answer within {}s", timeout.as_secs())
        } else {
            e.to_string()
        };
        (EXIT_REFUSED, format!("launcher {instance}: {what}"))
    })?;
    if reply.is_empty() {
        written.map_err(unreachable)?;
    }
    let (first, rest) = reply.split_once('\n').unwrap_or((&reply, ""));
    if let Some(error) = first.strip_prefix("error: ") {
        return Err((EXIT_REFUSED, format!("launcher {instance}: {error}")));
    }
    if !first.starts_with("ok") {
        return Err((
            EXIT_REFUSED,
            format!("launcher {instance} answered {first:?}; this is a bug in reuseport-launch"),
        ));
    }
    match request {
        Request::Stop => wait_for_exit(first, deadline)
            .map_err(|e| (EXIT_REFUSED, format!("launcher {instance}: {e}")))?,
        Request::Status | Request::StatusJson => print!("{rest}"),
        _ => println!("{}", first.trim_start_matches("ok").trim()),
    }
    Ok(())
}

/// Reads until the launcher closes the connection.
fn read_reply(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `ok stopping (pid N)`: the reply arrives when the launcher is about to exit; wait for its pid to go.
fn wait_for_exit(first_line: &str, deadline: Instant) -> Result<(), String> {
    let pid = first_line
        .rsplit_once("pid ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse::<u32>().ok())
        .ok_or_else(|| {
            format!("unexpected answer {first_line:?}; this is a bug in reuseport-launch")
        })?;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        if Instant::now() >= deadline {
            return Err(format!("still running (pid {pid}) after the --timeout"));
        }
        std::thread::sleep(EXIT_POLL);
    }
    println!("stopped");
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
