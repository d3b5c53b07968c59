//! One boot's serial console: the text QEMU printed, cleaned of terminal escapes, and the
//! checks the scenarios make on it. Every failure shows the whole log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The serial console of one boot, ANSI escapes and carriage returns removed.
pub struct SerialLog {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
    pub elapsed: Duration,
}

impl SerialLog {
    /// Fails the test with the whole serial log.
    pub fn fail(&self, message: &str) -> ! {
        panic!(
            "{}: {message}\n--- serial log ({}) ---\n{}--- end of serial log ---",
            self.name,
            self.path.display(),
            self.text
        )
    }

    /// The lines the test's `/init` printed (`TANDEM-…`).
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.find("TANDEM-").map(|i| &l[i + 7..]))
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    pub fn expect(&self, needle: &str) {
        if !self.text.contains(needle) {
            self.fail(&format!("expected {needle:?} in the serial log"));
        }
    }

    /// Where `needle` first is in the log (a byte offset), failing when it is not there.
    pub fn expect_at(&self, needle: &str) -> usize {
        self.text
            .find(needle)
            .unwrap_or_else(|| self.fail(&format!("expected {needle:?} in the serial log")))
    }

    pub fn expect_not(&self, needle: &str) {
        if self.text.contains(needle) {
            self.fail(&format!("did not expect {needle:?} in the serial log"));
        }
    }

    /// `(slot, version)` from `TANDEM-BOOTED slot=X version=Y`.
    pub fn booted(&self) -> (String, String) {
        let line = self
            .lines("BOOTED ")
            .first()
            .copied()
            .unwrap_or_else(|| self.fail("the machine never reported a booted slot"));
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        (
            fields.get("slot").copied().unwrap_or_default().to_string(),
            fields
                .get("version")
                .copied()
                .unwrap_or_default()
                .to_string(),
        )
    }

    pub fn expect_booted(&self, slot: &str, version: &str) {
        let got = self.booted();
        if got != (slot.to_string(), version.to_string()) {
            self.fail(&format!(
                "expected slot {slot} with {version} to boot, got {got:?}"
            ));
        }
    }
}

/// Removes ANSI escape sequences, carriage returns and the trailing newline.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}
