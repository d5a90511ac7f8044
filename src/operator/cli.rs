//! Command-line parsing: clap turns argv into `Args`, and `Config::from_args` validates them once into the
//! `Config` the rest of the launcher trusts. No other module looks at flags or re-checks them.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::probe_flags::{parse_ready, HealthArgs, ReadyArg};
use super::rollout_flags::RolloutArgs;
pub use super::steer_flags::SteerArg;
use super::steer_flags::{parse_flow_idle, DEFAULT_HANDOVER_GRACE_MS, MAX_HANDOVER_GRACE_MS};
use super::{addresses, help_text, run_as, suggest};
use crate::kernel::listen::ListenAddress;
use crate::kernel::probes::HealthKind;

use crate::kernel::worker_spec::{RunAs, WorkerSpec};
use crate::launcher::{DrainMode, HealthPolicy, Policy, ReadyMode};

use nix::sys::signal::Signal;

/// The longest timeout a flag accepts; anything longer is a typo, and it keeps `Instant` arithmetic safe.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most workers one launcher runs; far above what one machine serves well, low enough to catch typos.
const MAX_WORKERS: usize = 4096;

/// Zero-downtime restarts for any Linux network server: runs N workers of PROGRAM on one SO_REUSEPORT
/// port and swaps the whole generation on SIGHUP without refusing a connection.
///
/// On SIGHUP (or `reuseport-launch reload`, or `systemctl reload`) it starts a complete new generation of
/// workers beside the old one, waits until every new worker is ready, and only then drains and stops the
/// old generation. The kernel spreads connections over every listener of the port; the launcher is never
/// in the data path.
#[derive(Debug, Parser)]
#[command(
    name = "reuseport-launch",
    version,
    override_usage = "reuseport-launch [OPTIONS] [--] PROGRAM [ARGS]...",
    // `--workers -1` is a bad value, not a flag `-1` to be passed after `--` (which would make it PROGRAM).
    allow_negative_numbers = true,
)]
pub struct Args {
    /// Number of workers per generation [default: number of available CPUs]
    #[arg(short = 'w', long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,

    /// Seconds a new generation has to get ready before it is given up
    #[arg(long, value_name = "SECS", default_value = "60")]
    pub ready_timeout: f64,

    /// Seconds a worker has to exit after the stop signal before SIGKILL
    #[arg(long, value_name = "SECS", default_value = "30")]
    pub stop_timeout: f64,

    /// On stop (SIGTERM, `stop`, systemctl stop), first keep every worker serving this many seconds
    /// while /healthz (--admin) already answers 503, so a load balancer takes the host out before the
    /// drain begins; 0: drain at once
    #[arg(long, value_name = "SECS", default_value = "0")]
    pub lb_drain: f64,

    /// Signal that asks a worker to drain and exit (TERM, SIGTERM, 15, INT, QUIT, ...)
    #[arg(long, value_name = "SIG", default_value = "TERM")]
    pub stop_signal: String,

