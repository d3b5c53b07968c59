//! Shared pieces of the fuzz targets: the limits and clock they run with, a fixed test key
//! and the root it signs, the contract every parsed manifest must keep, and tiny in-memory
//! `BlockDevice` / `FileStore` implementations (kept here, so the targets do not depend on
//! the simulators the `partitions` crate ships for its own tests).
//!
//! A target panics only when a contract is broken: that is the finding libFuzzer reports.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use partitions::io::{BlockDevice, FileStore, NewFile};
use signer::metadata::{root_signed_bytes, sign_document, RootSpec};
use signer::verify::trust_root;
use signer::{Limits, Manifest, RoleKind, Root, SecretKey, Verified};
use time::OffsetDateTime;

/// A throwaway Ed25519 key (seed bytes 1..=32) that signs nothing outside these targets.
const FUZZ_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g
-----END PRIVATE KEY-----
";

/// The default limits, as the agent uses them.
pub fn limits() -> Limits {
    Limits::default()
}

/// "Now" for expiry checks: the epoch, so nothing a seed carries has expired and a run does
/// not depend on the wall clock.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
}

/// The fixed key and a version-1 root in which it holds the root and release roles
/// (threshold 1 each), as bytes and verified.
pub struct Trust {
    /// The key.
    pub key: SecretKey,
    /// `root.json` bytes.
    pub root_doc: Vec<u8>,
    /// The same root, verified.
    pub root: Verified<Root>,
}

/// The process-wide [`Trust`], built once.
pub fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let key = SecretKey::from_pem(FUZZ_KEY_PEM).expect("the fuzz key parses");
        let spec = RootSpec {
            version: 1,
            expires: OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 1000),
            root_keys: vec![*key.public()],
            root_threshold: 1,
            release_keys: vec![*key.public()],
            release_threshold: 1,
        };
        let signed = root_signed_bytes(&spec).expect("root spec is valid");
        let root_doc = sign_document(RoleKind::Root, &signed, std::slice::from_ref(&key))
            .expect("signing the fuzz root");
        let root = trust_root(&root_doc, now(), &limits()).expect("the fuzz root verifies");
        Trust {
            key,
            root_doc,
            root,
        }
    })
}

/// What every manifest that parsed must satisfy, for a bundle of `file_len` bytes whose
/// length check passed: the documented limits hold; the image's chunks tile it in order, each
/// within the chunking's maximum; the frames (one per piece: a frame holds one chunk, or from
/// format version 3 several) lie inside the payload, in order, without overlap; the
/// dictionary and index follow the payload to the end of the file.
pub fn check_manifest(m: &Manifest, file_len: u64, limits: &Limits) {
    assert_eq!(m.file_len(), file_len, "file length check passed");
    assert!(m.chunk_size() <= limits.max_chunk_size, "chunk size limit");
    assert!(
        m.chunk_size() >= signer::limits::MIN_CHUNK_SIZE,
        "chunk size floor"
    );
    assert!(m.chunking().max <= limits.max_chunk_size, "chunking limit");
    assert!(m.header().index_len <= limits.max_index_len, "index limit");
    assert!(
        m.header().dictionary_len <= limits.max_dictionary_len,
        "dictionary limit"
    );
    assert_eq!(
        m.dictionary().map_or(0, <[u8]>::len),
        m.header().dictionary_len as usize,
        "the dictionary is the stored one"
    );
    if let Some(v) = m.verity() {
        assert_eq!(
            v.data_size() + v.hash_size(),
            m.image_size(),
            "the verity data and hash area tile the image"
        );
        assert_eq!(
            v.data_size() % u64::from(v.data_block_size()),
            0,
            "whole data blocks"
        );
        assert!(v.salt().len() <= signer::verity::MAX_SALT_LEN, "salt limit");
        let partuuid = signer::verity::partuuid(&v.root_hash());
        assert_eq!(
            partuuid.as_bytes().as_slice(),
            v.root_hash().0.get(..16).unwrap_or_default(),
            "the PARTUUID is the root hash's first 128 bits"
        );
        assert!(
            signer::verity::check_cmdline(&signer::verity::suggested_cmdline(v), Some(v)).is_ok(),
            "the suggested command line passes the roothash=/PARTUUID= rule"
        );
    }
    let chunks = m.chunks();
    assert!(
        chunks.len() as u64 <= limits.max_chunk_count,
        "chunk count limit"
    );
    assert_eq!(chunks.len() as u64, m.chunk_count(), "every chunk listed");
    let payload_end = m.payload_offset() + m.payload_len();
    assert_eq!(
        payload_end + m.header().tail_len(),
        file_len,
        "payload, dictionary and index end at the end of the file"
    );
    let mut image_offset = 0u64;
    for c in chunks {
        assert_eq!(c.image_offset(), image_offset, "chunks tile the image");
        assert!(c.len() >= 1 && c.len() <= m.chunking().max, "chunk length");
        image_offset += u64::from(c.len());
    }
    assert_eq!(image_offset, m.image_size(), "chunks cover the image");
    let mut next_stored = m.payload_offset();
    for piece in signer::schema::pieces(chunks) {
        let Some(first) = piece.first() else {
            panic!("an empty piece");
        };
        assert!(
            piece.iter().all(|c| c.frame() == first.frame()),
            "a piece is one frame"
        );
        let raw: u64 = piece.iter().map(|c| u64::from(c.len())).sum();
        assert!(raw <= u64::from(limits.max_chunk_size), "frame raw limit");
        if let Some(range) = m.chunk_file_range(first) {
            assert!(range.start >= next_stored, "frames in order, no overlap");
            assert!(range.end <= payload_end, "frame inside the payload");
            next_stored = range.end;
        }
    }
}

