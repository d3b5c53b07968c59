//! Signing across machines: a bundle's signed bytes travel to an offline signer as a small
//! signing request, and each signature comes back as a small signature file that is checked
//! against the bundle before it is attached (docs/signing.md). Only the 16-byte header and
//! the manifest region travel (FORMAT §2–§3): the signer parses and shows what it signs, and
//! signs the same domain-separated message (FORMAT §6) as [`crate::keys::sign_bytes`].

use serde::{Deserialize, Serialize};

use crate::bundle::{parse_manifest_region, BundleHead, BundleHeader};
use crate::digest::Sha256Digest;
use crate::error::Error;
use crate::keys::{sign_bytes, KeyId, PublicKey, SecretKey, Signature};
use crate::limits::Limits;
use crate::role::RoleKind;
use crate::schema::Manifest;

/// What a request or signature file signs: only bundles so far.
const KIND: RoleKind = RoleKind::Bundle;

/// A request or signature file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not the JSON this module writes.
    #[error("not a signing request or signature file: {0}")]
    Json(#[from] serde_json::Error),
    /// A kind other than `bundle`.
    #[error("kind `{0}` is not supported (only `bundle`)")]
    Kind(String),
    /// A field is not valid hex or has the wrong length.
    #[error("field `{0}` is not valid lowercase hex of the right length")]
    Hex(&'static str),
    /// The stated digest is not the digest of the carried bytes.
    #[error(
        "sha256 {stated} does not match the carried bytes ({actual}): the request was altered"
    )]
    Digest {
        /// The digest written in the request.
        stated: Sha256Digest,
        /// The digest of the bytes it carries.
        actual: Sha256Digest,
    },
    /// The key id is not the id of the carried public key.
    #[error("key id {0} is not the id of the public key it carries")]
    KeyId(KeyId),
    /// The signature is for other signed bytes.
    #[error("it signs manifest sha256 {signed}, but this bundle's is {bundle}: it is for another bundle")]
    OtherBundle {
        /// The digest the signature file names.
        signed: Sha256Digest,
        /// The bundle's manifest digest.
        bundle: Sha256Digest,
    },
    /// The signature does not verify over the bundle's manifest.
    #[error(
        "the signature by key {0} does not verify over this bundle's manifest: it was altered"
    )]
    BadSignature(KeyId),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestWire {
    kind: String,
    header: String,
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

/// A bundle's header and manifest region, to be signed elsewhere.
#[derive(Debug, Clone)]
pub struct SigningRequest {
    header: BundleHeader,
    signed: Vec<u8>,
}

impl SigningRequest {
    /// The request for a bundle: its header and exact manifest region.
    pub fn for_bundle(head: &BundleHead) -> Self {
        SigningRequest {
            header: *head.header(),
            signed: head.manifest_bytes().to_vec(),
        }
    }

    /// The request as JSON: `kind`, `header` and `signed` in hex, and `sha256` of `signed`.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let wire = RequestWire {
            kind: KIND.tag().into(),
            header: hex::encode(self.header.encode()),
            signed: hex::encode(&self.signed),
            sha256: self.sha256(),
        };
        serde_json::to_vec_pretty(&wire).map_err(|_| Error::Bug("a request does not serialise"))
    }

    /// Parses a request; refuses another kind, a header `limits` refuse, and carried bytes
    /// whose length or digest differ from what the request states.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, Error> {
        let wire: RequestWire = serde_json::from_slice(bytes).map_err(RequestError::Json)?;
        check_kind(&wire.kind)?;
        let header: [u8; BundleHeader::LEN] = decode_hex(&wire.header, "header")?;
        let header = BundleHeader::parse(&header, limits)?;
        let signed = hex::decode(&wire.signed).map_err(|_| RequestError::Hex("signed"))?;
        if signed.len() != header.manifest_len as usize {
            return Err(RequestError::Hex("signed").into());
        }
        let request = SigningRequest { header, signed };
        check_digest(wire.sha256, request.sha256())?;
        Ok(request)
    }

    /// SHA-256 of the signed bytes (the bundle's manifest region).
    pub fn sha256(&self) -> Sha256Digest {
        Sha256Digest::of(&self.signed)
    }

    /// The manifest, parsed but NOT verified: for showing the signer what it signs.
    pub fn manifest(&self, limits: &Limits) -> Result<Manifest, Error> {
        parse_manifest_region(&self.signed, self.header, limits)
    }

    /// Signs the request with `key`: the same domain-separated message as signing the bundle
    /// directly ([`sign_bytes`]).
    pub fn sign(&self, key: &SecretKey) -> Result<SignatureFile, Error> {
        let signature = sign_bytes(KIND, &self.signed, std::slice::from_ref(key))
            .pop()
            .ok_or(Error::Bug("one key gave no signature"))?;
        Ok(SignatureFile {
            sha256: self.sha256(),
            public: *key.public(),
            signature,
        })
    }
}

/// One signature made from a request: the digest of what it signs, the signer's public key
/// (so the build machine can check it without the root) and the signature.
#[derive(Debug, Clone)]
pub struct SignatureFile {
    sha256: Sha256Digest,
    public: PublicKey,
    signature: Signature,
}

impl SignatureFile {
    /// The file as JSON: `kind`, `sha256`, `public`, `keyid`, `sig`.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let wire = SignatureWire {
            kind: KIND.tag().into(),
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
        check_kind(&wire.kind)?;
        let public = PublicKey::from_raw(&decode_hex(&wire.public, "public")?)?;
        if public.id() != wire.keyid {
            return Err(RequestError::KeyId(wire.keyid).into());
        }
        Ok(SignatureFile {
            sha256: wire.sha256,
            public,
            signature: Signature {
                keyid: wire.keyid,
                sig: decode_hex(&wire.sig, "sig")?,
            },
        })
    }

    /// The signer's key id.
    pub fn keyid(&self) -> KeyId {
        self.signature.keyid
    }

    /// Checks the signature against the bundle it is to be attached to: the same manifest
    /// digest, and a valid signature over that manifest.
    pub fn check(&self, head: &BundleHead) -> Result<CheckedSignature, RequestError> {
        check_digest_of(self.sha256, head.manifest_sha256())?;
        let message = KIND.message(head.manifest_bytes());
        if !self.public.verify(&message, &self.signature.sig) {
            return Err(RequestError::BadSignature(self.keyid()));
        }
        Ok(CheckedSignature(self.signature.clone()))
    }
}

/// A signature known to verify over a bundle's manifest (made by [`SignatureFile::check`]).
#[derive(Debug, Clone)]
pub struct CheckedSignature(Signature);

impl CheckedSignature {
    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.0
    }
}

fn check_kind(kind: &str) -> Result<(), RequestError> {
    if kind != KIND.tag() {
        return Err(RequestError::Kind(kind.into()));
    }
    Ok(())
}

fn check_digest(stated: Sha256Digest, actual: Sha256Digest) -> Result<(), RequestError> {
    if stated != actual {
        return Err(RequestError::Digest { stated, actual });
    }
    Ok(())
}

fn check_digest_of(signed: Sha256Digest, bundle: Sha256Digest) -> Result<(), RequestError> {
    if signed != bundle {
        return Err(RequestError::OtherBundle { signed, bundle });
    }
    Ok(())
}

fn decode_hex<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], RequestError> {
    crate::digest::parse_lower_hex::<N>(s).ok_or(RequestError::Hex(field))
}
