//! Signing across machines: the signed bytes of a bundle, root or channel document travel to an
//! offline signer as a small signing request, and each signature comes back as a small
//! signature file that is checked against its target before it is attached (docs/signing.md).
//! For a bundle only the 16-byte header and the manifest region travel (FORMAT §2–§3): the
//! signer parses and shows what it signs, and signs the same domain-separated message
//! (FORMAT §6) as [`crate::keys::sign_bytes`].

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::{Error, FormatError, KeyError, RequestError, Section, UsageError};
use crate::keys::{sign_bytes, KeyId, PublicKey, Signature, Signer};
use crate::limits::Limits;
use crate::role::RoleKind;
use crate::schema::{parse_envelope, Manifest};
use bundle::head::parse_manifest_region;
use bundle::{BundleHead, BundleHeader};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestWire {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    signed: String,
    sha256: Sha256Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureWire {
    kind: String,
    sha256: Sha256Digest,
    public: String,
    keyid: KeyId,
    sig: String,
}

/// Signed bytes to be signed elsewhere: a bundle's manifest region (with the header framing
/// it) or the `signed` bytes of a root or channel document.
#[derive(Debug, Clone)]
pub struct SigningRequest {
    kind: RoleKind,
    header: Option<BundleHeader>,
    signed: Vec<u8>,
}

impl SigningRequest {
    /// The request for a bundle: its header and exact manifest region.
    pub fn for_bundle(head: &BundleHead) -> Self {
        SigningRequest {
            kind: RoleKind::Bundle,
            header: Some(*head.header()),
            signed: head.manifest_bytes().to_vec(),
        }
    }

    /// The request for a root or channel document: its exact signed bytes.
    pub fn for_document(kind: RoleKind, doc: &[u8], limits: &Limits) -> Result<Self, Error> {
        if kind == RoleKind::Bundle {
            return Err(UsageError::invalid("a bundle is not a document: use for_bundle").into());
        }
        Ok(SigningRequest {
            kind,
            header: None,
            signed: document_signed_bytes(doc, limits)?.to_vec(),
        })
    }

    /// The request as JSON: `kind`, `header` (bundles) and `signed` in hex, `sha256` of `signed`.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let wire = RequestWire {
            kind: self.kind.tag().into(),
            header: self.header.map(|h| hex::encode(h.encode())),
            signed: hex::encode(&self.signed),
            sha256: self.sha256(),
        };
        serde_json::to_vec_pretty(&wire).map_err(|_| Error::Bug("a request does not serialise"))
    }

    /// Parses a request; refuses an unknown kind, a header `limits` refuse, and carried bytes
    /// whose length or digest differ from what the request states.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, Error> {
        let wire: RequestWire = serde_json::from_slice(bytes).map_err(RequestError::Json)?;
        let kind = parse_kind(&wire.kind)?;
        let signed = hex::decode(&wire.signed).map_err(|_| RequestError::Hex("signed"))?;
        let header = match (kind, &wire.header) {
            (RoleKind::Bundle, Some(h)) => {
                let bytes = hex::decode(h).map_err(|_| RequestError::Hex("header"))?;
                let header = BundleHeader::parse(&bytes, limits)?;
                if bytes.len() != header.encoded_len() {
                    return Err(RequestError::Hex("header").into());
                }
                Some(header)
            }
            (RoleKind::Root | RoleKind::Channel, None) => None,
            _ => return Err(RequestError::Kind(wire.kind).into()),
        };
        if header.is_some_and(|h| h.manifest_len as usize != signed.len()) {
            return Err(RequestError::Hex("signed").into());
        }
        let request = SigningRequest {
            kind,
            header,
            signed,
        };
        check_digest(wire.sha256, request.sha256())?;
        Ok(request)
    }

    /// What is to be signed.
    pub fn kind(&self) -> RoleKind {
        self.kind
    }

    /// SHA-256 of the signed bytes.
    pub fn sha256(&self) -> Sha256Digest {
        Sha256Digest::of(&self.signed)
    }

    /// A bundle's manifest, parsed but NOT verified: for showing the signer what it signs.
    pub fn manifest(&self, limits: &Limits) -> Result<Manifest, Error> {
        let header = self.header.ok_or_else(|| {
            UsageError::invalid(format!("a {} request has no manifest", self.kind))
        })?;
        parse_manifest_region(&self.signed, header, None, limits)
    }

    /// A document's signed JSON, indented, NOT verified: for showing the signer what it signs.
    pub fn document_text(&self) -> Result<String, Error> {
        let json = |source| FormatError::Json {
            section: Section::Metadata,
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(&self.signed).map_err(json)?;
        Ok(serde_json::to_string_pretty(&value).map_err(json)?)
    }

    /// Signs the request with `key`: the same domain-separated message as signing the bundle
    /// or document directly ([`sign_bytes`]).
    pub fn sign<K: Signer>(&self, key: &K) -> Result<SignatureFile, Error> {
        let signature = sign_bytes(self.kind, &self.signed, std::slice::from_ref(key))?
            .pop()
            .ok_or(Error::Bug("one key gave no signature"))?;
        Ok(SignatureFile {
            kind: self.kind,
            sha256: self.sha256(),
            public: *key.public(),
            signature,
        })
    }
}

