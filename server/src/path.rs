//! Request paths: turns the raw path of a request into a safe path relative to the repository,
//! or says why it is refused. Nothing here touches the file system; symlinks are checked by
//! [`crate::files`] after canonicalisation.
//!
//! Refused (400): a path not starting with `/`, empty segments (`//`, which would otherwise
//! name an absolute path), any segment starting with `.` (`.`, `..`, dotfiles, temp files of
//! atomic writes), percent-encodings that decode to `/`, `\`, NUL or a control character,
//! invalid UTF-8, backslashes. Longer than the limit: 414. Outside the repository layout of
//! docs/DESIGN.md §4 (top-level `*.json`, anything under `channels/` or `bundles/`): 404.
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// Longer than the configured limit (414).
    TooLong,
    /// Malformed or a traversal attempt (400).
    Forbidden(&'static str),
    /// Well-formed but outside the served layout (404).
    NotServed,
}

/// Top-level directories whose files are served.
const SERVED_DIRS: [&str; 2] = ["channels", "bundles"];

/// Validates a raw request path and returns it relative to the repository root.
pub fn repo_relative(raw: &str, max_len: usize) -> Result<PathBuf, PathRejection> {
    if raw.len() > max_len {
        return Err(PathRejection::TooLong);
    }
    let rest = raw
        .strip_prefix('/')
        .ok_or(PathRejection::Forbidden("path must start with /"))?;
    let mut segments = Vec::new();
    for raw_segment in rest.split('/') {
        segments.push(decode_segment(raw_segment)?);
    }
    check_layout(&segments)?;
    Ok(segments.iter().collect())
}

/// Decodes and checks one path segment.
fn decode_segment(raw: &str) -> Result<String, PathRejection> {
    if raw.is_empty() {
        return Err(PathRejection::Forbidden("empty path segment"));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathRejection::Forbidden("path is not UTF-8"))?;
    if decoded.starts_with('.') {
        return Err(PathRejection::Forbidden("path segment starts with a dot"));
    }
    if decoded
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(PathRejection::Forbidden(
            "path segment contains a slash, backslash or control character",
        ));
    }
    Ok(decoded.into_owned())
}

/// Only the repository layout is served: `*.json` at the top, files under the served dirs.
fn check_layout(segments: &[String]) -> Result<(), PathRejection> {
    match segments {
        [file] if file.ends_with(".json") => Ok(()),
        [dir, _, ..] if SERVED_DIRS.contains(&dir.as_str()) => Ok(()),
        _ => Err(PathRejection::NotServed),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        repo_relative(raw, 1024).unwrap().display().to_string()
    }

    #[test]
    fn accepts_the_layout() {
        assert_eq!(ok("/root.json"), "root.json");
        assert_eq!(ok("/3.root.json"), "3.root.json");
        assert_eq!(ok("/channels/stable.json"), "channels/stable.json");
        assert_eq!(ok("/channels/stable.pause"), "channels/stable.pause");
        assert_eq!(ok("/bundles/os-1.2.3.tandem"), "bundles/os-1.2.3.tandem");
        assert_eq!(ok("/bundles/a%20b.tandem"), "bundles/a b.tandem");
    }

    #[test]
    fn refuses_traversal_and_odd_paths() {
        for raw in [
            "/../etc/passwd",
            "/channels/../root.json",
            "/channels/%2e%2e/root.json",
            "/channels/%2E%2E/root.json",
            "/channels/..%2froot.json",
            "/channels%2fstable.json",
            "/channels%2Fstable.json",
            "//etc/passwd.json",
            "/channels//stable.json",
            "/channels/.hidden",
            "/.git.json",
            "/channels/a%5c..%5cb",
            "/channels/a\\b",
            "/channels/a%00b",
            "/channels/%ff",
            "channels/stable.json",
            "/channels/",
        ] {
            assert!(
                matches!(repo_relative(raw, 1024), Err(PathRejection::Forbidden(_))),
                "{raw} should be refused"
            );
        }
    }

    #[test]
    fn outside_layout_is_not_served() {
        for raw in [
            "/etc/passwd",
            "/README",
            "/tandem.db",
            "/channels",
            "/bundles",
        ] {
            assert_eq!(
                repo_relative(raw, 1024),
                Err(PathRejection::NotServed),
                "{raw}"
            );
        }
    }

    #[test]
    fn long_paths_are_refused() {
        let raw = format!("/bundles/{}", "a".repeat(2000));
        assert_eq!(repo_relative(&raw, 1024), Err(PathRejection::TooLong));
    }
}
