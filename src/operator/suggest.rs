//! "Did you mean": a PROGRAM that is not on PATH but is one or two letters off a control command
//! (`statuss`) is taken for a typo of that command, and `completions` or `generate` for `--generate`.
//! Invariant: only a name that resolves to no program is ever compared, so a real program named like a
//! command still runs.

use std::ffi::OsString;

/// Words a newcomer tries for the generated docs, with what to type instead.
const DOC_WORDS: &[(&str, &str)] = &[
    (
        "completions",
        "--generate complete-bash (or complete-zsh, complete-fish)",
    ),
    (
        "completion",
        "--generate complete-bash (or complete-zsh, complete-fish)",
    ),
    (
        "complete",
        "--generate complete-bash (or complete-zsh, complete-fish)",
    ),
    (
        "generate",
        "--generate man (or complete-bash, complete-zsh, complete-fish)",
    ),
    ("help", "--help"),
];

/// What the user probably meant by `given` (the rest of the command line after `reuseport-launch`), when
/// it names no path: a control command one or two letters off (`statuss`), or the flag behind a word
/// like `completions`.
pub fn near_command(given: &OsString) -> Option<&'static str> {
    let given = given.to_str()?;
    if given.contains('/') {
        return None;
    }
    if let Some((_, flag)) = DOC_WORDS.iter().find(|(word, _)| *word == given) {
        return Some(flag);
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
        assert!(near_command(&"completions".into())
            .is_some_and(|s| s.contains("--generate complete-bash")));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
