//! Names that end up in file paths (products, channels, bundle paths): a strict character set
//! so no document can point outside the repository (FORMAT §6).

/// A product or channel name: 1–64 of `[A-Za-z0-9._+-]`, starting with a letter or digit.
pub(crate) fn check_name(s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
    match s.chars().next() {
        None => Err("must not be empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            Err(format!("`{s}` must start with a letter or digit"))
        }
        _ if s.len() > 64 => Err(format!("`{s}` is longer than 64 characters")),
        _ if !s.chars().all(ok_char) => Err(format!("`{s}` may only contain A-Z a-z 0-9 . _ + -")),
        _ => Ok(()),
    }
}

/// A bundle path relative to the repository root: `/`-separated names, at most 255 bytes.
pub(crate) fn check_bundle_path(s: &str) -> Result<(), String> {
    if s.len() > 255 {
        return Err("longer than 255 bytes".into());
    }
    s.split('/')
        .try_for_each(check_name)
        .map_err(|e| format!("bundle path `{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_name("stable").is_ok());
        assert!(check_name(".hidden").is_err());
    }
}
