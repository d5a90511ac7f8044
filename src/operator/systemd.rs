//! The launcher's own service manager: when NOTIFY_SOCKET was set for the launcher (systemd
//! Type=notify), the launcher's announcements go there, and it pings the service watchdog when
//! WATCHDOG_USEC asks for it. Workers never see this socket (supervisor.rs removes it from their env).

use std::time::{Duration, Instant};

use log::{debug, warn};
use sd_notify::NotifyState;

use crate::launcher::Announcement;

/// Margin added to the launcher's own bound on its stop (--lb-drain plus the longest drain) when asking
/// systemd to extend its stop timeout: time for the final SIGKILL and reaping.
const STOP_MARGIN: Duration = Duration::from_secs(5);

pub struct ServiceManager {
    enabled: bool,
    /// Half of WATCHDOG_USEC: how often systemd wants WATCHDOG=1.
    watchdog_every: Option<Duration>,
    next_watchdog: Option<Instant>,
}

impl ServiceManager {
    /// Reads NOTIFY_SOCKET and WATCHDOG_USEC once; the launcher's own environment is left as it is.
    pub fn from_env(now: Instant) -> ServiceManager {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog_every = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| Duration::from_micros(usec) / 2);
        ServiceManager {
            enabled,
            watchdog_every,
            next_watchdog: watchdog_every.map(|every| now + every),
        }
    }

    pub fn announce(&self, announcement: &Announcement) {
        if !self.enabled {
            return;
        }
        let monotonic;
        let states: Vec<NotifyState> = match announcement {
            // systemd counts a reload as done at READY=1, whatever its outcome; STATUS= tells which.
            Announcement::Ready | Announcement::ReloadEnded { .. } => vec![NotifyState::Ready],
            Announcement::Reloading => match NotifyState::monotonic_usec_now() {
                Ok(now) => {
                    monotonic = now;
                    vec![NotifyState::Reloading, monotonic]
                }
                Err(_) => vec![NotifyState::Reloading],
            },
            Announcement::Stopping { within } => {
                let usec = (*within + STOP_MARGIN).as_micros().min(u32::MAX as u128) as u32;
                vec![NotifyState::Stopping, NotifyState::ExtendTimeoutUsec(usec)]
            }
            Announcement::Status(line) => vec![NotifyState::Status(line)],
            // Not a state of the service; /metrics counts it.
            Announcement::Restarted { .. } | Announcement::Replacing { .. } => return,
        };
        self.send(&states);
    }

    /// When the next WATCHDOG=1 is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_watchdog
    }

    /// Sends WATCHDOG=1 when due.
    pub fn on_timers(&mut self, now: Instant) {
        if let (Some(due), Some(every)) = (self.next_watchdog, self.watchdog_every) {
            if due <= now {
                self.send(&[NotifyState::Watchdog]);
                self.next_watchdog = Some(now + every);
            }
        }
    }

    fn send(&self, states: &[NotifyState]) {
        match sd_notify::notify(false, states) {
            Ok(()) => debug!("told the service manager: {states:?}"),
            Err(e) => warn!("unable to notify the service manager ({states:?}): {e}"),
        }
    }
}
