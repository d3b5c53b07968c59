//! The library's error type, grouped by cause (CONTRIBUTING.md §2): [`FormatError`] for malformed or
//! hostile bytes, [`VerifyError`] for well-formed input that fails a security check,
//! [`KeyError`] for key files, [`UsageError`] for caller mistakes (never caused by untrusted
//! input), plus I/O. The agent maps each group to a report reason without matching strings.

use std::fmt;
use std::io;

use crate::digest::Sha256Digest;
pub use crate::keys::KeyError;
use crate::keys::KeyId;
use crate::role::{RoleKind, RoleName};

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not follow `docs/FORMAT.md`.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The bytes are well formed but fail a signature, freshness, version or hash check.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A key could not be read or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The caller asked for something impossible (never caused by untrusted data).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A signing request or signature file that cannot be used.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Reading or writing failed. Displays the context; the I/O error is the `source()`.
    #[error("{context}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An internal invariant broke: a bug in this crate, never the input's fault.
    #[error("internal error: {0} (this is a bug in tandem-signer, please report it)")]
    Bug(&'static str),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<atomic_file::Error> for Error {
    fn from(e: atomic_file::Error) -> Error {
        Error::Io {
            context: format!("{} {}", e.step, e.path.display()),
            source: e.source,
        }
    }
}

/// A section of a bundle or signed document, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Section {
    /// The bundle header.
    Header,
    /// The bundle manifest.
    Manifest,
    /// The bundle signature block.
    SignatureBlock,
    /// The bundle payload.
    Payload,
    /// A signed metadata document (`root.json`, a channel document).
    Metadata,
    /// The compression dictionary (format version 3).
    Dictionary,
    /// The chunk index (format version 3).
    Index,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "bundle header",
            Section::Manifest => "manifest",
            Section::SignatureBlock => "signature block",
            Section::Payload => "payload",
            Section::Metadata => "metadata document",
            Section::Dictionary => "dictionary",
            Section::Index => "chunk index",
        })
    }
}

