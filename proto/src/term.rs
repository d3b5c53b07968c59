//! When a program may colour what it writes: only to a terminal, and never when `NO_COLOR` is
//! set to a non-empty value (<https://no-color.org>). Every binary's log setup asks this one
//! rule, so logs written to a file, a pipe or the journal carry no ANSI escape codes.
use std::ffi::OsStr;
use std::io::IsTerminal;

/// Whether output to `stream` may carry colour: it is a terminal and `NO_COLOR` is unset or
/// empty.
pub fn colour(stream: &impl IsTerminal) -> bool {
    colour_for(
        stream.is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The rule itself: colour on a terminal unless `no_color` (the value of `NO_COLOR`) is
/// present and not empty.
pub fn colour_for(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.map_or(true, OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_for(true, None));
        assert!(colour_for(true, Some(OsStr::new(""))));
        assert!(!colour_for(true, Some(OsStr::new("1"))));
        assert!(!colour_for(false, None));
        assert!(!colour_for(false, Some(OsStr::new("1"))));
    }
}