/// The manifest region `manifest` (its first JSON value; the padding is dropped) with
/// `index.sha256` and `index.size` set to those of `index`, and the `dictionary` named by
/// `dictionary` (or left out when it is empty): what carries a fuzzer's index and dictionary
/// bytes past the hash check to the record parser (FORMAT §3.2). `None` when the region does
/// not start with a JSON object.
pub fn rehash_tail(manifest: &[u8], dictionary: &[u8], index: &[u8]) -> Option<Vec<u8>> {
    let mut values =
        serde_json::Deserializer::from_slice(manifest).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Object(mut doc))) = values.next() else {
        return None;
    };
    let named = |bytes: &[u8]| {
        serde_json::json!({
            "sha256": signer::Sha256Digest::of(bytes).to_hex(),
            "size": bytes.len(),
        })
    };
    if let Some(serde_json::Value::Object(entry)) = doc.get_mut("index") {
        if let serde_json::Value::Object(fresh) = named(index) {
            entry.extend(fresh);
        }
    }
    if dictionary.is_empty() {
        doc.remove("dictionary");
    } else {
        doc.insert("dictionary".into(), named(dictionary));
    }
    serde_json::to_vec(&doc).ok()
}

/// An unnamed scratch file (created, then unlinked while open), for a spilled index.
pub fn scratch() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("index-spill-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("a scratch file");
    std::fs::remove_file(&path).expect("unlinking the scratch file");
    file
}

/// A format version 3 bundle of `manifest` and `index` (no dictionary, an empty signature
/// block) read twice: with its index left in the bundle to be streamed (what the agent does)
/// and with its index in the head (every other reader). `None` when the streamed read refuses
/// the manifest; the whole read `None` when it refuses.
pub fn read_both(manifest: &[u8], index: &[u8]) -> Option<(Manifest, Option<Manifest>)> {
    let header = signer::BundleHeader {
        version: signer::bundle::header::FORMAT_VERSION_INDEX,
        manifest_len: u32::try_from(manifest.len()).ok()?,
        signature_block_len: SIGNATURE_BLOCK.len() as u32,
        dictionary_len: 0,
        index_len: u32::try_from(index.len()).ok()?,
    };
    let head = |tail: Vec<u8>, limits: &Limits| {
        let file_len = header.payload_offset() + header.tail_len();
        let head = signer::BundleHead::from_parts(
            header,
            manifest.to_vec(),
            SIGNATURE_BLOCK,
            tail,
            file_len,
            limits,
        );
        head.ok()?.manifest_unverified(limits).ok()
    };
    let streamed_limits = Limits {
        max_index_in_head: 0,
        ..limits()
    };
    let streamed = head(Vec::new(), &streamed_limits)?;
    Some((streamed, head(index.to_vec(), &limits())))
}

