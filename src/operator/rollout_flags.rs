//! The rollout flags: `--max-surge` (how many slots a reload replaces at a time) and `--reload-signal`
//! (which signal reloads), kept here so cli.rs stays one screenful per concern. Invariant: a reload
//! signal that passes `parse_reload_signal` is one the launcher uses for nothing else.

use std::time::Duration;

use nix::sys::signal::Signal;

/// The signals `--reload-signal` accepts: HUP (systemd's and most tools' convention), USR1 and USR2
/// (what the cluster masters of Node, unicorn and Puma use). Not WINCH: a terminal sends it on resize.
const RELOAD_SIGNALS: &[Signal] = &[Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2];

/// `--max-surge` and `--reload-signal`, flattened into the launcher's flags.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// Replace at most N workers at a time in a reload [default: --workers, the whole generation]
    ///
    /// N new workers start in the slots they replace; once they are ready they receive the new
    /// connections and the N old ones are drained; the next N start once those have exited. At most
    /// --workers + N workers are alive at any moment. More than --workers means the whole generation.
    /// `reuseport-launch reload --max-surge N` overrides it for one reload
    #[arg(long, value_name = "N", value_parser = parse_max_surge)]
    pub max_surge: Option<usize>,

    /// The signal that reloads: HUP, USR1 or USR2, with or without SIG, any case
    ///
    /// With another signal than HUP, a SIGHUP is ignored (and logged); a systemd unit's
    /// `ExecReload=kill -HUP $MAINPID` must then send this signal instead
    #[arg(long, value_name = "SIG", default_value = "HUP", value_parser = parse_reload_signal)]
    pub reload_signal: Signal,
}

impl RolloutArgs {
    /// `--max-surge` checked against `--probation`: a roll-back needs the whole old generation kept,
    /// so batches and probation do not mix. None: whole-generation reloads.
    pub fn max_surge(&self, workers: usize, probation: Duration) -> Result<Option<usize>, String> {
        match self.max_surge {
            Some(n) if n < workers && !probation.is_zero() => Err(format!(
                "--max-surge {n} cannot be combined with --probation {}: probation keeps the whole old \
                 generation running to roll back to, so a reload's surge is every worker anyway; drop one \
                 of the two",
                probation.as_secs_f64()
            )),
            other => Ok(other),
        }
    }
}

/// `--max-surge N` (also `reload --max-surge N`): a whole number of at least 1.
pub fn parse_max_surge(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(_) => Err(
            "--max-surge must be at least 1 (1: one worker at a time; --workers or more: the whole \
             generation at once)"
                .into(),
        ),
        Err(_) => Err("expected a whole number of workers, such as 1".into()),
    }
}

/// `--reload-signal`: `HUP`, `SIGUSR2`, `usr1`, `12` ...; signals the launcher uses for something else
/// are refused, saying what they do.
pub fn parse_reload_signal(text: &str) -> Result<Signal, String> {
    let upper = text.trim().to_ascii_uppercase();
    let choose = "choose HUP, USR1 or USR2";
    let signal = if let Ok(number) = upper.parse::<i32>() {
        Signal::try_from(number).map_err(|_| {
            format!("no signal number {number} (see `kill -l`); {choose}, by name or number")
        })?
    } else {
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<Signal>().map_err(|_| {
            format!("no signal named {text:?} (see `kill -l`); {choose}, with or without SIG")
        })?
    };
    if RELOAD_SIGNALS.contains(&signal) {
        return Ok(signal);
    }
    let used_for = match signal {
        Signal::SIGTERM | Signal::SIGINT => "stops the launcher (drain, then exit)",
        Signal::SIGQUIT => "is the terminal's quit key (Ctrl-\\) and means stop by convention",
        Signal::SIGCHLD => "tells the launcher that a worker exited",
        Signal::SIGTTIN | Signal::SIGTTOU => "scales the workers by one",
        Signal::SIGKILL | Signal::SIGSTOP => "cannot be caught",
        Signal::SIGWINCH => "is sent by a terminal when its window is resized",
        _ => "is not one the launcher reloads on (it kills, stops or is sent by the kernel)",
    };
    Err(format!("{} {used_for}; {choose}", signal.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_signals_parse_with_or_without_sig_in_any_case() {
        assert_eq!(parse_reload_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_reload_signal("usr2").unwrap(), Signal::SIGUSR2);
        assert_eq!(parse_reload_signal("SigUsr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_reload_signal(" SIGUSR2 ").unwrap(), Signal::SIGUSR2);
        let usr2 = Signal::SIGUSR2 as i32;
        assert_eq!(
            parse_reload_signal(&usr2.to_string()).unwrap(),
            Signal::SIGUSR2
        );
        assert!(parse_reload_signal("15")
            .unwrap_err()
            .contains("SIGTERM stops"));
        assert!(parse_reload_signal("99")
            .unwrap_err()
            .contains("no signal number 99"));
    }

    #[test]
    fn signals_with_another_job_are_refused_saying_which_job() {
        let err = parse_reload_signal("TERM").unwrap_err();
        assert!(err.contains("SIGTERM stops the launcher"), "{err}");
        assert!(parse_reload_signal("sigint").unwrap_err().contains("stops"));
        assert!(parse_reload_signal("CHLD").unwrap_err().contains("exited"));
        assert!(parse_reload_signal("QUIT")
            .unwrap_err()
            .contains("quit key"));
        assert!(parse_reload_signal("TTIN").unwrap_err().contains("scales"));
        assert!(parse_reload_signal("KILL")
            .unwrap_err()
            .contains("cannot be caught"));
        assert!(parse_reload_signal("HUPP")
            .unwrap_err()
            .contains("no signal named"));
    }

    #[test]
    fn max_surge_is_at_least_one_and_refused_with_probation() {
        assert_eq!(parse_max_surge("1").unwrap(), 1);
        assert!(parse_max_surge("0").unwrap_err().contains("at least 1"));
        assert!(parse_max_surge("-2").is_err());
        let args = RolloutArgs {
            max_surge: Some(1),
            reload_signal: Signal::SIGHUP,
        };
        assert_eq!(args.max_surge(4, Duration::ZERO).unwrap(), Some(1));
        let err = args.max_surge(4, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("--probation"), "{err}");
        // A surge of every worker is the whole generation: no conflict.
        assert_eq!(args.max_surge(1, Duration::from_secs(5)).unwrap(), Some(1));
    }
}
