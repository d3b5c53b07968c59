//! Names that end up in file paths (products, channels, versions, bundle paths): the rules of
//! the `proto` crate, shared with the server, so no document can point outside the
//! repository and every name the signer signs is one the server serves (FORMAT §1).

/// Longest release version: `<product>-<version>.tandem` then always fits in one path
/// segment (64 + 1 + 64 + 7 ≤ [`proto::names::MAX_SEGMENT`]).
pub const MAX_VERSION: usize = 64;

/// Longest bundle path.
pub const MAX_BUNDLE_PATH: usize = 255;

/// A product or channel name ([`proto::names::NAME_RULE`]); `what` names it in the message.
pub fn check_name(what: &'static str, s: &str) -> Result<(), String> {
    proto::check_name(what, s).map_err(|e| e.to_string())
}

/// A release version: semver 2.0.0, at most [`MAX_VERSION`] characters.
pub fn parse_version(s: &str) -> Result<semver::Version, String> {
    if s.len() > MAX_VERSION {
        return Err(format!(
            "`{}…` is longer than {MAX_VERSION} characters",
            s.chars().take(MAX_VERSION).collect::<String>()
        ));
    }
    semver::Version::parse(s).map_err(|e| format!("`{s}` is not a semantic version: {e}"))
}

/// A bundle path relative to the repository root: `/`-separated segments
/// ([`proto::check_path_segment`]), at most [`MAX_BUNDLE_PATH`] bytes.
pub fn check_bundle_path(s: &str) -> Result<(), String> {
    if s.len() > MAX_BUNDLE_PATH {
        return Err(format!("longer than {MAX_BUNDLE_PATH} bytes"));
    }
    s.split('/')
        .try_for_each(proto::check_path_segment)
        .map_err(|e| format!("bundle path `{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::names::MAX_NAME;

    #[test]
    fn path_traversal_is_refused() {
        assert!(check_bundle_path("bundles/os-1.0.0.tandem").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "bundles/../../x",
            "bundles//x",
            "",
            "a/./b",
            "a\\b",
        ] {
            assert!(check_bundle_path(bad).is_err(), "{bad}");
        }
        assert!(check_name("channel", "stable").is_ok());
        assert!(check_name("channel", ".hidden").is_err());
    }

    #[test]
    fn the_longest_product_and_version_make_a_publishable_bundle_path() {
        let product = "p".repeat(MAX_NAME);
        let version = format!("1.0.0-{}", "r".repeat(MAX_VERSION - 6));
        assert!(check_name("product", &product).is_ok());
        assert!(parse_version(&version).is_ok());
        assert!(check_bundle_path(&format!("bundles/{product}-{version}.tandem")).is_ok());
        assert!(parse_version(&format!("{version}r")).is_err());
    }
}
