//! Names that end up in file paths, URLs, database rows and pages: one rule each, shared by
//! the signer (what it signs), the server (what it serves and stores) and the agent (what it
//! sends), so a name one program accepts is never refused by another (docs/FORMAT.md §6).

use std::fmt;

/// Longest product or channel name.
pub const MAX_NAME: usize = 64;
/// Longest path segment of a repository file (`<product>-<version>.tandem` must fit).
pub const MAX_SEGMENT: usize = 160;
/// Longest node id.
pub const MAX_NODE_ID: usize = 128;
/// Longest report id.
pub const MAX_REPORT_ID: usize = 64;

/// The product and channel name rule, for messages.
pub const NAME_RULE: &str =
    "1 to 64 characters of A-Z a-z 0-9 . _ + -, starting with a letter or digit";
/// The node id rule, for messages.
pub const NODE_ID_RULE: &str = "1 to 128 characters of A-Z a-z 0-9 . _ : -";
/// The report id rule, for messages.
pub const REPORT_ID_RULE: &str =
    "1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// What kind of name (`channel`, `node_id`, …).
    pub what: &'static str,
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug formatting escapes control characters: a hostile name cannot paint the log.
        write!(f, "invalid {} {:?}: {}", self.what, self.value, self.rule)
    }
}

impl std::error::Error for NameError {}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    rule: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    let starts_alnum = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if starts_alnum && value.len() <= max && value.chars().all(ok) {
        Ok(())
    } else {
        Err(NameError {
            what,
            value: value.chars().take(max + 1).collect(),
            rule,
        })
    }
}

/// What a release's chunk store adds to its bundle's file name (FORMAT §3.4, §10): a node
/// finds the store beside the bundle its channel names, by this fixed name.
pub const CHUNK_STORE_SUFFIX: &str = ".chunks";

/// The path of the chunk store of the bundle at `bundle` (a repository path or a file name).
pub fn chunk_store_path(bundle: &str) -> String {
    format!("{bundle}{CHUNK_STORE_SUFFIX}")
}

/// A product or channel name ([`NAME_RULE`]).
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    check(what, value, MAX_NAME, NAME_RULE, name_char)
}

/// One `/`-separated segment of a repository path: the name alphabet, up to [`MAX_SEGMENT`].
pub fn check_path_segment(value: &str) -> Result<(), NameError> {
    const RULE: &str =
        "1 to 160 characters of A-Z a-z 0-9 . _ + -, starting with a letter or digit";
    check("path segment", value, MAX_SEGMENT, RULE, name_char)
}

/// A node id ([`NODE_ID_RULE`]): what the agent may send and the server stores.
pub fn check_node_id(value: &str) -> Result<(), NameError> {
    check("node_id", value, MAX_NODE_ID, NODE_ID_RULE, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
    })
}

/// A report id ([`REPORT_ID_RULE`]): chosen by the agent, unique per node, so the server
/// stores a retried report once.
pub fn check_report_id(value: &str) -> Result<(), NameError> {
    check("id", value, MAX_REPORT_ID, REPORT_ID_RULE, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        for ok in ["stable", "Edge-2", "a", "lts+fips", "x.y_z"] {
            assert!(check_name("channel", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_NAME + 1);
        for bad in ["", ".hidden", "-x", "a b", "a/b", "é", "a\0", long.as_str()] {
            assert!(check_name("channel", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bundle_file_name_of_the_longest_names_is_a_valid_segment() {
        let product = "p".repeat(MAX_NAME);
        let version = "1".repeat(MAX_NAME);
        assert!(check_path_segment(&format!("{product}-{version}.tandem")).is_ok());
        assert!(check_path_segment("..").is_err());
    }

    #[test]
    fn node_ids_refuse_spaces_and_controls() {
        assert!(check_node_id("3f9c1e:rack-7.node_2").is_ok());
        for bad in ["", "a b", "n\u{202e}", "n\n", &"n".repeat(MAX_NODE_ID + 1)] {
            let error = check_node_id(bad).unwrap_err().to_string();
            assert!(error.contains("node_id"), "{error}");
        }
    }
}
