//! End-to-end test harness across the Tandem programs (CONTRIBUTING.md §9).
//!
//! A [`World`] is one simulated node plus its vendor: a temp dir, signing keys (one root key,
//! a 2-of-3 release role), a trusted `root.json`, a two-slot GPT disk in memory (a
//! [`MemDisk`] or a [`PowerLossDisk`]), the agent's state in a [`MemFs`], and for the grub and
//! systemd-boot backends a [`MemFs`] standing in for the grubenv directory or the ESP.
//! [`World::boot`] runs the reference firmware ("reboot"); [`World::agent_for`] starts a fresh
//! agent that believes it booted the given slot.
//!
//! Health checks are `sh -c "test -e MARKER"`: [`World::set_healthy`] decides whether the
//! next trial boot passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use partitions::boot::{self, Config};
use partitions::create::{lay_out, Layout};
use partitions::io::{BlockDevice, FileStore, MemDisk, MemFs};
use partitions::{select_and_boot, BootControl, Disk, SlotBootState, SlotId, SlotPair};
use sha2::{Digest, Sha256};
use signer::bundle::{sign_release, AssetSource, BundleHead, SignOptions, Sources};
use signer::metadata::{root_signed_bytes, sign_document, RootSpec};
use signer::publish::{publish, PublishOptions};
use signer::{Limits, RoleKind, SecretKey};
use time::{Duration, OffsetDateTime};
use updater::state::{AgentState, StateStore};
use updater::trust::Counters;
use updater::{Agent, AgentConfig, InstallOptions, InstallOutcome, InstallRequest, Io, Source};

pub const PRODUCT: &str = "acme-edge";
/// Small chunks so a small image has many of them (resume, cut points).
pub const CHUNK_SIZE: u32 = 64 << 10;
/// Each slot: 2 MiB.
pub const SLOT_SIZE: u64 = 2 << 20;
/// Images are 23.5 chunks: a short last chunk, and every third 4 KiB block is zero.
pub const IMAGE_LEN: usize = 1504 << 10;
/// ESP 1 MiB + two slots + state 1 MiB + 2 MiB of GPT room.
pub const DISK_SIZE: u64 = 2 * SLOT_SIZE + (4 << 20);
pub const STATE_FILE: &str = "state.json";
/// Where the agent's configuration says the grubenv and the ESP are (the agent is given
/// in-memory stores standing in for their directories).
const GRUBENV: &str = "/boot/grub/grubenv";
const ESP: &str = "/boot/efi";

/// Which boot-control backend the node uses.
pub use partitions::BackendKind as Backend;

/// The vendor's keys: one root key (threshold 1) and three release keys (threshold 2).
pub struct Keys {
    pub root: SecretKey,
    pub release: Vec<SecretKey>,
}

impl Keys {
    pub fn generate() -> Self {
        Keys {
            root: SecretKey::generate(),
            release: (0..3).map(|_| SecretKey::generate()).collect(),
        }
    }

    /// Two of the three release keys: exactly the threshold.
    pub fn signers(&self) -> Vec<SecretKey> {
        self.release.iter().take(2).map(clone_key).collect()
    }
}

pub fn clone_key(k: &SecretKey) -> SecretKey {
    SecretKey::from_pem(&k.to_pem().unwrap()).unwrap()
}

/// A signed root document (version `version`, expiring in ten years).
pub fn root_document(keys: &Keys, version: u64, signers: &[&SecretKey]) -> Vec<u8> {
    let spec = RootSpec {
        version,
        expires: OffsetDateTime::now_utc() + Duration::days(3650),
        root_keys: vec![*keys.root.public()],
        root_threshold: 1,
        release_keys: keys.release.iter().map(|k| *k.public()).collect(),
        release_threshold: 2,
    };
    let signed = root_signed_bytes(&spec).unwrap();
    let owned: Vec<SecretKey> = signers.iter().map(|k| clone_key(k)).collect();
    sign_document(RoleKind::Root, &signed, &owned).unwrap()
}

