//! The kernel command line a release carries (boot asset kind `cmdline`, docs/FORMAT.md §3.1):
//! one rule, shared by the signer (what it signs) and the agent (what it writes beside the
//! slot's kernel), so a command line one accepts the other never refuses.
//!
//! The text ends up in a BLS entry's `options` line and in a GRUB environment block, both
//! line-based: a newline or control character would end the line early or inject another
//! key, so only printable ASCII is allowed.

use std::fmt;

/// Longest command line, in bytes: Linux's `COMMAND_LINE_SIZE` on x86 (including the room
/// the slot's own parameters need is the agent's business, not this rule's).
pub const MAX_CMDLINE: usize = 2048;

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// No text at all.
    Empty,
    /// Longer than [`MAX_CMDLINE`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside 0x20..=0x7E (a control character, a newline, non-ASCII).
    NotPrintable {
        /// Offset of the first such byte.
        at: usize,
        /// The byte.
        byte: u8,
    },
    /// Starts or ends with a space.
    SurroundingSpace,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::Empty => write!(f, "the kernel command line is empty"),
            CmdlineError::TooLong { len } => write!(
                f,
                "the kernel command line is {len} bytes, more than {MAX_CMDLINE}"
            ),
            CmdlineError::NotPrintable { at, byte } => write!(
                f,
                "the kernel command line has byte 0x{byte:02x} at offset {at}: only printable ASCII (0x20-0x7E) is allowed, no newline"
            ),
            CmdlineError::SurroundingSpace => write!(
                f,
                "the kernel command line starts or ends with a space"
            ),
        }
    }
}

impl std::error::Error for CmdlineError {}

/// Checks a kernel command line: 1 to [`MAX_CMDLINE`] bytes of printable ASCII (0x20-0x7E),
/// no leading or trailing space.
pub fn check_cmdline(text: &str) -> Result<(), CmdlineError> {
    check_bytes(text.as_bytes())
}

/// The text of a `cmdline` asset from its decoded bytes, if they follow the rule of
/// [`check_cmdline`] (bytes that are not UTF-8 are refused as not printable, at their offset).
pub fn cmdline_text(bytes: &[u8]) -> Result<String, CmdlineError> {
    check_bytes(bytes)?;
    Ok(bytes.iter().copied().map(char::from).collect())
}

fn check_bytes(bytes: &[u8]) -> Result<(), CmdlineError> {
    if bytes.is_empty() {
        return Err(CmdlineError::Empty);
    }
    if bytes.len() > MAX_CMDLINE {
        return Err(CmdlineError::TooLong { len: bytes.len() });
    }
    if let Some((at, &byte)) = bytes
        .iter()
        .enumerate()
        .find(|(_, b)| !(0x20..=0x7E).contains(*b))
    {
        return Err(CmdlineError::NotPrintable { at, byte });
    }
    if bytes.starts_with(b" ") || bytes.ends_with(b" ") {
        return Err(CmdlineError::SurroundingSpace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_command_lines_pass() {
        let longest = "a".repeat(MAX_CMDLINE);
        for ok in [
            "quiet",
            "console=ttyS0,115200 rd.marker=\"v2 release\" loglevel=7 ~!@#$%^&*()_+{}|:<>?",
            longest.as_str(),
        ] {
            assert_eq!(check_cmdline(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        let long = "a".repeat(MAX_CMDLINE + 1);
        for (bad, error) in [
            ("", CmdlineError::Empty),
            (long.as_str(), CmdlineError::TooLong { len: 2049 }),
            (
                "quiet\ninit=/bin/sh",
                CmdlineError::NotPrintable { at: 5, byte: b'\n' },
            ),
            ("a\tb", CmdlineError::NotPrintable { at: 1, byte: b'\t' }),
            ("a\x7f", CmdlineError::NotPrintable { at: 1, byte: 0x7f }),
            ("é", CmdlineError::NotPrintable { at: 0, byte: 0xc3 }),
            (" quiet", CmdlineError::SurroundingSpace),
            ("quiet ", CmdlineError::SurroundingSpace),
        ] {
            assert_eq!(check_cmdline(bad), Err(error), "{bad:?}");
        }
    }

    #[test]
    fn asset_bytes_give_the_text_only_when_they_follow_the_rule() {
        assert_eq!(
            cmdline_text(b"console=ttyS0 quiet").as_deref(),
            Ok("console=ttyS0 quiet")
        );
        assert_eq!(
            cmdline_text(b"ok\xff"),
            Err(CmdlineError::NotPrintable { at: 2, byte: 0xff })
        );
        assert_eq!(
            cmdline_text(b"quiet\n"),
            Err(CmdlineError::NotPrintable { at: 5, byte: b'\n' })
        );
    }

    #[test]
    fn messages_name_the_rule_broken() {
        let error = CmdlineError::NotPrintable { at: 5, byte: b'\n' }.to_string();
        assert!(error.contains("0x0a at offset 5"), "{error}");
        assert!(error.contains("no newline"), "{error}");
    }
}