/// The index `streamed` left in its bundle; `None` when it has none to stream, which only an
/// empty image or a manifest the whole read refuses may have.
pub fn left_in_bundle<'m>(
    streamed: &'m Manifest,
    whole: &Option<Manifest>,
) -> Option<&'m signer::bundle::index::StreamedIndex> {
    let stored = streamed.streamed_index();
    assert!(
        stored.is_some() || streamed.chunk_count() == 0 || whole.is_none(),
        "an index not streamed"
    );
    stored
}

/// The signature block of [`read_both`]'s bundles.
const SIGNATURE_BLOCK: &[u8] = br#"{"signatures":[]}"#;

/// The chunks of a proven copy; it opens and decodes, or the copy's proof was wrong.
pub fn decoded(file: signer::bundle::index::IndexFile) -> Vec<signer::Chunk> {
    file.chunks()
        .expect("a proven copy opens")
        .collect::<Result<Vec<_>, _>>()
        .expect("a proven copy decodes")
}

/// The index targets' contract: the index read whole and its streamed copy are accepted
/// alike, and then give the same chunks.
pub fn assert_same(whole: Option<Manifest>, streamed: Result<Vec<signer::Chunk>, signer::Error>) {
    match (whole, streamed) {
        (Some(whole), Ok(chunks)) => assert_eq!(whole.chunks(), &chunks[..]),
        (None, Err(_)) => {}
        (whole, chunks) => panic!(
            "whole: {}, streamed: {:?}",
            if whole.is_some() {
                "accepted"
            } else {
                "refused"
            },
            chunks.map(|c| c.len())
        ),
    }
}

/// The manifest region `manifest` (its first JSON value) with its `index` naming a tree index
/// (FORMAT §3.2.1) of `lengths`, `table` and `column`: `sha256` of the lengths and the
/// table, `size` of all three, and `tree`'s `lengths` and `table` (its `group` kept, 64 when
/// missing); the `dictionary` left out. `None` when the region does not start with a JSON
/// object.
pub fn rehash_tree(
    manifest: &[u8],
    lengths: &[u8],
    table: &[u8],
    column: &[u8],
) -> Option<Vec<u8>> {
    let mut values =
        serde_json::Deserializer::from_slice(manifest).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Object(mut doc))) = values.next() else {
        return None;
    };
    let group = tree_group(&serde_json::Value::Object(doc.clone())).unwrap_or(64);
    let head: Vec<u8> = [lengths, table].concat();
    doc.remove("dictionary");
    doc.insert(
        "index".into(),
        serde_json::json!({
            "count": doc.get("index").and_then(|i| i.get("count")).cloned().unwrap_or(0.into()),
            "sha256": signer::Sha256Digest::of(&head).to_hex(),
            "size": lengths.len() + table.len() + column.len(),
            "tree": {"group": group, "lengths": lengths.len(), "table": table.len()},
        }),
    );
    serde_json::to_vec(&doc).ok()
}

/// The `index.tree.group` of a manifest document, if it names one.
pub fn tree_group(doc: &serde_json::Value) -> Option<u64> {
    doc.get("index")?.get("tree")?.get("group")?.as_u64()
}

