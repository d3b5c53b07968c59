//! `tandem-signer verity` and the dm-verity part of `sign` and `inspect`: the hash file
//! written from an image, read back and checked against it, the `roothash=` and `PARTUUID=`s
//! of the release's command lines held to the signed root hash, and the PARTUUID it derives
//! (docs/signing.md, "A verified root").

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use rand_core::{OsRng, RngCore};
use signer::files::{read_capped, write_bytes_atomic, Overwrite};
use signer::verity::{
    asset_cmdline, check_cmdline, check_hash_file, format, parse_salt, partuuid, suggested_cmdline,
    Verity,
};
use signer::AssetKind;

use crate::cli::SignArgs;
use crate::out::outln;

/// Block size of the trees this tool writes (data and hash): the filesystem's usual block,
/// the size every kernel's dm-verity reads.
const BLOCK: u32 = 4096;
/// Salt length drawn when none is given (veritysetup's default).
const SALT_LEN: usize = 32;
/// Largest hash file read: the tree of the largest image the format signs (4 GiB in 4 KiB
/// chunks: 32 MiB of hashes) with room to spare.
const MAX_HASH_FILE: u64 = 64 << 20;

/// `tandem-signer verity IMAGE -o HASHFILE [--salt HEX]` on the image `f` of `size` bytes
/// read from `image`: prints three lines, the root hash, the PARTUUID it derives (the one
/// the agent gives the slot) and the command line for the UKI.
pub fn verity(f: File, size: u64, image: &Path, out: &Path, salt: Option<&str>) -> Result<()> {
    let salt = match salt {
        Some(text) => parse_salt(text)
            .map_err(anyhow::Error::msg)
            .context("--salt")?,
        None => {
            let mut salt = vec![0u8; SALT_LEN];
            OsRng.fill_bytes(&mut salt);
            salt
        }
    };
    let mut uuid = [0u8; 16];
    OsRng.fill_bytes(&mut uuid);
    let area = format(io::BufReader::new(f), size, BLOCK, &salt, uuid)
        .with_context(|| format!("hashing {}", image.display()))?;
    write_bytes_atomic(out, 0o644, Overwrite::Replace, &area.bytes)?;
    let v = &area.verity;
    eprintln!(
        "wrote {}: {} bytes of hash area for {} data bytes (hash offset {} in the slot)",
        out.display(),
        v.hash_size(),
        v.data_size(),
        v.data_size()
    );
    outln!("{}", v.root_hash());
    outln!("{}", partuuid(&v.root_hash()));
    outln!("{}", suggested_cmdline(v));
    Ok(())
}

/// What `inspect` says of a release's verity root, on one line.
pub fn text(v: &Verity) -> String {
    format!(
        "root hash {}, PARTUUID {}, hash area {} bytes at offset {}",
        v.root_hash(),
        partuuid(&v.root_hash()),
        v.hash_size(),
        v.data_size()
    )
}

/// What `inspect --json` says of a release's verity root.
pub fn json(v: &Verity) -> serde_json::Value {
    serde_json::json!({
        "root_hash": v.root_hash().to_hex(),
        "partuuid": partuuid(&v.root_hash()).to_string(),
        "data_size": v.data_size(),
        "hash_size": v.hash_size(),
        "salt": hex::encode(v.salt()),
    })
}

/// For `sign --verity HASHFILE`: the hash file checked against the image (which is read
/// through and rewound), as the parameters to sign and a reader of the bytes to append.
pub fn hash_area(a: &SignArgs, image: &mut File, size: u64) -> Result<Option<(Verity, File)>> {
    let Some(path) = &a.verity else {
        return Ok(None);
    };
    let bytes = read_capped(path, MAX_HASH_FILE)?;
    let verity = check_hash_file(io::BufReader::new(&mut *image), size, &bytes)
        .with_context(|| format!("{} against {}", path.display(), a.image.display()))?;
    image
        .seek(SeekFrom::Start(0))
        .with_context(|| format!("rewinding {}", a.image.display()))?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Some((verity, file)))
}

/// Refuses a release whose UKI `.cmdline` or `--cmdline` says `roothash=` other than the
/// image's verity root hash (or says one when the image has none), or a `PARTUUID=` of its
/// root other than the one that root hash derives.
pub fn check_cmdlines(a: &SignArgs, verity: Option<&Verity>) -> Result<()> {
    if let Some(path) = &a.uki {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut read_at = signer::uki::file_reader(&f);
        if let Some(text) = asset_cmdline(AssetKind::Uki, 0, &mut read_at) {
            check_cmdline(&text, verity)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("the .cmdline of --uki {}", path.display()))?;
        }
    }
    if let Some(text) = &a.cmdline {
        check_cmdline(text, verity)
            .map_err(anyhow::Error::msg)
            .context("--cmdline")?;
    }
    Ok(())
}

/// The image followed by the hash area, when there is one.
pub fn with_hash_area<'a>(image: &'a mut File, area: Option<File>) -> impl Read + Send + 'a {
    let tail: Box<dyn Read + Send> = match area {
        Some(f) => Box::new(io::BufReader::new(f)),
        None => Box::new(io::empty()),
    };
    image.chain(tail)
}