    /// What makes a worker ready: READY=1, a listening socket, an HTTP answer, or auto
    ///
    /// `notify` (READY=1 on $NOTIFY_SOCKET), `listen` (a TCP socket in LISTEN state or a bound UDP
    /// socket, seen without connecting), `http:PATH` (GET PATH over a connection steered to that very worker answers
    /// 2xx; retried every 100 ms; needs steering), `auto` (READY=1 when the server speaks
    /// sd_notify, else listen)
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_ready)]
    pub ready: ReadyArg,

    /// How a worker is drained: by its stop signal, by waiting for its connections to end first, or auto
    ///
    /// `signal` (the stop signal; the server drains itself), `listener` (new connections kept away from
    /// its listener — steered away, or without steering its listener taken out of the port's group —,
    /// wait until its connections end, then the stop signal), `auto` (listener for servers that do not
    /// speak sd_notify, signal for those that do)
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub drain: DrainArg,

    /// Do not set SO_REUSEPORT on the workers' sockets for them (the server sets it itself)
    ///
    /// Injection installs a seccomp filter; when the launcher is not root that needs no_new_privs, which
    /// makes file capabilities (setcap) of PROGRAM ineffective. The workers' SO_REUSEPORT sockets (TCP
    /// listeners, bound UDP sockets) are then found in /proc, for `--ready listen` and steering
    #[arg(long)]
    pub no_inject: bool,

    /// Bind this address for every worker and pass it as systemd socket activation does. Repeatable
    ///
    /// The sockets are fds 3, 4, ... (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES; PORT when only one).
    /// `8080` means [::]:8080 (IPv6 and IPv4); also `127.0.0.1:8080`, `[::1]:8080`. A UDP socket
    /// (systemd's ListenDatagram=): `udp:8053`, `udp:127.0.0.1:8053`, `udp:[::1]:8053`. No injection then
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Run workers as this user (name or uid)
    ///
    /// With its primary group unless --group is given. Needs a root launcher (or CAP_SETUID and
    /// CAP_SETGID)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Run workers with this group (name or gid) as their only group
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Give every worker a Node IPC channel [default: on when PROGRAM is node or nodejs]
    ///
    /// NODE_CHANNEL_FD, so `process.send('ready')` counts as READY=1, as with PM2's wait_ready
    #[arg(long)]
    pub node_ipc: bool,

    /// Ask workers to stop with this Node IPC message instead of the stop signal
    ///
    /// PM2's shutdown_with_message, e.g. `--stop-message shutdown`; SIGKILL after --stop-timeout
    #[arg(long, value_name = "MSG")]
    pub stop_message: Option<String>,

    /// Inject SO_REUSEPORT only into binds of this port (and watch only it for `--ready listen`)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Instance name, for `reuseport-launch status|reload|scale|stop` [default: PROGRAM's file name]
    ///
    /// It names the control socket; two launchers need two names
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Who chooses the worker of each new connection: the launcher (reuseport eBPF, root), the kernel, or auto
    ///
    /// `on`: the launcher, with a reuseport eBPF program (only ready workers of the serving generation
    /// receive, a reload hands over without a reset and strangers on the port get nothing; needs root).
    /// `off`: the kernel's hash over every socket of the port. `auto`: on when the launcher may load the
    /// program, else off with a log line saying why
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub steer: SteerArg,

    /// With steering: milliseconds an old worker keeps its listener after it was steered out
    ///
    /// It is drained once its accept queue is empty and this grace has passed, for handshakes still
    /// under way when it was steered out (about one SYN-ACK round trip of your clients)
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_HANDOVER_GRACE_MS)]
    pub handover_grace: u64,

    /// With steering: seconds a UDP flow stays with its worker after its last datagram (0: off)
    ///
    /// Datagrams from a client address and port stay with the worker that got the flow's first one
    /// (a QUIC, DTLS or game session keeps its process across a reload), and an old generation is
    /// stopped once none of its flows was active for this long (or at --stop-timeout). 30 suits QUIC
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_flow_idle)]
    pub udp_flow_idle: Duration,

    /// Replace a worker that sent WATCHDOG=1 and then stays silent for this many seconds
    #[arg(long, value_name = "SECS")]
    pub watchdog: Option<f64>,

    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub memory: super::memory_flags::MemoryArgs,

    #[command(flatten)]
    pub rollout: RolloutArgs,

    /// Serve an HTTP admin endpoint on this address: GET /healthz (200 while every worker slot is
    /// served, 503 with the reason otherwise), /metrics (Prometheus), /status (JSON). `9900` means
    /// 127.0.0.1:9900; give `0.0.0.0:9900` or `[::]:9900` to reach it from other hosts [default: off]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides both -v and -q
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log less (-q: warnings and errors only, -qq: errors only)
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Print the man page or a shell completion script to stdout, and exit
    ///
    /// E.g. `reuseport-launch --generate man > reuseport-launch.1`,
    /// `reuseport-launch --generate complete-bash > /etc/bash_completion.d/reuseport-launch`
    #[arg(long, value_enum, value_name = "WHAT", exclusive = true)]
    pub generate: Option<Generate>,

    /// The server to run in every worker, and its arguments
    #[arg(
        value_name = "PROGRAM",
        required_unless_present = "generate",
        trailing_var_arg = true
    )]
    pub command: Vec<OsString>,
}