/// The exact signed bytes of a root or channel document.
pub fn document_signed_bytes<'a>(doc: &'a [u8], limits: &Limits) -> Result<&'a [u8], Error> {
    Ok(parse_envelope(doc, limits)?.signed)
}

/// Whether a document is a root (its signed object has `roles`) or a channel (`channel`).
pub fn document_kind(doc: &[u8], limits: &Limits) -> Result<RoleKind, Error> {
    let signed = document_signed_bytes(doc, limits)?;
    let value: serde_json::Value =
        serde_json::from_slice(signed).map_err(|source| FormatError::Json {
            section: Section::Metadata,
            source,
        })?;
    match (value.get("roles"), value.get("channel")) {
        (Some(_), None) => Ok(RoleKind::Root),
        (None, Some(_)) => Ok(RoleKind::Channel),
        _ => Err(FormatError::field(
            Section::Metadata,
            "signed",
            "neither a root (`roles`) nor a channel (`channel`) document",
        )
        .into()),
    }
}

/// One signature made from a request: what it signs (kind and digest), the signer's public key
/// (so the build machine can check it without the root) and the signature.
#[derive(Debug, Clone)]
pub struct SignatureFile {
    kind: RoleKind,
    sha256: Sha256Digest,
    public: PublicKey,
    signature: Signature,
}

impl SignatureFile {
    /// The file as JSON: `kind`, `sha256`, `public`, `keyid`, `sig`.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let wire = SignatureWire {
            kind: self.kind.tag().into(),
            sha256: self.sha256,
            public: hex::encode(self.public.raw()),
            keyid: self.signature.keyid,
            sig: hex::encode(self.signature.sig),
        };
        serde_json::to_vec_pretty(&wire).map_err(|_| Error::Bug("a signature does not serialise"))
    }

    /// Parses a signature file; its key id must be the id of its public key.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let wire: SignatureWire = serde_json::from_slice(bytes).map_err(RequestError::Json)?;
        let kind = parse_kind(&wire.kind)?;
        let public = PublicKey::from_raw(&decode_hex(&wire.public, "public")?)?;
        if public.id() != wire.keyid {
            return Err(RequestError::KeyId(wire.keyid).into());
        }
        Ok(SignatureFile {
            kind,
            sha256: wire.sha256,
            public,
            signature: Signature {
                keyid: wire.keyid,
                sig: decode_hex(&wire.sig, "sig")?,
            },
        })
    }

    /// What it signs.
    pub fn kind(&self) -> RoleKind {
        self.kind
    }

    /// The signer's key id.
    pub fn keyid(&self) -> KeyId {
        self.signature.keyid
    }

    /// Checks the signature against what it is to be attached to: a `kind` whose signed bytes
    /// are `signed` (a bundle's manifest region, a document's signed bytes) — the same kind,
    /// the same digest, and a valid signature over them.
    pub fn check(&self, kind: RoleKind, signed: &[u8]) -> Result<CheckedSignature, RequestError> {
        if kind != self.kind {
            return Err(RequestError::OtherKind {
                signs: self.kind,
                target: kind,
            });
        }
        let target = Sha256Digest::of(signed);
        if target != self.sha256 {
            return Err(RequestError::OtherDocument {
                kind,
                signed: self.sha256,
                target,
            });
        }
        if !self
            .public
            .verify(&kind.message(signed), &self.signature.sig)
        {
            return Err(RequestError::BadSignature {
                kind,
                keyid: self.keyid(),
            });
        }
        Ok(CheckedSignature(self.signature.clone()))
    }
}

/// A signature known to verify over some signed bytes (made by [`SignatureFile::check`]).
#[derive(Debug, Clone)]
pub struct CheckedSignature(Signature);

impl CheckedSignature {
    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.0
    }
}

/// `existing` then `checked`; refuses a key given twice or one that already signed.
pub(crate) fn merge(
    existing: &[Signature],
    checked: &[CheckedSignature],
) -> Result<Vec<Signature>, KeyError> {
    let mut all = existing.to_vec();
    for c in checked {
        let id = c.0.keyid;
        if existing.iter().any(|s| s.keyid == id) {
            return Err(KeyError::AlreadySigned(id));
        }
        if all.iter().any(|s| s.keyid == id) {
            return Err(KeyError::Duplicate(id));
        }
        all.push(c.0.clone());
    }
    Ok(all)
}

fn parse_kind(tag: &str) -> Result<RoleKind, RequestError> {
    [RoleKind::Bundle, RoleKind::Root, RoleKind::Channel]
        .into_iter()
        .find(|k| k.tag() == tag)
        .ok_or_else(|| RequestError::Kind(tag.into()))
}

fn check_digest(stated: Sha256Digest, actual: Sha256Digest) -> Result<(), RequestError> {
    if stated != actual {
        return Err(RequestError::Digest { stated, actual });
    }
    Ok(())
}

fn decode_hex<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], RequestError> {
    crate::digest::parse_lower_hex::<N>(s).ok_or(RequestError::Hex(field))
}
