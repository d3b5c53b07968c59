//! Signatures and the two containers that carry them (FORMAT §4, §6): the signed-document
//! envelope `{"signatures":[…],"signed":…}` and the bundle's signature block
//! `{"signatures":[…]}` followed by space padding.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, FormatError, Section};
use crate::keys::Signature;
use crate::limits::Limits;

/// A parsed signed document: the exact bytes of `signed` and its signatures.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The signed member's exact bytes, which the signatures cover.
    pub signed: &'a [u8],
    /// The signatures, not yet verified.
    pub signatures: Vec<Signature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeWire<'a> {
    #[serde(borrow)]
    signed: &'a RawValue,
    signatures: Vec<Signature>,
}

/// Parses `{"signed": …, "signatures": […]}` keeping the signed member's raw bytes.
pub fn parse_envelope<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Envelope<'a>, FormatError> {
    if bytes.len() as u64 > limits.max_metadata_len {
        return Err(FormatError::TooLarge {
            section: Section::Metadata,
            len: bytes.len() as u64,
            max: limits.max_metadata_len,
        });
    }
    let wire: EnvelopeWire<'a> =
        serde_json::from_slice(bytes).map_err(|source| FormatError::Json {
            section: Section::Metadata,
            source,
        })?;
    check_count(wire.signatures.len(), Section::Metadata, limits)?;
    Ok(Envelope {
        signed: wire.signed.get().as_bytes(),
        signatures: wire.signatures,
    })
}

fn check_count(n: usize, section: Section, limits: &Limits) -> Result<(), FormatError> {
    if n > limits.max_signatures {
        return Err(FormatError::field(
            section,
            "signatures",
            format!("{n} signatures, at most {}", limits.max_signatures),
        ));
    }
    Ok(())
}

/// Writes a signed document: `{"signatures":[…],"signed":<signed bytes verbatim>}` + `\n`.
pub fn encode_envelope(signed: &[u8], signatures: &[Signature]) -> Result<Vec<u8>, Error> {
    let mut out = b"{\"signatures\":".to_vec();
    out.extend_from_slice(&crate::canonical::to_vec(&by_keyid(signatures))?);
    out.extend_from_slice(b",\"signed\":");
    out.extend_from_slice(signed);
    out.extend_from_slice(b"}\n");
    Ok(out)
}

/// Signatures in key id order, as writers store them (FORMAT §4, §6.1): the same keys give
/// the same bytes, whatever order they were given or added in.
fn by_keyid(signatures: &[Signature]) -> Vec<Signature> {
    let mut sorted = signatures.to_vec();
    sorted.sort_by_key(|s| s.keyid);
    sorted
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureBlockWire {
    signatures: Vec<Signature>,
}

/// Parses a bundle signature block: one JSON object, then only ASCII spaces (FORMAT §4).
pub(crate) fn parse_signature_block(
    block: &[u8],
    limits: &Limits,
) -> Result<Vec<Signature>, FormatError> {
    let (wire, end) = parse_padded::<SignatureBlockWire>(block, Section::SignatureBlock)?;
    check_spaces(block, end, Section::SignatureBlock)?;
    check_count(wire.signatures.len(), Section::SignatureBlock, limits)?;
    Ok(wire.signatures)
}

/// Encodes a signature block padded with spaces to exactly `len` bytes, or `None` if it
/// does not fit.
pub fn encode_signature_block(
    signatures: &[Signature],
    len: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let mut out = crate::canonical::to_vec(&SignatureBlockWire {
        signatures: by_keyid(signatures),
    })?;
    if out.len() > len {
        return Ok(None);
    }
    out.resize(len, b' ');
    Ok(Some(out))
}

/// Parses the first JSON value of `bytes`, returning it and the offset where it ends.
pub(crate) fn parse_padded<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    section: Section,
) -> Result<(T, usize), FormatError> {
    if bytes.first() != Some(&b'{') {
        return Err(FormatError::field(
            section,
            "",
            "must start with a JSON object `{`",
        ));
    }
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    match stream.next() {
        Some(Ok(v)) => Ok((v, stream.byte_offset())),
        Some(Err(source)) => Err(FormatError::Json { section, source }),
        None => Err(FormatError::field(section, "", "empty: no JSON object")),
    }
}

/// Everything from `from` on must be ASCII spaces.
pub(crate) fn check_spaces(bytes: &[u8], from: usize, section: Section) -> Result<(), FormatError> {
    let rest = bytes.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b != b' ') {
        Some(i) => Err(FormatError::BadPadding {
            section,
            offset: (from + i) as u64,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_signed_bytes_verbatim() {
        let doc = br#"{"signatures":[],"signed":{"b":1,  "a":2}}"#;
        let env = parse_envelope(doc, &Limits::default()).unwrap();
        assert_eq!(env.signed, br#"{"b":1,  "a":2}"#);
        let again = encode_envelope(env.signed, &[]).unwrap();
        assert_eq!(
            parse_envelope(&again, &Limits::default()).unwrap().signed,
            env.signed
        );
    }

    #[test]
    fn signature_block_padding_must_be_spaces() {
        let block = encode_signature_block(&[], 64).unwrap().unwrap();
        assert_eq!(block.len(), 64);
        assert!(parse_signature_block(&block, &Limits::default())
            .unwrap()
            .is_empty());
        let mut bad = block.clone();
        bad[40] = b'x';
        assert!(matches!(
            parse_signature_block(&bad, &Limits::default()),
            Err(FormatError::BadPadding { offset: 40, .. })
        ));
        let mut nl = block;
        nl[63] = b'\n';
        assert!(matches!(
            parse_signature_block(&nl, &Limits::default()),
            Err(FormatError::BadPadding { .. })
        ));
        assert!(encode_signature_block(&[], 5).unwrap().is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let doc = br#"{"signatures":[],"signed":{},"extra":1}"#;
        assert!(matches!(
            parse_envelope(doc, &Limits::default()),
            Err(FormatError::Json { .. })
        ));
    }
}