/// `--generate` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The man page, reuseport-launch(1), in roff
    Man,
    /// A bash completion script
    CompleteBash,
    /// A zsh completion script
    CompleteZsh,
    /// A fish completion script
    CompleteFish,
}

/// The launcher's clap command, with the reference text of help_text.rs: a pointer to it after `-h`, all
/// of it after `--help`.
pub fn command() -> clap::Command {
    Args::command()
        .after_help(help_text::SHORT_FOOTER)
        .after_long_help(help_text::long_footer())
}

/// Parses argv with `command()`.
pub fn parse(argv: Vec<OsString>) -> Result<Args, clap::Error> {
    let matches = command().try_get_matches_from(argv)?;
    Args::from_arg_matches(&matches)
}

/// `--workers N`: a whole number of at least 1 (the limit is checked in Config::from_args).
fn parse_workers(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(_) => Err("expected a whole number of workers, at least 1".into()),
        Err(_) => Err("expected a whole number of workers, such as 4".into()),
    }
}

/// `--drain` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrainArg {
    Signal,
    Listener,
    Auto,
}

/// Everything the launcher needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers per generation, at least 1.
    pub workers: usize,
    /// How long a new worker may take to send READY=1.
    pub ready_timeout: Duration,
    /// How long a worker may take to exit after the stop signal.
    pub stop_timeout: Duration,
    /// How long workers keep serving after a stop request before their drain (`--lb-drain`).
    pub lb_drain: Duration,
    /// The signal that asks a worker to drain and exit.
    pub stop_signal: Signal,
    /// PROGRAM, resolved on PATH the way execvp would.
    pub program: PathBuf,
    /// Arguments passed to every worker.
    pub program_args: Vec<OsString>,
    /// What makes a worker ready.
    pub ready: ReadyMode,
    /// `--ready http:PATH`: the PATH probed.
    pub ready_path: Option<String>,
    /// `--health`: how ready workers are checked, and when one is replaced.
    pub health: Option<(HealthKind, HealthPolicy)>,
    /// `--probation`: how long a reload's old generation is kept to roll back to.
    pub probation: Duration,
    /// `--max-memory`: the limit and how often it is checked; None: off.
    pub memory: Option<crate::launcher::MemoryPolicy>,
    /// How workers are drained.
    pub drain: DrainMode,
    /// Set SO_REUSEPORT on workers' binds (seccomp user notification).
    pub inject: bool,
    /// Limit injection (and listen readiness) to this port.
    pub port: Option<u16>,
    /// Instance name, for the control socket.
    pub name: String,
    /// Per-worker watchdog timeout.
    pub watchdog: Option<Duration>,
    /// Log level chosen by -v/-q (RUST_LOG still wins).
    pub log_level: log::LevelFilter,
    /// Addresses the launcher binds for every worker (`--listen`), in order; empty: the worker binds.
    pub listen: Vec<ListenAddress>,
    /// The user and group workers run as (`--user`/`--group`); None: the launcher's own.
    pub run_as: Option<RunAs>,
    /// Workers get a Node IPC channel.
    pub node_ipc: bool,
    /// Sent over the IPC channel instead of the stop signal.
    pub stop_message: Option<String>,
    /// Where the admin endpoint listens (`--admin`); None: off.
    pub admin: Option<SocketAddr>,
    /// Whether the launcher steers connections (`auto` is settled at start by the event loop).
    pub steer: SteerArg,
    /// With steering, how long a handed-over listener stays open after its queue is empty.
    pub handover_grace: Duration,
    /// With steering, how long a UDP flow stays with its worker after its last datagram; zero: off.
    pub udp_flow_idle: Duration,
    /// Slots a reload replaces at a time (`--max-surge`); None: the whole generation.
    pub max_surge: Option<usize>,
    /// The signal that reloads (`--reload-signal`).
    pub reload_signal: Signal,
}