/// A raw OS-like image, deterministic from `seed`: random blocks, text blocks, zero blocks.
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, b) in v.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match (i / 4096) % 3 {
            0 => *b = (x & 0xff) as u8,
            2 => *b = b"tandem "[i % 7],
            _ => {}
        }
    }
    // Two whole zero chunks (not stored in the bundle, zeroed on the slot).
    let chunk = CHUNK_SIZE as usize;
    for z in [3 * chunk, 4 * chunk] {
        if z + chunk <= len {
            v[z..z + chunk].fill(0);
        }
    }
    v
}

/// Bytes no release holds unless a test puts them there: random, deterministic from `seed`,
/// with no all-zero chunk.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A signed release: its image and its bundle file.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    pub security_version: u64,
    pub image: Vec<u8>,
    pub bundle: PathBuf,
    pub image_sha256: String,
    pub manifest_sha256: String,
    /// Chunks in the manifest.
    pub chunks: u64,
}

/// A boot asset a test release carries.
#[derive(Debug, Clone)]
pub struct TestAsset {
    pub name: String,
    pub kind: signer::AssetKind,
    pub bytes: Vec<u8>,
}

impl TestAsset {
    pub fn new(kind: signer::AssetKind, bytes: impl Into<Vec<u8>>) -> Self {
        TestAsset {
            name: kind.as_str().into(),
            kind,
            bytes: bytes.into(),
        }
    }

    fn source(&self) -> AssetSource<'static> {
        AssetSource {
            name: self.name.clone(),
            kind: self.kind,
            size: self.bytes.len() as u64,
            reader: Box::new(Cursor::new(self.bytes.clone())),
        }
    }
}

/// A stand-in for a Unified Kernel Image: a PE file whose sections are `.osrel` (with
/// `VERSION_ID=version`), `.cmdline` and a `.linux` of filler bytes, so the agent can read
/// what it reads from a real one.
pub fn fake_uki(version: &str, cmdline: &str) -> Vec<u8> {
    let sections: [(&[u8; 8], Vec<u8>); 3] = [
        (
            b".osrel\0\0",
            format!("ID=acme\nVERSION_ID={version}\n").into_bytes(),
        ),
        (b".cmdline", format!("{cmdline}\n").into_bytes()),
        (b".linux\0\0", image(3 * 4096 + 100, version.len() as u64)),
    ];
    const PE: usize = 64;
    let table = PE + 24;
    let mut data_at = table + 40 * sections.len();
    let mut pe = vec![0u8; data_at];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3C..0x40].copy_from_slice(&(PE as u32).to_le_bytes());
    pe[PE..PE + 4].copy_from_slice(b"PE\0\0");
    pe[PE + 6..PE + 8].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    for (i, (name, body)) in sections.iter().enumerate() {
        let header = table + 40 * i;
        let len = (body.len() as u32).to_le_bytes();
        pe[header..header + 8].copy_from_slice(*name);
        pe[header + 8..header + 12].copy_from_slice(&len); // virtual size
        pe[header + 16..header + 20].copy_from_slice(&len); // raw size
        pe[header + 20..header + 24].copy_from_slice(&(data_at as u32).to_le_bytes());
        data_at += body.len();
    }
    for (_, body) in &sections {
        pe.extend_from_slice(body);
    }
    pe
}

/// Which slot holds what, as the firmware left it.
#[derive(Debug)]
pub struct Boot {
    pub slot: SlotId,
    /// The version whose complete image the booted slot holds.
    pub version: String,
}

/// One simulated node and its vendor.
pub struct World {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub root_path: PathBuf,
    pub backend: Backend,
    pub disk: Arc<dyn BlockDevice>,
    pub state_fs: MemFs,
    pub boot_fs: Option<MemFs>,
    pub health_marker: PathBuf,
    pub tries: u8,
    /// Extra lines appended to the agent's configuration.
    pub extra_config: String,
    /// Whether the configuration has the marker health check (without any, a trial passes
    /// at once: the power-loss test spares itself a process per boot).
    pub health_checks: Cell<bool>,
}

