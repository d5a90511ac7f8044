//! `--user` / `--group`: names or numbers resolved once at start into the `RunAs` the spawner uses,
//! with the check that the launcher may change a worker's ids at all. Invariant: an unknown user or
//! group, or a launcher without the privilege, fails before anything starts.

use nix::unistd::{Gid, Group, Uid, User};

use crate::kernel::worker_spec::RunAs;

/// Capability bits (CapEff in /proc/self/status) that let a non-root launcher change a worker's ids.
const CAP_SETGID_BIT: u64 = 1 << 6;
const CAP_SETUID_BIT: u64 = 1 << 7;

/// Resolves `--user` / `--group` (names or numbers) now, so an unknown one fails before anything starts,
/// and checks the launcher may change ids at all.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
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
                .map_err(|e| format!("--user {name}: unable to look it up: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "--user {name}: no such user (see /etc/passwd or `getent passwd {name}`)"
                    )
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
                .map_err(|e| format!("--group {name}: unable to look it up: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "--group {name}: no such group (see /etc/group or `getent group {name}`)"
                    )
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
        return Err(format!(
            "{shown} needs a launcher running as root (or with CAP_SETUID and CAP_SETGID): it changes the \
             user and group of every worker; start the launcher as root or drop {shown}"
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_group_are_named() {
        let err = resolve(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(err.contains("no-such-user-xyz"));
        let err = resolve(None, Some("no-such-group-xyz")).unwrap_err();
        assert!(err.contains("no-such-group-xyz"));
    }
}