/// A flag or PROGRAM that cannot work, with what to do about it.
#[derive(Debug)]
pub enum ConfigError {
    /// A flag's value is out of range or unparsable.
    BadValue(String),
    /// PROGRAM does not exist or cannot be executed.
    Program(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadValue(m) | ConfigError::Program(m) => f.write_str(m),
        }
    }
}

impl Config {
    /// What the spawner needs to start a worker, and nothing else.
    pub fn worker_spec(&self) -> WorkerSpec {
        WorkerSpec {
            program: self.program.clone(),
            args: self.program_args.clone(),
            inject: self.inject,
            inject_port: self.port,
            listen: self.listen.clone(),
            run_as: self.run_as.clone(),
            node_ipc: self.node_ipc,
            stop_message: self.stop_message.clone(),
        }
    }

    /// The timeouts and modes the decisions depend on; `steer`: whether steering is on after all.
    pub fn policy(&self, steer: bool) -> Policy {
        Policy {
            workers: self.workers,
            ready_timeout: self.ready_timeout,
            stop_timeout: self.stop_timeout,
            stop_signal: self.stop_signal,
            watchdog: self.watchdog,
            ready: self.ready,
            drain: self.drain,
            lb_drain: self.lb_drain,
            health: self.health.as_ref().map(|(_, policy)| *policy),
            memory: self.memory,
            probation: self.probation,
            steer,
            handover_grace: self.handover_grace,
            udp_flow_idle: self.udp_flow_idle,
            max_surge: self.max_surge,
        }
    }

    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let workers = match args.workers {
            Some(0) => return Err(bad("--workers must be at least 1")),
            Some(n) if n > MAX_WORKERS => {
                return Err(bad(&format!(
                    "--workers {n} is more than the limit of {MAX_WORKERS}"
                )))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let mut command = args.command.into_iter();
        let given = command.next().ok_or_else(|| bad("PROGRAM is missing"))?;
        let program = resolve_program(&given).map_err(|e| match suggest::near_command(&given) {
            Some(command) => bad(&format!(
                "{}: unknown command; did you mean `reuseport-launch {command}`? (a PROGRAM of that name must be \
                 written with a path: ./{})",
                given.to_string_lossy(),
                given.to_string_lossy()
            )),
            None => e,
        })?;
        let name = match args.name {
            Some(name) => name,
            None => program
                .file_name()
                .map_or_else(|| "server".into(), |n| n.to_string_lossy().into_owned()),
        };
        super::control::validate_name(&name).map_err(|e| bad(&e))?;
        let listen = addresses::parse_listen(&args.listen).map_err(|e| bad(&e))?;
        if !listen.is_empty() && args.port.is_some() {
            return Err(bad(
                "--port limits injection to one port; with --listen the launcher binds the ports itself and \
                 injects nothing: drop --port",
            ));
        }
        // With --listen the launcher holds every worker's listeners itself: it sees them listen, and can
        // drain them, without injection; injection is then not needed and stays off.
        let inject = !args.no_inject && listen.is_empty();
        let sees_listeners = inject || !listen.is_empty();
        // Listen readiness sees the binds (injection), holds the sockets (--listen), or, with
        // --no-inject, looks for the worker's SO_REUSEPORT sockets in /proc (kernel/adopt.rs).
        let ready = match (&args.ready, sees_listeners) {
            (ReadyArg::Http(_), false) => return Err(bad(
                "--ready http needs injection or --listen (the probe connects to the listener the launcher holds a copy of); drop --no-inject",
            )),
            (ReadyArg::Http(_), true) if args.steer == SteerArg::Off => return Err(bad(
                "--ready http needs steering (a probe cannot choose its worker otherwise: the kernel would hand it to any worker of the port); drop --steer off",
            )),
            (ReadyArg::Http(_), true) => ReadyMode::Http,
            (ReadyArg::Notify, _) => ReadyMode::Notify,
            (ReadyArg::Listen, _) => ReadyMode::Listen,
            (ReadyArg::Auto, _) => ReadyMode::Auto,
        };
        let drain = match (args.drain, sees_listeners) {
            (DrainArg::Listener, false) => {
                return Err(bad("--drain listener needs injection (it holds the worker's listener) or --listen; drop --no-inject"))
            }
            (DrainArg::Signal, _) | (DrainArg::Auto, false) => DrainMode::Signal,
            (DrainArg::Listener, true) => DrainMode::Listener,
            (DrainArg::Auto, true) => DrainMode::Auto,
        };
        let run_as =
            run_as::resolve(args.user.as_deref(), args.group.as_deref()).map_err(|e| bad(&e))?;
        let is_node = program
            .file_name()
            .is_some_and(|n| n == "node" || n == "nodejs");
        let node_ipc = args.node_ipc || is_node;
        if args.stop_message.is_some() && !node_ipc {
            return Err(bad("--stop-message needs the Node IPC channel: PROGRAM must be node, or add --node-ipc"));
        }
        if args.handover_grace > MAX_HANDOVER_GRACE_MS {
            return Err(bad(&format!(
                "--handover-grace {} ms is more than the limit of {MAX_HANDOVER_GRACE_MS} ms",
                args.handover_grace
            )));
        }
        let ready_path = match &args.ready {
            ReadyArg::Http(path) => Some(path.clone()),
            _ => None,
        };
        let health = args
            .health
            .resolve(sees_listeners, args.steer == SteerArg::Off, node_ipc)
            .map_err(|e| bad(&e))?;
        let probation = args.health.probation().map_err(|e| bad(&e))?;
        Ok(Config {
            max_surge: args
                .rollout
                .max_surge(workers, probation)
                .map_err(|e: String| bad(&e))?,
            reload_signal: args.rollout.reload_signal,
            probation,
            memory: args.memory.policy().map_err(|e| bad(&e))?,
            health,
            ready_path,
            steer: args.steer,
            handover_grace: Duration::from_millis(args.handover_grace),
            udp_flow_idle: args.udp_flow_idle,
            ready,
            drain,
            inject,
            listen,
            run_as,
            node_ipc,
            stop_message: args.stop_message,
            admin: args
                .admin
                .as_deref()
                .map(addresses::parse_admin)
                .transpose()
                .map_err(|e| bad(&e))?,
            port: args.port,
            name,
            watchdog: args
                .watchdog
                .map(|w| seconds("--watchdog", w))
                .transpose()?,
            workers,
            ready_timeout: seconds("--ready-timeout", args.ready_timeout)?,
            stop_timeout: seconds("--stop-timeout", args.stop_timeout)?,
            lb_drain: match args.lb_drain {
                0.0 => Duration::ZERO,
                secs => seconds("--lb-drain", secs)?,
            },
            stop_signal: parse_signal(&args.stop_signal)?,
            program,
            program_args: command.collect(),
            log_level: log_level(args.verbose, args.quiet),
        })
    }
}

fn bad(message: &str) -> ConfigError {
    ConfigError::BadValue(message.to_string())
}

fn seconds(flag: &str, value: f64) -> Result<Duration, ConfigError> {
    if !value.is_finite() || value <= 0.0 || value > MAX_TIMEOUT.as_secs_f64() {
        return Err(bad(&format!(
            "{flag} {value}: expected a number of seconds above 0 and at most {}",
            MAX_TIMEOUT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Accepts `TERM`, `SIGTERM`, `sigterm` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, ConfigError> {
    let upper = text.trim().to_ascii_uppercase();
    let parsed = match upper.parse::<i32>() {
        Ok(number) => Signal::try_from(number).ok(),
        Err(_) => {
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            name.parse::<Signal>().ok()
        }
    };
    match parsed {
        Some(signal @ (Signal::SIGKILL | Signal::SIGSTOP)) => Err(bad(&format!(
            "--stop-signal {text}: {} cannot be caught, so a worker could not drain on it; use TERM, INT or QUIT \
             (SIGKILL follows anyway after --stop-timeout)",
            signal.as_str()
        ))),
        Some(signal) => Ok(signal),
        None if text.trim().parse::<i32>().is_ok() => Err(bad(&format!(
            "--stop-signal {text}: no such signal number; the signals a worker can be asked to stop with are \
             1 to 31 except 9 and 19 (see `kill -l`), e.g. 15 (TERM)"
        ))),
        None => Err(bad(&format!(
            "--stop-signal {text}: no signal of that name; use a name such as TERM, INT or QUIT (see `kill -l`), \
             or its number"
        ))),
    }
}

fn log_level(verbose: u8, quiet: u8) -> log::LevelFilter {
    match (verbose, quiet) {
        (0, 0) => log::LevelFilter::Info,
        (1, _) => log::LevelFilter::Debug,
        (_, 0) => log::LevelFilter::Trace,
        (_, 1) => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    }
}

/// Finds PROGRAM the way execvp would (PATH lookup when it has no slash) and checks it can be executed,
/// so a typo fails before any worker starts.
fn resolve_program(given: &OsString) -> Result<PathBuf, ConfigError> {
    let shown = Path::new(given).display().to_string();
    if given.is_empty() {
        return Err(ConfigError::Program("PROGRAM is empty".into()));
    }
    let candidates: Vec<PathBuf> =
        if Path::new(given).components().count() > 1 || shown.contains('/') {
            vec![PathBuf::from(given)]
        } else {
            let path =
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            std::env::split_paths(&path)
                .map(|dir| dir.join(given))
                .collect()
        };
    let mut not_executable = None;
    for candidate in &candidates {
        match std::fs::metadata(candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                if nix::unistd::access(candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
                    return Ok(candidate.clone());
                }
                not_executable = Some(candidate.clone());
            }
            Ok(_) => not_executable = Some(candidate.clone()),
            Err(_) => {}
        }
    }
    Err(ConfigError::Program(match not_executable {
        Some(path) => format!(
            "PROGRAM {} is not an executable file; check its permissions (chmod +x {})",
            path.display(),
            path.display()
        ),
        None if candidates.len() == 1 => {
            format!("PROGRAM {shown} not found; check the path (relative paths start from the current directory)")
        }
        None => format!("PROGRAM {shown} not found on PATH; give its full path or fix PATH"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_number_and_prefix() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigquit").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("2").unwrap(), Signal::SIGINT);
        assert!(parse_signal("KILL").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn timeouts_must_be_positive_and_finite() {
        assert!(seconds("--x", 0.0).is_err());
        assert!(seconds("--x", f64::NAN).is_err());
        assert_eq!(seconds("--x", 0.5).unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn stop_signal_errors_say_why() {
        assert!(parse_signal("99")
            .unwrap_err()
            .to_string()
            .contains("no such signal number"));
        assert!(parse_signal("KILL")
            .unwrap_err()
            .to_string()
            .contains("cannot be caught"));
        assert!(parse_signal("TERMM")
            .unwrap_err()
            .to_string()
            .contains("no signal of that name"));
    }

    #[test]
    fn missing_program_is_named() {
        let err = resolve_program(&"no-such-program-xyz".into()).unwrap_err();
        assert!(err.to_string().contains("no-such-program-xyz"));
        assert!(resolve_program(&"sh".into()).is_ok());
    }
}
