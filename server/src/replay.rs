//! The signatures of node requests seen within the timestamp window, so a captured request
//! sent again is refused ([`crate::nodeauth`]). Only a verified signature of an approved key
//! (or of the key an enrollment names) is remembered, and only while its timestamp is within
//! the window: older ones are refused by their time, so they are forgotten. Bounded: at most
//! [`PER_KEY`] signatures per key and [`MAX_KEYS`] keys; a key over its share is refused
//! (`Full`) until its oldest signatures leave the window.
//!
//! The memory is this process's: servers sharing a PostgreSQL database each keep their own,
//! so a request replayed to another server within the window passes there (docs/DESIGN.md
//! §10). Reports are stored once per report id and lease requests are idempotent, so such a
//! replay repeats what the node said, never says something new.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Most signatures remembered per key (a node signs a few requests a poll).
pub const PER_KEY: usize = 1024;
/// Most keys remembered at once.
pub const MAX_KEYS: usize = 200_000;

/// Why a signature was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Seen before within the window.
    Replayed,
    /// The key (or the table) holds all it may: too many requests.
    Full,
}

/// One key's signatures seen, with their timestamps.
type Signatures = Vec<(u64, [u8; 64])>;

/// The memory of recent signatures, by key id.
#[derive(Debug, Default)]
pub struct Seen {
    keys: Mutex<HashMap<String, Signatures>>,
}

impl Seen {
    /// Remembers `signature` of `key_id`, made at `timestamp`, unless seen already; entries
    /// older than `oldest` (the window's start) are forgotten first.
    pub fn remember(
        &self,
        key_id: &str,
        timestamp: u64,
        signature: &[u8; 64],
        oldest: u64,
    ) -> Result<(), Refused> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if !keys.contains_key(key_id) && keys.len() >= MAX_KEYS {
            keys.retain(|_, seen| {
                seen.retain(|(ts, _)| *ts >= oldest);
                !seen.is_empty()
            });
            if keys.len() >= MAX_KEYS {
                return Err(Refused::Full);
            }
        }
        let seen = keys.entry(key_id.to_owned()).or_default();
        seen.retain(|(ts, _)| *ts >= oldest);
        if seen.iter().any(|(_, s)| s == signature) {
            return Err(Refused::Replayed);
        }
        if seen.len() >= PER_KEY {
            return Err(Refused::Full);
        }
        seen.push((timestamp, *signature));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_taken_once_within_the_window_and_forgotten_after() {
        let seen = Seen::default();
        assert_eq!(seen.remember("k", 100, &[1; 64], 0), Ok(()));
        assert_eq!(seen.remember("k", 100, &[1; 64], 0), Err(Refused::Replayed));
        assert_eq!(seen.remember("other", 100, &[1; 64], 0), Ok(()));
        assert_eq!(seen.remember("k", 101, &[2; 64], 0), Ok(()));
        // Past the window the old entry is gone (its timestamp now refuses it instead).
        assert_eq!(seen.remember("k", 500, &[1; 64], 200), Ok(()));
    }

    #[test]
    fn a_key_remembers_a_bounded_number_of_signatures() {
        let seen = Seen::default();
        for i in 0..PER_KEY {
            let mut sig = [0u8; 64];
            sig[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert_eq!(seen.remember("k", 10, &sig, 0), Ok(()));
        }
        assert_eq!(seen.remember("k", 10, &[0xff; 64], 0), Err(Refused::Full));
        assert_eq!(seen.remember("k", 20, &[0xff; 64], 11), Ok(()));
    }
}
