//! The one way every program writes an error on one line: the error, then each cause that
//! the text so far does not already say (our messages often embed their source, which `{:#}`
//! would print twice). Logs, reports and the HTTP client's reasons all read alike.

/// An error and its causes in one line, each cause left out when the text so far already
/// says it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let said = Wrapped("writing x: disk full", io::Error::other("disk full"));
        assert_eq!(chain(&said), "writing x: disk full");
        let unsaid = Wrapped("writing x", io::Error::other("disk full"));
        assert_eq!(chain(&unsaid), "writing x: disk full");
    }

    #[derive(Debug)]
    struct Wrapped(&'static str, io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }
}