impl World {
    /// A node with an empty two-slot disk in memory (both slots unbootable).
    pub fn new(backend: Backend) -> World {
        Self::with_disk(backend, Arc::new(MemDisk::new(DISK_SIZE)))
    }

    /// A node whose disk also has the slot pairs `pairs` (`NAME-a`/`NAME-b`, `size` each).
    pub fn with_pairs(backend: Backend, pairs: &[(&str, u64)]) -> World {
        let disk = Arc::new(MemDisk::new(disk_size_with(pairs)));
        Self::with_disk_and_pairs(backend, disk, pairs)
    }

    /// A node over `disk` (of [`disk_size_with`] `pairs`) laid out with the slot pairs
    /// `pairs` besides the root pair.
    pub fn with_disk_and_pairs(
        backend: Backend,
        disk: Arc<dyn BlockDevice>,
        pairs: &[(&str, u64)],
    ) -> World {
        let pairs = pairs.iter().map(|(n, size)| (n.to_string(), *size));
        Self::laid_out(backend, disk, pairs.collect())
    }

    /// A node over `disk` (laid out here).
    pub fn with_disk(backend: Backend, disk: Arc<dyn BlockDevice>) -> World {
        Self::laid_out(backend, disk, Vec::new())
    }

    fn laid_out(backend: Backend, disk: Arc<dyn BlockDevice>, pairs: Vec<(String, u64)>) -> World {
        quiet_power_cuts();
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate();
        let root_path = dir.path().join("root.json");
        std::fs::write(&root_path, root_document(&keys, 1, &[&keys.root])).unwrap();
        lay_out(
            &disk,
            &Layout {
                esp: 1 << 20,
                slot: SLOT_SIZE,
                state: 1 << 20,
                pairs,
            },
        )
        .unwrap();
        let boot_fs = (backend != Backend::Gpt).then(MemFs::new);
        let health_marker = dir.path().join("healthy");
        let world = World {
            dir,
            keys,
            root_path,
            backend,
            disk,
            state_fs: MemFs::new(),
            boot_fs,
            health_marker,
            tries: 3,
            extra_config: String::new(),
            health_checks: Cell::new(true),
        };
        world.boot_control().prepare().unwrap();
        world.set_healthy(true);
        world
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pair(&self) -> SlotPair {
        Disk::from_device(self.disk.clone())
            .unwrap()
            .slots("root")
            .unwrap()
    }

    /// The backend's configuration, as [`World::config_text`] gives it to the agent.
    pub fn boot_config(&self) -> Config {
        let (grubenv, esp) = match self.backend {
            Backend::Grub => (Some(GRUBENV.into()), None),
            Backend::SystemdBoot => (None, Some(ESP.into())),
            Backend::Gpt => (None, None),
        };
        Config::new(self.backend, grubenv, esp, None).unwrap()
    }

    /// The configuration keys of [`World::boot_config`].
    fn boot_keys(&self) -> String {
        let path = match self.boot_config() {
            Config::Grub { grubenv } => format!("grubenv = {grubenv:?}"),
            Config::SystemdBoot { esp, .. } => format!("esp = {esp:?}"),
            _ => String::new(),
        };
        format!("boot = \"{}\"\n{path}", self.backend)
    }

    /// The boot control the firmware and the tests read (the agent builds its own, the same
    /// way).
    pub fn boot_control(&self) -> Box<dyn BootControl> {
        let disk = Disk::from_device(self.disk.clone()).unwrap();
        let pair = disk.slots("root").unwrap();
        let files = self
            .boot_fs
            .clone()
            .map(|fs| Arc::new(fs) as Arc<dyn FileStore>);
        boot::open(&self.boot_config(), &disk, &pair, files).unwrap()
    }

    pub fn boot_state(&self, slot: SlotId) -> SlotBootState {
        self.boot_control().state(slot).unwrap()
    }

    /// Power on: the reference firmware picks a slot and records the attempt.
    pub fn boot(&self) -> SlotId {
        select_and_boot(self.boot_control().as_ref())
            .unwrap_or_else(|e| panic!("the firmware found nothing to boot: {e}"))
    }

    /// Signs a release of `version` (image from `seed`) into `<dir>/<version>.tandem`.
    pub fn release(&self, version: &str, security_version: u64, seed: u64) -> Release {
        self.release_of(version, security_version, image(IMAGE_LEN, seed), PRODUCT)
    }

    /// Signs `image` as a release of `product`.
    pub fn release_of(
        &self,
        version: &str,
        security_version: u64,
        image: Vec<u8>,
        product: &str,
    ) -> Release {
        self.release_signed(version, security_version, image, product, &[], |_| {})
    }

    /// Signs a release of `version` (image from `seed`) that carries `assets`.
    pub fn release_with_assets(
        &self,
        version: &str,
        security_version: u64,
        seed: u64,
        assets: &[TestAsset],
    ) -> Release {
        let image = image(IMAGE_LEN, seed);
        self.release_signed(version, security_version, image, PRODUCT, assets, |_| {})
    }

    /// Signs a release with this world's options changed by `configure` (chunking, previous
    /// releases, frame size).
    pub fn release_signed(
        &self,
        version: &str,
        security_version: u64,
        image: Vec<u8>,
        product: &str,
        assets: &[TestAsset],
        configure: impl FnOnce(&mut SignOptions),
    ) -> Release {
        let release = (version, security_version);
        self.sign(release, image, (product, assets), configure, false)
    }

    /// [`World::release_signed`] with the release's chunk store written beside its bundle
    /// (`<bundle>.chunks`, FORMAT §3.4).
    pub fn release_with_store(
        &self,
        version: &str,
        security_version: u64,
        image: Vec<u8>,
        configure: impl FnOnce(&mut SignOptions),
    ) -> Release {
        let release = (version, security_version);
        self.sign(release, image, (PRODUCT, &[]), configure, true)
    }

    /// Signs `image` as `release` (version, security version) of `product` with `assets`,
    /// and with `with_store` its chunk store beside the bundle.
    fn sign(
        &self,
        (version, security_version): (&str, u64),
        image: Vec<u8>,
        (product, assets): (&str, &[TestAsset]),
        configure: impl FnOnce(&mut SignOptions),
        with_store: bool,
    ) -> Release {
        let mut opts = SignOptions::new(
            product,
            semver::Version::parse(version).unwrap(),
            security_version,
            OffsetDateTime::now_utc(),
        );
        opts.chunk_size = CHUNK_SIZE;
        // One chunk a frame, so the install's steps are chunks (the resume and power-cut
        // tests count them); frames shared by chunks have tests of their own.
        opts.chunking = signer::chunking::Chunking::fixed(CHUNK_SIZE);
        opts.frame_bytes = CHUNK_SIZE;
        opts.workers = 2;
        configure(&mut opts);
        let sources = Sources {
            image: image.as_slice(),
            image_size: image.len() as u64,
            assets: assets.iter().map(TestAsset::source).collect(),
        };
        let mut out = Cursor::new(Vec::new());
        let mut store = Vec::new();
        let summary = sign_release(
            sources,
            &mut out,
            with_store.then_some(&mut store as &mut dyn std::io::Write),
            &opts,
            &self.keys.signers(),
            &Limits::default(),
            &mut |_| {},
        )
        .unwrap();
        let bundle = self.path(&format!("{product}-{version}.tandem"));
        std::fs::write(&bundle, out.into_inner()).unwrap();
        if with_store {
            let path = proto::chunk_store_path(&bundle.to_string_lossy());
            std::fs::write(path, store).unwrap();
        }
        Release {
            version: version.into(),
            security_version,
            image_sha256: sha256_hex(&image),
            manifest_sha256: summary.manifest_sha256.to_hex(),
            chunks: summary.chunks,
            image,
            bundle,
        }
    }

    /// Factory provisioning: the raw image of `release` into `slot`, which becomes the good
    /// slot (the agent has no record of it).
    pub fn provision(&self, slot: SlotId, release: &Release) {
        let raw = self.path(&format!("raw-{}", release.version));
        std::fs::write(&raw, &release.image).unwrap();
        let pair = self.pair();
        let disk = Disk::from_device(self.disk.clone()).unwrap();
        let device = disk.slot_device(pair.slot(slot)).unwrap();
        let bc = self.boot_control();
        partitions::create::write_image(device.as_ref(), pair.slot(slot), &raw, Some(bc.as_ref()))
            .unwrap();
    }

    /// Whether the next trial passes its health check.
    pub fn set_healthy(&self, healthy: bool) {
        if healthy {
            std::fs::write(&self.health_marker, b"ok").unwrap();
        } else {
            let _ = std::fs::remove_file(&self.health_marker);
        }
    }

    /// The agent's configuration text for a node that booted `booted`.
    pub fn config_text(&self, booted: SlotId) -> String {
        let boot = self.boot_keys();
        let health = if self.health_checks.get() {
            format!(
                "[[health]]\nexec = [\"sh\", \"-c\", \"test -e '{}'\"]\ntimeout = \"10s\"\n",
                self.health_marker.display()
            )
        } else {
            String::new()
        };
        format!(
            r#"disk = "/dev/null"
slots = "root"
{boot}
state = "/var/lib/tandem/{STATE_FILE}"
root = "{root}"
product = "{PRODUCT}"
tries = {tries}
booted_slot = "{booted}"
reboot = ["true"]
health_deadline = "20s"
{extra}
{health}"#,
            root = self.root_path.display(),
            tries = self.tries,
            extra = self.extra_config,
        )
    }

    pub fn config(&self, booted: SlotId) -> AgentConfig {
        AgentConfig::parse(&self.config_text(booted)).unwrap()
    }

    pub fn io(&self) -> Io {
        Io {
            disk: self.disk.clone(),
            state_fs: Arc::new(self.state_fs.clone()),
            boot_fs: self
                .boot_fs
                .clone()
                .map(|fs| Arc::new(fs) as Arc<dyn FileStore>),
        }
    }

    /// A fresh agent (a new process) on a node that booted `booted`.
    pub fn agent_for(&self, booted: SlotId) -> Agent {
        self.agent_with(booted, self.io())
    }

    pub fn agent_with(&self, booted: SlotId, io: Io) -> Agent {
        let mut agent = Agent::with_io(self.config(booted), io).unwrap();
        agent.write_options.workers = 2;
        agent
    }

    /// The agent's saved state.
    pub fn state(&self) -> AgentState {
        StateStore::new(Arc::new(self.state_fs.clone()), STATE_FILE)
            .load()
            .unwrap()
    }

    /// The node's anti-rollback counters (as `status` shows them).
    pub fn counters(&self) -> Counters {
        self.agent_for(SlotId::A).status().unwrap().counters
    }

    /// The security floor's second copy, in the GPT entries of the slot pair.
    pub fn recorded_floor(&self) -> u64 {
        partitions::boot::floor::FloorRecord::new(self.disk.clone(), &self.pair())
            .read()
            .unwrap()
    }

    /// All bytes of a slot.
    pub fn slot_bytes(&self, slot: SlotId) -> Vec<u8> {
        let pair = self.pair();
        let disk = Disk::from_device(self.disk.clone()).unwrap();
        let device = disk.slot_device(pair.slot(slot)).unwrap();
        let mut buf = vec![0u8; usize::try_from(SLOT_SIZE).unwrap()];
        device.read_at(&mut buf, 0).unwrap();
        buf
    }

    /// `slot`'s partition of the further pair `pair` (`NAME-a`/`NAME-b`).
    pub fn partition(&self, pair: &str, slot: SlotId) -> Arc<dyn BlockDevice> {
        let disk = Disk::from_device(self.disk.clone()).unwrap();
        let pair = disk.slots(pair).unwrap();
        disk.slot_device(pair.slot(slot)).unwrap()
    }

    /// Where `slot`'s partition of the further pair `pair` starts on the disk.
    pub fn partition_offset(&self, pair: &str, slot: SlotId) -> u64 {
        let disk = Disk::from_device(self.disk.clone()).unwrap();
        disk.slots(pair).unwrap().slot(slot).offset
    }

    /// The first `len` bytes of `slot`'s partition of the further pair `pair`.
    pub fn partition_bytes(&self, pair: &str, slot: SlotId, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.partition(pair, slot).read_at(&mut buf, 0).unwrap();
        buf
    }

    /// Every byte of the disk (to copy it for the next case of a test).
    pub fn disk_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; usize::try_from(self.disk.size().unwrap()).unwrap()];
        self.disk.read_at(&mut buf, 0).unwrap();
        buf
    }

    /// SHA-256 of the whole slot (to prove a refusal wrote nothing).
    pub fn slot_hash(&self, slot: SlotId) -> String {
        sha256_hex(&self.slot_bytes(slot))
    }

    /// The release among `candidates` whose complete image `slot` holds.
    pub fn holds<'r>(&self, slot: SlotId, candidates: &[&'r Release]) -> Option<&'r Release> {
        let bytes = self.slot_bytes(slot);
        candidates
            .iter()
            .find(|r| sha256_hex(&bytes[..r.image.len()]) == r.image_sha256)
            .copied()
    }

    /// Reboots and checks the invariant: the firmware picks a slot holding a complete image
    /// of one of `candidates` (a signed manifest's image hash).
    pub fn boot_checked(&self, candidates: &[&Release], context: &str) -> Boot {
        let slot = self.boot();
        match self.holds(slot, candidates) {
            Some(r) => Boot {
                slot,
                version: r.version.clone(),
            },
            None => panic!(
                "{context}: the firmware booted slot {slot}, which holds none of {:?} completely \
                 (boot states a: {}, b: {}; agent state {:?})",
                candidates.iter().map(|r| &r.version).collect::<Vec<_>>(),
                self.boot_state(SlotId::A),
                self.boot_state(SlotId::B),
                self.state().phase
            ),
        }
    }

    /// Installs `release`'s bundle file on a node that booted `booted`.
    pub fn install(
        &self,
        booted: SlotId,
        release: &Release,
        force: bool,
    ) -> updater::Result<InstallOutcome> {
        self.agent_for(booted)
            .install(&request(&release.bundle, force))
    }

    /// Publishes `release` to the repository `repo` on `channel`, metadata expiring in 30 days.
    pub fn publish(&self, repo: &Path, channel: &str, release: &Release) -> u64 {
        let now = OffsetDateTime::now_utc();
        publish(&PublishOptions {
            repo,
            channel,
            bundle: &release.bundle,
            keys: &self.keys.signers(),
            expires: now + Duration::days(30),
            percent: 100,
            root: Some(&self.root_path),
            now,
            limits: &Limits::default(),
        })
        .unwrap()
        .channel_version
    }
}

