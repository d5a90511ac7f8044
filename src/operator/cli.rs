//! Command-line parsing: clap turns argv into `Args`, and `Config::from_args` validates them once into the
//! `Config` the rest of the launcher trusts. No other module looks at flags or re-checks them.

use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::kernel::worker_spec::{RunAs, WorkerSpec};
use crate::launcher::{DrainMode, Policy, ReadyMode};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Group, Uid, User};

/// The longest timeout a flag accepts; anything longer is a typo, and it keeps `Instant` arithmetic safe.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most workers one launcher runs; far above what one machine serves well, low enough to catch typos.
const MAX_WORKERS: usize = 4096;
/// The most `--listen` addresses: every worker holds one socket per address, and a server that needs
/// more is better served by a port range of its own.
const MAX_LISTEN: usize = 64;
/// Capability bits (CapEff in /proc/self/status) that let a non-root launcher change a worker's ids.
const CAP_SETGID_BIT: u64 = 1 << 6;
const CAP_SETUID_BIT: u64 = 1 << 7;

const EXAMPLES: &str = "\
Talk to a running launcher (see each one's --help):
  reuseport-launch status [--name NAME] [--json]
  reuseport-launch reload [--name NAME] [--wait]
  reuseport-launch scale [--name NAME] N
  reuseport-launch stop [--name NAME]

Examples:
  reuseport-launch --workers 4 -- ./server --port 8080
  kill -HUP <launcher pid>     start a new generation, then drain and stop the old one
  kill -TERM <launcher pid>    drain and stop every worker, then exit";

/// Zero-downtime restarts for any Linux network server: runs N workers of PROGRAM on one SO_REUSEPORT
/// port and swaps the whole generation on SIGHUP without refusing a connection.
#[derive(Debug, Parser)]
#[command(
    name = "reuseport-launch",
    version,
    override_usage = "reuseport-launch [OPTIONS] [--] PROGRAM [ARGS]...",
    after_help = EXAMPLES,
)]
pub struct Args {
    /// Number of workers per generation [default: number of available CPUs]
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,

    /// Seconds every worker of a new generation has to send READY=1 before the generation is given up
    #[arg(long, value_name = "SECS", default_value = "60")]
    pub ready_timeout: f64,

    /// Seconds a worker has to exit after the stop signal before it is killed with SIGKILL
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

    /// What makes a worker ready: `notify` (READY=1 on $NOTIFY_SOCKET), `listen` (a TCP socket in LISTEN
    /// state, seen without connecting), `auto` (READY=1 when the server speaks sd_notify, else listen)
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub ready: ReadyArg,

    /// How a worker is drained: `signal` (the stop signal; the server drains itself), `listener` (take its
    /// listener out of the port's group, wait until its connections end, then the stop signal), `auto`
    /// (listener for servers that do not speak sd_notify, signal for those that do)
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub drain: DrainArg,

    /// Do not set SO_REUSEPORT on the workers' sockets for them (the server sets it itself). Injection
    /// installs a seccomp filter; when the launcher is not root that needs no_new_privs, which makes
    /// file capabilities (setcap) of PROGRAM ineffective
    #[arg(long)]
    pub no_inject: bool,

    /// The launcher binds this address for every worker and passes the sockets as fds 3, 4, ... with
    /// systemd socket activation (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES; PORT when only one). Repeatable.
    /// `8080` means [::]:8080 (IPv6 and IPv4); also `127.0.0.1:8080`, `[::1]:8080`. No injection then
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Run workers as this user (name or uid), with its primary group unless --group is given. Needs
    /// a root launcher (or CAP_SETUID and CAP_SETGID)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Run workers with this group (name or gid) as their only group
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Give every worker a Node IPC channel (NODE_CHANNEL_FD), so `process.send('ready')` counts as
    /// READY=1, as with PM2's wait_ready [default: on when PROGRAM is node or nodejs]
    #[arg(long)]
    pub node_ipc: bool,

    /// Ask workers to stop by sending this message over the Node IPC channel instead of the stop signal
    /// (PM2's shutdown_with_message), e.g. `--stop-message shutdown`; SIGKILL after --stop-timeout
    #[arg(long, value_name = "MSG")]
    pub stop_message: Option<String>,

