//! The launcher's own service manager: when NOTIFY_SOCKET was set for the launcher (systemd
//! Type=notify), the launcher's announcements go there. Workers never see this socket.

use log::{debug, warn};
use sd_notify::NotifyState;

use crate::state::Announcement;

pub struct ServiceManager {
    enabled: bool,
}

impl ServiceManager {
    /// Reads NOTIFY_SOCKET once; the launcher's own environment is left as it is (workers get theirs
    /// from the supervisor).
    pub fn from_env() -> ServiceManager {
        ServiceManager {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    pub fn announce(&self, announcement: &Announcement) {
        if !self.enabled {
            return;
        }
        let monotonic;
        let states: Vec<NotifyState> = match announcement {
            Announcement::Ready => vec![NotifyState::Ready],
            Announcement::Reloading => match NotifyState::monotonic_usec_now() {
                Ok(now) => {
                    monotonic = now;
                    vec![NotifyState::Reloading, monotonic]
                }
                Err(_) => vec![NotifyState::Reloading],
            },
            Announcement::Stopping => vec![NotifyState::Stopping],
            Announcement::Status(line) => vec![NotifyState::Status(line)],
        };
        match sd_notify::notify(false, &states) {
            Ok(()) => debug!("told the service manager: {announcement:?}"),
            Err(e) => warn!("unable to notify the service manager ({announcement:?}): {e}"),
        }
    }
}