/// The size of a disk with the two slots, the ESP and state partitions and the further slot
/// pairs `pairs` (`size` each partition).
pub fn disk_size_with(pairs: &[(&str, u64)]) -> u64 {
    DISK_SIZE + pairs.iter().map(|(_, size)| 2 * size).sum::<u64>()
}

/// An install request for a bundle file (or, with [`repo_request`], a repository).
pub fn request(source: &Path, force: bool) -> InstallRequest {
    InstallRequest {
        source: Source::parse(source).unwrap(),
        channel: None,
        options: InstallOptions {
            force,
            stage: false,
        },
    }
}

/// An install request that writes `source` and flips later (`--stage`).
pub fn staged(source: &Path) -> InstallRequest {
    let mut request = request(source, false);
    request.options.stage = true;
    request
}

/// An install request for `channel` of the repository `source` (a directory or a URL).
pub fn repo_request(source: &Path, channel: &str) -> InstallRequest {
    InstallRequest {
        channel: Some(channel.to_owned()),
        ..request(source, false)
    }
}

/// The head of a bundle file (for tampering at known offsets).
pub fn bundle_head(path: &Path) -> BundleHead {
    BundleHead::read(&mut std::fs::File::open(path).unwrap(), &Limits::default()).unwrap()
}

/// Where a bundle file's payload ends (its chunk index and dictionary follow): the last
/// frames' bytes lie just before.
pub fn payload_end(path: &Path) -> usize {
    let manifest = bundle_head(path)
        .manifest_unverified(&Limits::default())
        .unwrap();
    (manifest.payload_offset() + manifest.payload_len()) as usize
}

