//! "Did you mean": a PROGRAM that is not on PATH but is one or two letters off a control command
//! (`statuss`) is taken for a typo of that command. Invariant: only a name that resolves to no program is
//! ever compared, so a real program named like a command still runs.

use std::ffi::OsString;

/// The control command `given` is probably a typo of (one or two letters off), when it names no path.
pub fn near_command(given: &OsString) -> Option<&'static str> {
    let given = given.to_str()?;
    if given.contains('/') {
        return None;
    }
    super::control_client::SUBCOMMANDS
        .iter()
        .copied()
        .find(|command| edit_distance(given, command) <= TYPO_DISTANCE)
}

/// How far (insertions, deletions, substitutions) a typo of a control command may be from it: catches
/// `statuss`, `relaod`, `sacle`; only a PROGRAM that is not on PATH is ever compared, so a real program
/// named like a command still runs.
const TYPO_DISTANCE: usize = 2;

/// Levenshtein distance of two short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_of_control_commands_are_recognised() {
        assert_eq!(near_command(&"statuss".into()), Some("status"));
        assert_eq!(near_command(&"relaod".into()), Some("reload"));
        assert_eq!(near_command(&"./statuss".into()), None);
        assert_eq!(near_command(&"nginx".into()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