/// A freshly laid-out 6 MiB disk (ESP, `root-a`, `root-b`, state) and its `root` pair, for
/// the boot backends (they record themselves in the slots' GPT entries). The layout is made
/// once and copied for every input, so no input sees another's writes.
pub fn laid_out_disk() -> (partitions::Disk, partitions::SlotPair) {
    const MIB: u64 = 1 << 20;
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        let disk = Arc::new(FuzzDisk::new(vec![0; 6 * MIB as usize]));
        let dev: Arc<dyn partitions::io::BlockDevice> = disk.clone();
        let layout = partitions::create::Layout::for_disk(6 * MIB, MIB, Some(MIB), MIB, Vec::new())
            .expect("layout fits");
        partitions::create::lay_out(&dev, &layout).expect("laying out the disk");
        disk.bytes()
    });
    let dev: Arc<dyn partitions::io::BlockDevice> = Arc::new(FuzzDisk::new(bytes.clone()));
    let disk = partitions::Disk::from_device(dev).expect("the new GPT reads");
    let pair = disk
        .slots(partitions::DEFAULT_PAIR)
        .expect("the new disk has the pair");
    (disk, pair)
}

/// A disk held in memory, read and written by the `partitions` code under test.
#[derive(Debug)]
pub struct FuzzDisk(Mutex<Vec<u8>>);

impl FuzzDisk {
    /// A disk holding exactly `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        FuzzDisk(Mutex::new(bytes))
    }

    /// The current content.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn range(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "outside the disk",
        )),
    }
}

impl BlockDevice for FuzzDisk {
    fn size(&self) -> io::Result<u64> {
        Ok(self.lock().len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.lock();
        let r = range(offset, buf.len(), data.len())?;
        buf.copy_from_slice(&data[r]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.lock();
        let r = range(offset, buf.len(), data.len())?;
        data[r].copy_from_slice(buf);
        Ok(())
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut data = self.lock();
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let r = range(offset, len, data.len())?;
        data[r].fill(0);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A flat in-memory file store (paths are keys; a directory exists when a file is in it or
/// it was created).
#[derive(Debug, Default)]
pub struct FuzzFs {
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
    dirs: Mutex<Vec<PathBuf>>,
}

impl FuzzFs {
    /// A store holding `files`.
    pub fn with_files(files: impl IntoIterator<Item = (PathBuf, Vec<u8>)>) -> Self {
        let fs = FuzzFs::default();
        fs.lock().extend(files);
        fs
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

/// A streamed file of a [`FuzzFs`]: each write lands in the map at once.
struct FuzzNewFile {
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
    path: PathBuf,
}

impl Write for FuzzNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let file = files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        file.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NewFile for FuzzNewFile {
    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

impl FileStore for FuzzFs {
    fn read(&self, path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
        let files = self.lock();
        let data = files.get(path).ok_or_else(|| not_found(path))?;
        if data.len() as u64 > max_len {
            return Err(io::ErrorKind::InvalidData.into());
        }
        Ok(data.clone())
    }
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.lock().insert(path.to_path_buf(), data.to_vec());
        Ok(())
    }
    fn overwrite(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut files = self.lock();
        let old = files.get_mut(path).ok_or_else(|| not_found(path))?;
        if old.len() != data.len() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        old.copy_from_slice(data);
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.lock();
        let data = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_path_buf(), data);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let names: Vec<String> = self
            .lock()
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        let created = self.dirs.lock().map(|d| d.contains(&dir.to_path_buf()));
        if names.is_empty() && !created.unwrap_or(false) {
            return Err(not_found(dir));
        }
        Ok(names)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.push(dir.to_path_buf());
        }
        Ok(())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn NewFile>> {
        self.lock().insert(path.to_path_buf(), Vec::new());
        Ok(Box::new(FuzzNewFile {
            files: self.files.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let files = self.lock();
        let data = files.get(path).ok_or_else(|| not_found(path))?;
        let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
        let rest = data.get(start..).unwrap_or(&[]);
        Ok(rest.get(..len).unwrap_or(rest).to_vec())
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        let files = self.lock();
        let data = files.get(path).ok_or_else(|| not_found(path))?;
        Ok(data.len() as u64)
    }
    fn free_space(&self) -> io::Result<u64> {
        Ok(u64::MAX)
    }
}

/// A shared handle on a store, as the boot backends take it.
pub fn shared(fs: FuzzFs) -> (Arc<FuzzFs>, Arc<dyn FileStore>) {
    let fs = Arc::new(fs);
    let dyn_fs: Arc<dyn FileStore> = fs.clone();
    (fs, dyn_fs)
}