/// Malformed or hostile bytes (docs/FORMAT.md is not followed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with `TANDEM\0` (FORMAT §2).
    #[error("not a tandem bundle: bad magic {found:02x?}")]
    BadMagic {
        /// The first 7 bytes found.
        found: [u8; 7],
    },
    /// A format version this code does not know (FORMAT §2).
    #[error("unsupported bundle format version {0} (this build reads versions 1, 2 and 3)")]
    UnsupportedVersion(u8),
    /// A section's announced length is above its limit (checked before any allocation).
    #[error("{section} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Which section.
        section: Section,
        /// The announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The file ends before the length its header and manifest announce.
    #[error("truncated bundle: expected {expected} bytes, the file has {actual}")]
    Truncated {
        /// Expected total length.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The file goes on after the length its header and manifest announce.
    #[error("trailing data after the bundle: expected {expected} bytes, the file has {actual}")]
    TrailingData {
        /// Expected total length.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// A reserved region holds something other than ASCII spaces after its JSON (FORMAT §3, §4).
    #[error("{section}: byte {offset} of its padding is not an ASCII space")]
    BadPadding {
        /// Which section.
        section: Section,
        /// Offset of the first bad byte within the section.
        offset: u64,
    },
    /// JSON that does not parse into the expected structure.
    #[error("{section}: invalid JSON: {source}")]
    Json {
        /// Which section.
        section: Section,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A field with a value the spec does not allow.
    #[error("{section}: field `{field}`: {reason}")]
    Field {
        /// Which section.
        section: Section,
        /// Field name (dotted path).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FormatError {
    /// A field of `section` that breaks its rule, and why.
    pub fn field(section: Section, field: impl Into<String>, reason: impl Into<String>) -> Self {
        FormatError::Field {
            section,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Well-formed input that fails a security check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not enough distinct trusted keys signed (docs/DESIGN.md §2).
    #[error("{0}")]
    ThresholdNotMet(Box<ThresholdReport>),
    /// The document expired (freeze attack).
    #[error("{kind} metadata expired at {expires} (now {now})")]
    Expired {
        /// Which document.
        kind: RoleKind,
        /// Its expiry.
        expires: String,
        /// The time used for the check.
        now: String,
    },
    /// A new root whose version is not the trusted version + 1.
    #[error(
        "root version {found} cannot follow trusted root version {trusted}: expected {expected}"
    )]
    RootVersion {
        /// The trusted root's version.
        trusted: u64,
        /// The required version.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// The root rotation chain is longer than the limit.
    #[error("more than {max} root rotations in one update")]
    TooManyRootRotations {
        /// The limit.
        max: u32,
    },
    /// Channel metadata older than the newest already seen (rollback attack).
    #[error("channel metadata version {found} is older than version {min} already seen")]
    ChannelRollback {
        /// Lowest acceptable version.
        min: u64,
        /// Version found.
        found: u64,
    },
    /// Metadata for another channel than the one asked for.
    #[error("metadata is for channel `{found}`, expected `{expected}`")]
    WrongChannel {
        /// Expected channel.
        expected: String,
        /// Channel found.
        found: String,
    },
    /// The bundle does not match the channel's release (mix-and-match attack).
    #[error("bundle does not match the channel's release: {field} is {actual}, the channel says {expected}")]
    ReleaseMismatch {
        /// The field that differs.
        field: &'static str,
        /// Value from the channel metadata.
        expected: String,
        /// Value from the bundle.
        actual: String,
    },
    /// A chunk failed to decode or its hash differs from the manifest.
    #[error("chunk {index}: {fault}")]
    Chunk {
        /// Chunk index in the manifest.
        index: u64,
        /// What failed.
        fault: ChunkFault,
    },
    /// A boot asset's chunk failed to decode or its hash differs from the manifest.
    #[error("asset `{asset}` chunk {index}: {fault}")]
    AssetChunk {
        /// The asset's name.
        asset: Box<str>,
        /// Chunk index within the asset.
        index: u64,
        /// What failed.
        fault: Box<ChunkFault>,
    },
    /// A signed `cmdline` asset's text breaks the command line rule ([`proto::check_cmdline`]).
    #[error("asset `{asset}` is not a kernel command line: {reason}")]
    Cmdline {
        /// The asset's name.
        asset: Box<str>,
        /// The rule it breaks.
        reason: proto::CmdlineError,
    },
    /// A whole boot asset's hash differs from the manifest.
    #[error("asset `{asset}` hash mismatch: manifest says {expected}, data is {actual}")]
    AssetHash {
        /// The asset's name.
        asset: Box<str>,
        /// From the manifest.
        expected: Sha256Digest,
        /// Computed.
        actual: Sha256Digest,
    },
    /// The whole image's hash differs from the manifest.
    #[error("image hash mismatch: manifest says {expected}, image is {actual}")]
    ImageHash {
        /// From the manifest.
        expected: Sha256Digest,
        /// Computed.
        actual: Sha256Digest,
    },
}

/// Why a chunk was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkFault {
    /// The zstd frame is corrupt or decompresses to more than the chunk's size.
    #[error("zstd frame does not decode within {max} bytes: {reason}")]
    Decompress {
        /// The chunk's raw length (output cap).
        max: u64,
        /// The decoder's message.
        reason: String,
    },
    /// The frame's header declares a window larger than FORMAT §5 allows.
    #[error("the zstd frame declares a {size}-byte window, more than {max} (FORMAT §5)")]
    Window {
        /// The declared window size.
        size: u64,
        /// The bound, [`crate::frame::MAX_WINDOW_LOG`] as bytes.
        max: u64,
    },
    /// The stored bytes are not exactly one zstd frame (FORMAT §5).
    #[error("the stored bytes are not exactly one zstd frame: {0}")]
    Frame(String),
    /// The frame decoded to the wrong length.
    #[error("decoded to {actual} bytes, expected {expected}")]
    Length {
        /// Expected raw length.
        expected: u64,
        /// Actual decoded length.
        actual: u64,
    },
    /// The decoded bytes hash to another value than the manifest's.
    #[error("sha256 mismatch: manifest says {expected}, data is {actual}")]
    Hash {
        /// From the manifest.
        expected: Sha256Digest,
        /// Computed.
        actual: Sha256Digest,
    },
    /// The compressed bytes given have another length than the manifest's.
    #[error("compressed length {actual} differs from the manifest's {expected}")]
    CompressedLength {
        /// From the manifest.
        expected: u64,
        /// Given.
        actual: u64,
    },
}

/// The details of a failed threshold check, for a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdReport {
    /// The document kind that was checked.
    pub kind: RoleKind,
    /// The role whose keys were counted.
    pub role: RoleName,
    /// Required number of distinct keys.
    pub threshold: u32,
    /// Distinct trusted keys whose signature verified.
    pub valid: Vec<KeyId>,
    /// Trusted keys whose signature did not verify.
    pub invalid: Vec<KeyId>,
    /// Signatures by keys the role does not trust.
    pub untrusted: Vec<KeyId>,
    /// Trusted keys that have not (validly) signed yet.
    pub missing: Vec<KeyId>,
}

impl fmt::Display for ThresholdReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "threshold not met for {} ({} role): {} of {} {} keys",
            self.kind,
            self.role,
            self.valid.len(),
            self.threshold,
            self.role
        )?;
        write_ids(f, "signed by", &self.valid)?;
        write_ids(f, "bad signatures from", &self.invalid)?;
        write_ids(f, "untrusted signers", &self.untrusted)?;
        write_ids(f, "trusted keys that could still sign", &self.missing)
    }
}

fn write_ids(f: &mut fmt::Formatter<'_>, label: &str, ids: &[KeyId]) -> fmt::Result {
    if ids.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = ids.iter().map(KeyId::short).collect();
    write!(f, "; {label}: {}", list.join(", "))
}

/// The caller asked for something impossible. Never caused by untrusted input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// An invalid argument, with the fix.
    #[error("{0}")]
    Invalid(String),
}

impl UsageError {
    /// An invalid argument, with the fix in `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        UsageError::Invalid(msg.into())
    }
}

/// A request or signature file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not the JSON this module writes.
    #[error("not a signing request or signature file: {0}")]
    Json(#[from] serde_json::Error),
    /// An unknown kind, or a bundle request without its header (or a document with one).
    #[error("kind `{0}` is not `bundle` (with a header), `root` or `channel` (without)")]
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
    /// The signature is for another kind of document.
    #[error("it signs a {signs}, not a {target}")]
    OtherKind {
        /// What the signature file signs.
        signs: RoleKind,
        /// What it was to be attached to.
        target: RoleKind,
    },
    /// The signature is for other signed bytes.
    #[error("it signs sha256 {signed}, but this {kind}'s signed bytes have {target}: it is for another {kind}")]
    OtherDocument {
        /// The kind of both.
        kind: RoleKind,
        /// The digest the signature file names.
        signed: Sha256Digest,
        /// The digest of the target's signed bytes.
        target: Sha256Digest,
    },
    /// The signature does not verify over the target's signed bytes.
    #[error("the signature by key {keyid} does not verify over this {kind}: it was altered")]
    BadSignature {
        /// The kind of the target.
        kind: RoleKind,
        /// The signer.
        keyid: KeyId,
    },
}
