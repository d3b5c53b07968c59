//! The command line as typed ("low" arguments, CONTRIBUTING.md §1): clap derive, no validation beyond
//! parsing. [`crate::commands`] turns each into library calls.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

/// Keys, root of trust, signed OS image bundles and channel metadata for Tandem updates.
///
/// Exit status: 0 on success (for `verify`: the bundle is valid and its signature threshold
/// is met), 1 on any failure, 2 on a command-line mistake.
#[derive(Debug, Parser)]
#[command(name = "tandem-signer", version, about, max_term_width = 100)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make an Ed25519 key pair: NAME.pem (PKCS#8, private, mode 0600) and NAME.pub.pem (SPKI).
    Keygen {
        /// Base name of the key files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Create, rotate, sign or check root.json (the root of trust).
    #[command(subcommand)]
    Root(RootCommand),
    /// Compute the dm-verity hash tree of a root image (veritysetup's layout with its
    /// superblock) into a hash file for `sign --verity`, and print on stdout three lines: the
    /// root hash (for the UKI's `roothash=`), the PARTUUID it derives (the agent gives it to
    /// the slot it installs the image to) and a command line for the UKI naming both.
    Verity {
        /// The root filesystem image (a whole number of 4 KiB blocks).
        image: PathBuf,
        /// The hash file to write.
        #[arg(short = 'o', long = "out", value_name = "HASHFILE")]
        out: PathBuf,
        /// The salt, in hex (at most 256 bytes): the same image and salt give the same root
        /// hash. Default: 32 random bytes.
        #[arg(long, value_name = "HEX")]
        salt: Option<String>,
    },
    /// Sign a raw image into a bundle (parallel zstd chunks, per-chunk and image SHA-256).
    Sign(Box<SignArgs>),
    /// Add signatures to a bundle in place (the payload is not read or moved): sign with keys
    /// here, or attach signature files from `sign-request` (to a bundle, root or channel
    /// document), each checked first.
    AddSignature {
        /// The bundle (or, with --signature, the root or channel document).
        bundle: PathBuf,
        /// Private key (PKCS#8 PEM, or a pkcs11: URI); repeat for several.
        #[arg(
            long = "key",
            value_name = "KEY",
            required_unless_present = "signatures"
        )]
        keys: Vec<KeyArg>,
        /// A signature file from `sign-request`; repeat for several. Each must verify over the
        /// bundle's manifest (or the document's signed bytes), or nothing is attached.
        #[arg(long = "signature", value_name = "SIG", conflicts_with = "keys")]
        signatures: Vec<PathBuf>,
        /// The trusted root.json: also refuse a signature whose key is not in the role that
        /// signs the target (release for bundles and channels, root for roots).
        #[arg(long, value_name = "root.json", requires = "signatures")]
        root: Option<PathBuf>,
    },
    /// Write a small signing request (for a bundle: its header and manifest, not the payload),
    /// to sign on another machine with `sign-request`.
    Request {
        /// The bundle, or the document with --document.
        file: PathBuf,
        /// FILE is a root or channel document instead of a bundle.
        #[arg(long, value_name = "KIND", value_parser = ["root", "channel"])]
        document: Option<String>,
        /// The request file to write.
        #[arg(short = 'o', long = "out", value_name = "REQ")]
        out: PathBuf,
    },
    /// Sign a signing request (e.g. on an offline machine): shows what it signs on stderr,
    /// writes a signature file for `add-signature --signature`.
    SignRequest {
        /// The request from `tandem-signer request`.
        request: PathBuf,
        /// Private key (PKCS#8 PEM, or a pkcs11: URI): a release key, or a root key for a root
        /// document.
        #[arg(long = "key", value_name = "KEY")]
        key: KeyArg,
        /// The signature file to write.
        #[arg(short = 'o', long = "out", value_name = "SIG")]
        out: PathBuf,
    },
    /// Verify a bundle completely against a root: signatures, threshold, every chunk, image and
    /// boot asset hashes.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// The trusted root.json.
        #[arg(long, value_name = "root.json")]
        root: PathBuf,
    },
    /// Show what a bundle contains, and who signed it. Signatures are listed but NOT verified
    /// unless --root is given (use `verify` to check the whole bundle).
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// A trusted root.json: show each signer's roles in it and whether its signature
        /// verifies, and whether the release threshold is met.
        #[arg(long, value_name = "root.json")]
        root: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle and write its raw image; nothing is left at OUT unless the image hash matched.
    Extract {
        /// The bundle.
        bundle: PathBuf,
        /// The trusted root.json.
        #[arg(long, value_name = "root.json")]
        root: PathBuf,
        /// Where to write the raw image (or the asset).
        #[arg(short = 'o', long = "out", value_name = "RAW")]
        out: PathBuf,
        /// Write the boot asset called NAME instead of the root image.
        #[arg(long, value_name = "NAME")]
        asset: Option<String>,
    },
    /// Put a bundle in a repository directory and sign the channel's metadata.
    Publish(PublishArgs),
    /// Copy channels of a repository (directory or URL) onto a USB stick for air-gapped
    /// nodes: the root chain, the channel documents (and pause files) and their bundles, all
    /// verified against --root first; written beside --to and renamed in at the end.
    Mirror(MirrorArgs),
    /// List what a repository (directory or URL) published, channel by channel: release,
    /// bundle, security version, signed time and signers.
    Log(LogArgs),
}