/// The message of a simulated power cut (a panic raised by a failpoint callback).
pub const POWER_CUT: &str = "simulated power cut";

/// Silences the panic message of simulated power cuts (hundreds of them); other panics
/// still print.
pub fn quiet_power_cuts() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with(POWER_CUT) {
                previous(info);
            }
        }));
    });
}

/// The failpoint names in the updater's sources (every `fail_point!("…")`).
pub fn failpoint_names() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../updater/src");
    let mut names = Vec::new();
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("fail_point!(\"").skip(1) {
                    if let Some(end) = piece.find('"') {
                        names.push(piece[..end].to_string());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Arms `name` to "cut the power" (panic) on its `hit`-th evaluation (1-based), only on the
/// calling thread (other tests in the same process are left alone). Returns a flag set when
/// the cut happened. Hold a [`fail::FailScenario`] around it.
pub fn cut_at(name: &str, hit: usize) -> Arc<Mutex<bool>> {
    let fired = Arc::new(Mutex::new(false));
    let count = Arc::new(Mutex::new(0usize));
    let thread = std::thread::current().id();
    let (flag, label) = (fired.clone(), name.to_string());
    fail::cfg_callback(name, move || {
        if std::thread::current().id() != thread {
            return;
        }
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        if *n == hit {
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
            panic!("{POWER_CUT} at {label} (hit {hit})");
        }
    })
    .unwrap();
    fired
}

/// Whether the flag from [`cut_at`] was set.
pub fn fired(flag: &Arc<Mutex<bool>>) -> bool {
    *flag.lock().unwrap_or_else(|e| e.into_inner())
}

/// After a power cut: reboot until the node settles, checking at every boot that the firmware
/// picks a slot holding a complete signed image (`old` or `new`), running a fresh agent's
/// boot-check each time and retrying the install of `new` (with `force`, it may have been
/// recorded as rolled back by the cut) until `new` is committed in the booted slot. Returns
/// the number of reboots it took.
pub fn recover(w: &World, old: &Release, new: &Release, context: &str) -> usize {
    use updater::state::Phase;
    use updater::BootCheck;
    w.set_healthy(true);
    for round in 0..6 {
        let boot = w.boot_checked(&[old, new], context);
        let agent = w.agent_for(boot.slot);
        let check = agent
            .boot_check()
            .unwrap_or_else(|e| panic!("{context}: boot-check after the cut failed: {e}"));
        let state = w.state();
        let committed = matches!(&state.phase,
            Phase::Committed { slot, release } if *slot == boot.slot && release.version == new.version);
        if committed && boot.version == new.version {
            assert!(
                w.boot_state(boot.slot).successful,
                "{context}: committed but slot {} not marked good",
                boot.slot
            );
            assert!(
                w.counters().security_floor >= new.security_version,
                "{context}: floor not raised"
            );
            assert!(
                w.recorded_floor() >= new.security_version,
                "{context}: the floor's GPT record not raised"
            );
            return round;
        }
        if matches!(check, BootCheck::RolledBack { .. }) {
            continue; // the reboot command ran: power-cycle
        }
        agent
            .install(&request(&new.bundle, true))
            .unwrap_or_else(|e| {
                panic!(
                    "{context}: the retried install failed in phase {:?}: {e}",
                    w.state().phase
                )
            });
    }
    panic!(
        "{context}: the node did not settle on {} (phase {:?}, boot a: {}, b: {})",
        new.version,
        w.state().phase,
        w.boot_state(SlotId::A),
        w.boot_state(SlotId::B)
    );
}