    /// Inject SO_REUSEPORT only into binds of this port (and watch only it for `--ready listen`)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Instance name: names the control socket used by `reuseport-launch status|reload|scale|stop`
    /// [default: PROGRAM's file name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Replace a worker that sent WATCHDOG=1 and then stays silent for this many seconds
    #[arg(long, value_name = "SECS")]
    pub watchdog: Option<f64>,

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

    /// The server to run in every worker, and its arguments
    #[arg(value_name = "PROGRAM", required = true, trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// `--ready` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadyArg {
    Notify,
    Listen,
    Auto,
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
    pub listen: Vec<SocketAddr>,
    /// The user and group workers run as (`--user`/`--group`); None: the launcher's own.
    pub run_as: Option<RunAs>,
    /// Workers get a Node IPC channel.
    pub node_ipc: bool,
    /// Sent over the IPC channel instead of the stop signal.
    pub stop_message: Option<String>,
    /// Where the admin endpoint listens (`--admin`); None: off.
    pub admin: Option<SocketAddr>,
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

    /// The timeouts and modes the decisions depend on.
    pub fn policy(&self) -> Policy {
        Policy {
            workers: self.workers,
            ready_timeout: self.ready_timeout,
            stop_timeout: self.stop_timeout,
            stop_signal: self.stop_signal,
            watchdog: self.watchdog,
            ready: self.ready,
            drain: self.drain,
            lb_drain: self.lb_drain,
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
        let program = resolve_program(&given)?;
        let name = match args.name {
            Some(name) => name,
            None => program
                .file_name()
                .map_or_else(|| "server".into(), |n| n.to_string_lossy().into_owned()),
        };
        super::control::validate_name(&name).map_err(|e| bad(&e))?;
        let listen = parse_listen(&args.listen)?;
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
        let ready = match (args.ready, sees_listeners) {
            (ReadyArg::Listen, false) => return Err(bad(
                "--ready listen needs injection (it watches the worker's binds) or --listen; drop --no-inject",
            )),
            (ReadyArg::Auto, false) | (ReadyArg::Notify, _) => ReadyMode::Notify,
            (ReadyArg::Listen, true) => ReadyMode::Listen,
            (ReadyArg::Auto, true) => ReadyMode::Auto,
        };
        let drain = match (args.drain, sees_listeners) {
            (DrainArg::Listener, false) => {
                return Err(bad("--drain listener needs injection (it holds the worker's listener) or --listen; drop --no-inject"))
            }
            (DrainArg::Signal, _) | (DrainArg::Auto, false) => DrainMode::Signal,
            (DrainArg::Listener, true) => DrainMode::Listener,
            (DrainArg::Auto, true) => DrainMode::Auto,
        };
        let run_as = resolve_run_as(args.user.as_deref(), args.group.as_deref())?;
        let is_node = program
            .file_name()
            .is_some_and(|n| n == "node" || n == "nodejs");
        let node_ipc = args.node_ipc || is_node;
        if args.stop_message.is_some() && !node_ipc {
            return Err(bad("--stop-message needs the Node IPC channel: PROGRAM must be node, or add --node-ipc"));
        }
        Ok(Config {
            ready,
            drain,
            inject,
            listen,
            run_as,
            node_ipc,
            stop_message: args.stop_message,
            admin: args.admin.as_deref().map(parse_admin).transpose()?,
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

/// `--listen` values: `PORT` ([::]:PORT, dual-stack, as systemd's ListenStream=PORT), `IPv4:PORT` or
/// `[IPv6]:PORT`. Port 0 and repeats are refused.
fn parse_listen(values: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    if values.len() > MAX_LISTEN {
        return Err(bad(&format!(
            "{} --listen addresses are more than the limit of {MAX_LISTEN}",
            values.len()
        )));
    }
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for value in values {
        let text = value.trim();
        let address = match text.parse::<u16>() {
            Ok(port) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            Err(_) => text.parse::<SocketAddr>().map_err(|_| {
                bad(&format!(
                    "--listen {value}: expected PORT, IPv4:PORT or [IPv6]:PORT with numeric addresses \
                     (8080, 127.0.0.1:8080, [::]:8080)"
                ))
            })?,
        };
        if address.port() == 0 {
            return Err(bad(&format!(
                "--listen {value}: port 0 would give every worker a different port; name the port"
            )));
        }
        if addresses.contains(&address) {
            return Err(bad(&format!("--listen {value} is given twice")));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// `--admin` values: `PORT` (127.0.0.1:PORT: metrics and status stay on the host unless asked),
/// `IPv4:PORT` or `[IPv6]:PORT`. Port 0 picks a free port (the launcher logs which).
fn parse_admin(value: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.trim();
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))),
        Err(_) => text.parse::<SocketAddr>().map_err(|_| {
            bad(&format!(
                "--admin {value}: expected PORT, IPv4:PORT or [IPv6]:PORT with numeric addresses \
                 (9900, 127.0.0.1:9900, 0.0.0.0:9900, [::]:9900)"
            ))
        }),
    }
}

/// Resolves `--user` / `--group` (names or numbers) now, so an unknown one fails before anything starts,
/// and checks the launcher may change ids at all.
fn resolve_run_as(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, ConfigError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let user = user
        .map(|name| {
            let found = match name.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)),
                Err(_) => User::from_name(name),
            };
            found
                .map_err(|e| bad(&format!("--user {name}: unable to look it up: {e}")))?
                .ok_or_else(|| {
                    bad(&format!(
                        "--user {name}: no such user (see /etc/passwd or `getent passwd {name}`)"
                    ))
                })
        })
        .transpose()?;
    let gid = match group {
        Some(name) => {
            let found = match name.parse::<u32>() {
                Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                Err(_) => Group::from_name(name),
            };
            found
                .map_err(|e| bad(&format!("--group {name}: unable to look it up: {e}")))?
                .ok_or_else(|| {
                    bad(&format!(
                        "--group {name}: no such group (see /etc/group or `getent group {name}`)"
                    ))
                })?
                .gid
        }
        None => user
            .as_ref()
            .map(|u| u.gid)
            .expect("--user or --group is set"),
    };
    let shown = match (&user, group) {
        (Some(u), Some(g)) => format!("--user {} --group {g}", u.name),
        (Some(u), None) => format!("--user {}", u.name),
        (None, g) => format!("--group {}", g.unwrap_or_default()),
    };
    if !Uid::effective().is_root() && !has_capabilities(CAP_SETUID_BIT | CAP_SETGID_BIT) {
        return Err(bad(&format!(
            "{shown} needs a launcher running as root (or with CAP_SETUID and CAP_SETGID): it changes the \
             user and group of every worker; start the launcher as root or drop {shown}"
        )));
    }
    Ok(Some(RunAs {
        uid: user.as_ref().map(|u| u.uid),
        gid,
        user,
        shown,
    }))
}

/// Whether this process has all of `bits` in its effective capability set.
fn has_capabilities(bits: u64) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|effective| effective & bits == bits)
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
        Some(Signal::SIGKILL | Signal::SIGSTOP) | None => Err(bad(&format!(
            "--stop-signal {text}: not a signal a worker can handle; use a name such as TERM, INT or QUIT, or a number"
        ))),
        Some(signal) => Ok(signal),
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
    fn listen_addresses_parse_in_order() {
        let parsed =
            parse_listen(&["8080".into(), "127.0.0.1:81".into(), "[::1]:82".into()]).unwrap();
        assert_eq!(
            parsed,
            vec![
                "[::]:8080".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:81".parse().unwrap(),
                "[::1]:82".parse().unwrap()
            ]
        );
        assert!(parse_listen(&["0".into()]).is_err());
        assert!(parse_listen(&["localhost:80".into()]).is_err());
        assert!(parse_listen(&["80".into(), "[::]:80".into()]).is_err());
    }

    #[test]
    fn admin_addresses_default_to_localhost() {
        assert_eq!(
            parse_admin("9900").unwrap(),
            "127.0.0.1:9900".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_admin("[::]:9900").unwrap(),
            "[::]:9900".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_admin("localhost:9900").is_err());
    }

    #[test]
    fn unknown_user_and_group_are_named() {
        let err = resolve_run_as(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(err.to_string().contains("no-such-user-xyz"));
        let err = resolve_run_as(None, Some("no-such-group-xyz")).unwrap_err();
        assert!(err.to_string().contains("no-such-group-xyz"));
    }

    #[test]
    fn missing_program_is_named() {
        let err = resolve_program(&"no-such-program-xyz".into()).unwrap_err();
        assert!(err.to_string().contains("no-such-program-xyz"));
        assert!(resolve_program(&"sh".into()).is_ok());
    }
}