#[derive(Debug, ClapArgs)]
pub struct MirrorArgs {
    /// The repository: a directory or an http(s):// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub from: String,
    /// A channel to copy; repeat for several.
    #[arg(long = "channel", value_name = "NAME", required = true)]
    pub channels: Vec<String>,
    /// The mirror directory to create (on the stick, e.g. /media/stick/tandem).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The trusted root.json everything is verified against (the chain is walked from it).
    #[arg(long, value_name = "root.json")]
    pub root: PathBuf,
    /// Replace an existing mirror at --to (the new one is complete before the swap).
    #[arg(long)]
    pub replace: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, ClapArgs)]
pub struct LogArgs {
    /// The repository: a directory or an http(s):// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub repo: String,
    /// A channel to list; repeat for several (default: every channel of a directory; needed
    /// for a URL, which cannot be listed).
    #[arg(long = "channel", value_name = "NAME")]
    pub channels: Vec<String>,
    /// A trusted root.json: check every signature and say whether nodes accept each channel.
    #[arg(long, value_name = "root.json")]
    pub root: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// A private key as typed: a PKCS#8 PEM file, or a key in a PKCS#11 token named by an RFC 7512
/// `pkcs11:` URI (a key file whose name starts with `pkcs11:` is reached as `./pkcs11:…`).
#[derive(Debug, Clone)]
pub enum KeyArg {
    /// A key file.
    File(PathBuf),
    /// A `pkcs11:` URI, parsed when the key is loaded.
    Pkcs11(String),
}

impl From<OsString> for KeyArg {
    fn from(arg: OsString) -> Self {
        match arg.into_string() {
            Ok(s) if s.starts_with(signer::pkcs11::SCHEME) => KeyArg::Pkcs11(s),
            Ok(s) => KeyArg::File(s.into()),
            Err(os) => KeyArg::File(os.into()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Write the first root.json (version 1).
    Init(RootContent),
    /// Write the next root (version N+1), to be signed by the old AND the new root keys.
    Rotate {
        /// The currently trusted root.json.
        #[arg(long, value_name = "root.json")]
        trusted: PathBuf,
        #[command(flatten)]
        content: RootContent,
    },
    /// Add signatures to a root document (for root keys held on other machines).
    Sign {
        /// The root document to sign (rewritten atomically).
        file: PathBuf,
        /// Private root key (PKCS#8 PEM, or a pkcs11: URI); repeat for several.
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<KeyArg>,
        /// The root it rotates from, to report whether the rotation is now valid.
        #[arg(long, value_name = "OLD.root.json")]
        trusted: Option<PathBuf>,
    },
    /// Check a root document: self-signed and fresh, or a valid rotation of --trusted.
    Verify {
        /// The root document.
        file: PathBuf,
        /// The root it rotates from.
        #[arg(long, value_name = "OLD.root.json")]
        trusted: Option<PathBuf>,
    },
}

#[derive(Debug, ClapArgs)]
pub struct RootContent {
    /// Output file.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: PathBuf,
    /// Public root key (SPKI PEM); repeat for several.
    #[arg(long = "root-key", value_name = "PUB.pem", required = true)]
    pub root_keys: Vec<PathBuf>,
    /// Root keys needed to sign the next root.
    #[arg(long, value_name = "N")]
    pub root_threshold: u32,
    /// Public release key (SPKI PEM); repeat for several.
    #[arg(long = "release-key", value_name = "PUB.pem", required = true)]
    pub release_keys: Vec<PathBuf>,
    /// Release keys needed to sign a bundle or channel metadata.
    #[arg(long, value_name = "N")]
    pub release_threshold: u32,
    /// Expiry: a duration from now (`365d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "365d")]
    pub expires: String,
    /// Private root key to sign with (PKCS#8 PEM, or a pkcs11: URI); repeat for several.
    #[arg(long = "sign-with", value_name = "KEY")]
    pub sign_with: Vec<KeyArg>,
    /// Write the document even if it is not signed by enough keys yet (finish with `root sign`).
    #[arg(long)]
    pub allow_partial: bool,
}

#[derive(Debug, ClapArgs)]
pub struct SignArgs {
    /// The raw image (file or block device).
    #[arg(long, value_name = "RAW")]
    pub image: PathBuf,
    /// Product (compatible string): A-Z a-z 0-9 . _ + -
    #[arg(long)]
    pub product: String,
    /// Release version (semver).
    #[arg(long, value_name = "SEMVER")]
    pub version: String,
    /// Anti-rollback counter: devices refuse bundles below their floor.
    #[arg(long, value_name = "N")]
    pub security_version: u64,
    /// Private release key (PKCS#8 PEM, or a pkcs11: URI); repeat to sign with several at
    /// once. Without any, the bundle is unsigned: sign it later with `add-signature`, here or
    /// through `request`.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<KeyArg>,
    /// The image's hash file from `verity` (or `veritysetup format`): checked against the
    /// image, appended to it, and its root hash signed; a UKI or --cmdline whose `roothash=`
    /// names another hash is refused.
    #[arg(long, value_name = "HASHFILE")]
    pub verity: Option<PathBuf>,
    /// Where the image is cut: `fixed:SIZE` blocks (a filesystem image's block size), or
    /// `cdc:MIN,AVG,MAX` content-defined chunks (FastCDC, cut on 4 KiB boundaries) for images
    /// whose data moves by other amounts. Sizes are powers of two from 4KiB.
    #[arg(long, default_value = "fixed:4KiB", value_name = "SPEC")]
    pub chunking: String,
    /// A bundle of a release nodes run now; repeat for several. Chunks the new image shares
    /// with them are compressed together (nodes reuse them), the others in small frames of
    /// their own, so an update from those releases fetches little more than what changed.
    #[arg(long = "previous", value_name = "BUNDLE")]
    pub previous: Vec<PathBuf>,
    /// With --previous: compress without a dictionary trained on the image (for comparison).
    #[arg(long)]
    pub no_dictionary: bool,
    /// Also write the release's chunk store, OUT.tandem.chunks: every distinct chunk of the
    /// image once, each its own frame, so that an update from any earlier release, listed
    /// with --previous or not, fetches little more than what changed. Publish it with the
    /// bundle (`publish` copies it along).
    #[arg(long)]
    pub chunk_store: bool,
    /// Chunk size of the boot assets: a power of two from 4KiB, e.g. 1MiB, 4MiB.
    #[arg(long, default_value = "1MiB", value_name = "SIZE")]
    pub chunk_size: String,
    /// zstd compression level.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub level: i32,
    /// Compression threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The bundle's creation time, like 2026-01-31T12:00:00Z (default: SOURCE_DATE_EPOCH if
    /// set, else now). The same image, options, keys and time give the same bundle, byte for
    /// byte, whatever the number of threads.
    #[arg(long, value_name = "TIME")]
    pub created: Option<String>,
    /// Output bundle.
    #[arg(short = 'o', long = "out", value_name = "OUT.tandem")]
    pub out: PathBuf,
    /// A Unified Kernel Image to carry as boot asset `uki` (in format version 3, like every
    /// bundle the signer writes). Not with --kernel/--initrd: a slot boots one or the other.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "initrd"])]
    pub uki: Option<PathBuf>,
    /// A kernel to carry as boot asset `kernel` (with --initrd).
    #[arg(long, value_name = "FILE", requires = "initrd")]
    pub kernel: Option<PathBuf>,
    /// An initramfs to carry as boot asset `initrd` (with --kernel).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line to carry as boot asset `cmdline`: 1 to 2048 bytes of printable
    /// ASCII, no leading or trailing space (the agent adds the slot's own parameters).
    #[arg(long, value_name = "TEXT")]
    pub cmdline: Option<String>,
    /// A further partition image to carry as boot asset NAME; repeat for several.
    #[arg(long = "partition-image", value_name = "NAME=FILE")]
    pub partition_images: Vec<String>,
}

#[derive(Debug, ClapArgs)]
pub struct PublishArgs {
    /// Repository directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Channel name.
    #[arg(long, value_name = "NAME")]
    pub channel: String,
    /// The bundle to publish.
    pub bundle: PathBuf,
    /// Private release key signing the channel metadata (PKCS#8 PEM, or a pkcs11: URI);
    /// repeat for several.
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<KeyArg>,
    /// Channel metadata expiry: a duration from now or an RFC 3339 time.
    #[arg(long, default_value = "30d", value_name = "WHEN")]
    pub expires: String,
    /// Share of nodes that install it, 0–100.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub percent: u8,
    /// The current root.json: verify the bundle and the channel threshold before writing, and
    /// place root.json and N.root.json in the repository (default: check against the
    /// repository's root.json). Other channels this root would refuse are listed; a root older
    /// than the repository's is refused.
    #[arg(long, value_name = "root.json")]
    pub root: Option<PathBuf>,
    /// Write the channel document even if its keys do not meet the release threshold, or
    /// when no root can check it (every node refuses such a channel until it is re-signed).
    #[arg(long)]
    pub allow_below_threshold: bool,
    /// Publish a release older (version or security version) than the channel's current one.
    #[arg(long)]
    pub allow_downgrade: bool,
}
