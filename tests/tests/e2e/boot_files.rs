//! Boot assets (docs/DESIGN.md §5.1): a release brings its kernel. On the grub and
//! systemd-boot backends the agent writes the release's UKI, or kernel + initramfs, and its
//! command line into the target slot's boot files before the flip; the loader then boots the
//! slot with them, a rollback boots the old slot with its own, and the active slot's files
//! are never touched. Each test runs on both backends that keep boot files.

use std::io::Write;
use std::sync::Arc;

use partitions::boot::{BootFile, BootFiles};
use partitions::io::{FileStore, MemDisk, MemFs, PowerLossFs, SplitMix64};
use partitions::SlotId::{self, A, B};
use signer::AssetKind;
use tandem_tests::{fake_uki, request, sha256_hex, Backend, Release, TestAsset, World};
use updater::{BootCheck, Error, Io};

const BACKENDS: [Backend; 2] = [Backend::Grub, Backend::SystemdBoot];

/// A node running v1 from slot A, provisioned with a kernel and initramfs of its own.
fn node(backend: Backend) -> (World, Release) {
    let w = World::new(backend);
    let v1 = w.release("1.0.0", 1, 1);
    w.provision(A, &v1);
    let mut staging = boot_files(&w).stage(A).unwrap();
    for (file, bytes) in [
        (BootFile::Kernel, &b"factory kernel"[..]),
        (BootFile::Initrd, b"factory initramfs"),
    ] {
        let mut out = staging.create(file).unwrap();
        out.write_all(bytes).unwrap();
        out.finish().unwrap();
    }
    staging.commit().unwrap();
    (w, v1)
}

fn boot_files(w: &World) -> BootFiles {
    w.boot_control()
        .boot_files()
        .expect("the backend keeps boot files")
}

/// The slot's boot files by name, with their contents.
fn files_of(w: &World, slot: SlotId) -> Vec<(BootFile, Vec<u8>)> {
    let files = boot_files(w);
    files
        .present(slot)
        .unwrap()
        .into_iter()
        .map(|(file, len)| (file, files.read_at(slot, file, 0, len as usize).unwrap()))
        .collect()
}

fn uki_release(w: &World, version: &str, seed: u64, cmdline: &str) -> (Release, Vec<u8>) {
    let uki = fake_uki(version, cmdline);
    let asset = TestAsset::new(AssetKind::Uki, uki.clone());
    (w.release_with_assets(version, seed, seed, &[asset]), uki)
}

fn kernel_release(w: &World, version: &str, seed: u64, cmdline: &str) -> Release {
    let assets = [
        TestAsset::new(AssetKind::Kernel, format!("kernel {version}")),
        TestAsset::new(AssetKind::Initrd, format!("initramfs {version}")),
        TestAsset::new(AssetKind::Cmdline, cmdline),
    ];
    w.release_with_assets(version, seed, seed, &assets)
}

/// What the loader is told for `slot`: the systemd-boot entry, or GRUB's `cmdline.env`.
fn loader_view(w: &World, slot: SlotId) -> String {
    let fs = w.boot_fs.as_ref().unwrap();
    let (dir, wanted) = match w.backend {
        Backend::SystemdBoot => ("loader/entries".to_string(), format!("tandem-{slot}")),
        _ => (slot.to_string(), "cmdline.env".to_string()),
    };
    let name = fs
        .list(dir.as_ref())
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with(&wanted))
        .unwrap_or_else(|| panic!("no {wanted}* in {dir}"));
    let bytes = fs
        .read(&std::path::Path::new(&dir).join(name), 4096)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_release_brings_its_uki_and_the_slot_boots_it_with_its_command_line() {
    for backend in BACKENDS {
        let (w, _) = node(backend);
        let factory = files_of(&w, A);
        let (v2, uki) = uki_release(&w, "2.0.0", 2, "quiet tandem.marker=v2");
        let out = w.agent_for(A).install(&request(&v2.bundle, false)).unwrap();
        assert_eq!(out.target, B);
        assert_eq!(
            files_of(&w, A),
            factory,
            "{backend}: the active slot's files"
        );
        assert_eq!(
            files_of(&w, B),
            [
                (BootFile::Uki, uki.clone()),
                (BootFile::Cmdline, b"quiet tandem.marker=v2".to_vec())
            ],
            "{backend}"
        );
        let view = loader_view(&w, B);
        match backend {
            Backend::SystemdBoot => {
                assert!(view.contains("efi /tandem/b/uki.efi\n"), "{view}");
                assert!(!view.contains("linux "), "{view}");
                assert!(
                    view.contains("options quiet tandem.marker=v2 root=PARTUUID="),
                    "{view}"
                );
            }
            _ => assert!(
                view.contains("TANDEM_CMDLINE=quiet tandem.marker=v2\n"),
                "{view}"
            ),
        }
        assert_eq!(w.boot(), B, "{backend}");
        let check = w.agent_for(B).boot_check().unwrap();
        assert!(matches!(check, BootCheck::Committed { .. }), "{check:?}");

        let status = w.agent_for(B).status().unwrap();
        let shown = &status.slots[1].boot_files;
        assert_eq!(shown.len(), 2, "{backend}: {shown:?}");
        assert_eq!(shown[0].file, BootFile::Uki);
        assert_eq!(shown[0].version.as_deref(), Some("2.0.0"));
        assert_eq!(shown[0].sha256.to_hex(), sha256_hex(&uki));
        assert_eq!(shown[1].text.as_deref(), Some("quiet tandem.marker=v2"));
        let json = serde_json::to_string(&status).unwrap();
        assert!(json.contains(r#""file":"uki""#), "{json}");
    }
}

#[test]
fn kernel_files_replace_a_uki_and_a_rollback_boots_the_old_slot_with_its_own() {
    for backend in BACKENDS {
        let (w, _) = node(backend);
        let (v2, _) = uki_release(&w, "2.0.0", 2, "quiet");
        w.agent_for(A).install(&request(&v2.bundle, false)).unwrap();
        assert_eq!(w.boot(), B);
        w.agent_for(B).boot_check().unwrap();
        let v2_files = files_of(&w, B);

        let v3 = kernel_release(&w, "3.0.0", 3, "console=ttyS0 v3");
        w.agent_for(B).install(&request(&v3.bundle, false)).unwrap();
        assert_eq!(
            files_of(&w, A),
            [
                (BootFile::Kernel, b"kernel 3.0.0".to_vec()),
                (BootFile::Initrd, b"initramfs 3.0.0".to_vec()),
                (BootFile::Cmdline, b"console=ttyS0 v3".to_vec()),
            ],
            "{backend}: the factory kernel is replaced"
        );
        assert_eq!(
            files_of(&w, B),
            v2_files,
            "{backend}: the active slot's files"
        );
        if backend == Backend::SystemdBoot {
            let view = loader_view(&w, A);
            assert!(view.contains("linux /tandem/a/vmlinuz\n"), "{view}");
            assert!(view.contains("options console=ttyS0 v3 root="), "{view}");
        }

        // v3 fails its health check: the node goes back to v2's slot, whose files never moved.
        w.set_healthy(false);
        assert_eq!(w.boot(), A);
        let check = w.agent_for(A).boot_check().unwrap();
        assert!(matches!(check, BootCheck::RolledBack { .. }), "{check:?}");
        assert_eq!(w.boot(), B, "{backend}");
        assert_eq!(files_of(&w, B), v2_files, "{backend}");
    }
}

#[test]
fn a_release_without_boot_assets_keeps_the_targets_files() {
    for backend in BACKENDS {
        let (w, _) = node(backend);
        let (v2, _) = uki_release(&w, "2.0.0", 2, "quiet");
        w.agent_for(A).install(&request(&v2.bundle, false)).unwrap();
        assert_eq!(w.boot(), B);
        w.agent_for(B).boot_check().unwrap();
        let factory = files_of(&w, A);
        let v3 = w.release("3.0.0", 3, 3);
        w.agent_for(B).install(&request(&v3.bundle, false)).unwrap();
        assert_eq!(files_of(&w, A), factory, "{backend}");
        assert_eq!(w.boot(), A);
    }
}

#[test]
fn no_room_on_the_esp_is_refused_before_any_write() {
    for backend in BACKENDS {
        let (mut w, _) = node(backend);
        let fs = w.boot_fs.take().unwrap();
        w.boot_fs = Some(fs.copy_with_capacity(fs.used() + 4096));
        let (v2, _) = uki_release(&w, "2.0.0", 2, "quiet");
        let before = (w.slot_hash(B), w.boot_state(B), files_of(&w, B));
        let error = w
            .agent_for(A)
            .install(&request(&v2.bundle, false))
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Refused(updater::Refusal::NoRoomForBootFiles { .. })
            ),
            "{backend}: {error}"
        );
        assert_eq!(error.class() as u8, 4);
        let message = error.to_string();
        assert!(message.contains("bytes free beside"), "{message}");
        assert_eq!(
            (w.slot_hash(B), w.boot_state(B), files_of(&w, B)),
            before,
            "{backend}: nothing was written"
        );
    }
}

#[test]
fn a_damaged_boot_asset_is_refused_and_nothing_reaches_the_loader() {
    for backend in BACKENDS {
        let (w, _) = node(backend);
        let (v2, _) = uki_release(&w, "2.0.0", 2, "quiet");
        // The UKI's frames are the last bytes of the payload.
        let mut bytes = std::fs::read(&v2.bundle).unwrap();
        let at = tandem_tests::payload_end(&v2.bundle) - 10;
        bytes[at] ^= 0x55;
        let damaged = w.path("damaged.tandem");
        std::fs::write(&damaged, bytes).unwrap();
        let error = w
            .agent_for(A)
            .install(&request(&damaged, false))
            .unwrap_err();
        assert_eq!(error.class() as u8, 3, "{backend}: {error}");
        assert!(error.to_string().contains("uki"), "{error}");
        assert!(
            files_of(&w, B).is_empty(),
            "{backend}: {:?}",
            files_of(&w, B)
        );
        assert_eq!(w.boot(), A, "{backend}: the target stays unbootable");
        // The intact release installs over what the damaged one left.
        w.agent_for(A).install(&request(&v2.bundle, false)).unwrap();
        assert_eq!(w.boot(), B, "{backend}");
    }
}

/// Images for further partition pairs go to the target's partition, read back like the root;
/// the active slot's partition keeps its bytes.
#[test]
fn a_partition_image_goes_to_the_targets_partition_of_its_pair() {
    let w = World::with_pairs(Backend::SystemdBoot, &[("verity", 1 << 20)]);
    let v1 = w.release("1.0.0", 1, 1);
    w.provision(A, &v1);
    let disk = partitions::Disk::from_device(w.disk.clone()).unwrap();
    let pair = disk.slots("verity").unwrap();
    let read = |slot: SlotId, len: usize| {
        let device = disk.slot_device(pair.slot(slot)).unwrap();
        let mut buf = vec![0u8; len];
        device.read_at(&mut buf, 0).unwrap();
        buf
    };
    disk.slot_device(pair.slot(A))
        .unwrap()
        .write_at(b"factory verity", 0)
        .unwrap();
    let verity = tandem_tests::image(300 << 10, 9);
    let asset = TestAsset {
        name: "verity".into(),
        kind: AssetKind::Image,
        bytes: verity.clone(),
    };
    let v2 = w.release_with_assets("2.0.0", 2, 2, &[asset]);
    w.agent_for(A).install(&request(&v2.bundle, false)).unwrap();
    assert_eq!(read(B, verity.len()), verity);
    assert_eq!(read(A, 14), b"factory verity");
    assert_eq!(w.boot(), B);

    let too_big = TestAsset {
        name: "verity".into(),
        kind: AssetKind::Image,
        bytes: vec![1; (1 << 20) + 1],
    };
    w.agent_for(B).boot_check().unwrap();
    let v3 = w.release_with_assets("3.0.0", 3, 3, &[too_big]);
    let error = refusal(&w, B, &v3);
    assert!(
        matches!(error, updater::Refusal::TooLargeForPartition { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("partition verity-a holds only 1048576"),
        "{error}"
    );
}

/// The refusal of installing `release` on a node booted from `booted`.
fn refusal(w: &World, booted: SlotId, release: &Release) -> updater::Refusal {
    match w
        .agent_for(booted)
        .install(&request(&release.bundle, false))
    {
        Err(Error::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_partition_image_needs_its_partition_pair() {
    let (w, _) = node(Backend::SystemdBoot);
    for (name, reason) in [
        ("verity", "verity-a/verity-b"),
        ("root", "hold the root image itself"),
    ] {
        let asset = TestAsset {
            name: name.into(),
            kind: AssetKind::Image,
            bytes: vec![7; 1000],
        };
        let v2 = w.release_with_assets("2.0.0", 2, 2, &[asset]);
        let error = refusal(&w, A, &v2);
        assert!(
            matches!(error, updater::Refusal::NoPartitionPair { .. }),
            "{error}"
        );
        assert!(error.to_string().contains(reason), "{error}");
    }
}

/// A power cut at every operation on the ESP during an install that replaces the target's
/// kernel files with a UKI, with a seeded subset of the unsynced data kept: the firmware then
/// boots the active slot with its own files (or, cut after the flip, the new slot with all of
/// its new files), and the node settles on v2.
#[test]
fn power_cut_while_boot_files_are_written() {
    const SEEDS: u64 = 3;
    for backend in BACKENDS {
        let (mut w, v1) = node(backend);
        let (v2, uki) = uki_release(&w, "2.0.0", 2, "quiet");
        let factory_esp = w.boot_fs.clone().unwrap();
        let factory_a = files_of(&w, A);
        let factory_disk = MemDisk::from_bytes(&w.disk_bytes());
        let install = |esp: &PowerLossFs, w: &World| {
            let io = Io {
                boot_fs: Some(Arc::new(esp.clone()) as Arc<dyn FileStore>),
                ..w.io()
            };
            w.agent_with(A, io).install(&request(&v2.bundle, false))
        };
        let dry = PowerLossFs::from_mem(&factory_esp);
        install(&dry, &w).unwrap();
        let total = dry.ops_done();
        let mut rng = SplitMix64(0x5EED_0011);
        for k in 0..total {
            for _ in 0..SEEDS {
                let seed = rng.next();
                w.disk = Arc::new(factory_disk.deep_clone());
                w.state_fs = MemFs::new();
                let esp = PowerLossFs::from_mem(&factory_esp);
                esp.cut_after_ops(k);
                let context = format!("{backend}: cut after ESP op {k} of {total}, seed {seed}");
                assert!(
                    install(&esp, &w).is_err(),
                    "{context}: the cut did not stop it"
                );
                w.boot_fs = Some(esp.after_power_cut(seed));
                let boot = w.boot_checked(&[&v1, &v2], &context);
                if boot.slot == A {
                    assert_eq!(
                        files_of(&w, A),
                        factory_a,
                        "{context}: the active slot's files"
                    );
                    w.agent_for(A).boot_check().unwrap();
                    w.agent_for(A)
                        .install(&request(&v2.bundle, false))
                        .unwrap_or_else(|e| panic!("{context}: the next install failed: {e}"));
                    assert_eq!(w.boot(), B, "{context}");
                }
                assert_eq!(
                    files_of(&w, B),
                    [
                        (BootFile::Uki, uki.clone()),
                        (BootFile::Cmdline, b"quiet".to_vec())
                    ],
                    "{context}: slot b boots with all of v2's files"
                );
                let check = w.agent_for(B).boot_check().unwrap();
                assert!(
                    matches!(check, BootCheck::Committed { .. }),
                    "{context}: {check:?}"
                );
            }
        }
        println!("{backend}: {total} ESP operations cut, {SEEDS} seeds each");
    }
}

/// The backends keeping boot files, as `tandem-disk` flags: name, flag, path in the sandbox.
pub(crate) const ESP_BACKENDS: [(&str, &str, &str); 2] = [
    ("systemd-boot", "--esp", "esp"),
    ("grub", "--grubenv", "esp/tandem/grubenv"),
];

/// A node on a disk image file and an ESP directory, set up through the binaries: slot A
/// holds v1 with a factory kernel copied by hand (as docs/booting.md says), and
/// `v2-uki.tandem` is v2 signed with a UKI (`uki.efi`).
pub(crate) struct EspNode {
    pub(crate) s: super::cli::Sandbox,
    backend: &'static str,
    flag: &'static str,
    path: &'static str,
}

impl EspNode {
    pub(crate) fn new((backend, flag, path): (&'static str, &'static str, &'static str)) -> Self {
        let s = super::cli::Sandbox::new();
        s.release_v2();
        s.create_disk();
        std::fs::create_dir_all(s.path("esp/tandem/a")).unwrap();
        let boot_flags = ["--backend", backend, flag, path];
        s.run(
            "tandem-disk",
            &[&["init-boot", "disk.img"], &boot_flags[..]].concat(),
            0,
        );
        s.run(
            "tandem-disk",
            &["write-slot", "disk.img", "a", "v1.raw", flag, path],
            0,
        );
        std::fs::write(s.path("esp/tandem/a/vmlinuz"), "factory kernel").unwrap();
        std::fs::write(s.path("uki.efi"), fake_uki("2.0.0", "quiet v2")).unwrap();
        s.sign(
            "v2.raw",
            "2.0.0",
            "2",
            &["--uki", "uki.efi"],
            "v2-uki.tandem",
        );
        EspNode {
            s,
            backend,
            flag,
            path,
        }
    }

    /// Writes `updater.toml` for a node that booted `booted`; returns its path.
    pub(crate) fn config(&self, booted: &str) -> String {
        let (s, backend) = (&self.s, self.backend);
        let key = if backend == "grub" { "grubenv" } else { "esp" };
        let config = s.path("updater.toml");
        let text = format!(
            "disk = {disk:?}\nboot = \"{backend}\"\n{key} = {esp:?}\nstate = {state:?}\n\
             root = {root:?}\nproduct = \"acme-edge\"\nbooted_slot = \"{booted}\"\nreboot = [\"true\"]\n",
            disk = s.path("disk.img"),
            esp = s.path(self.path),
            state = s.path("state/state.json"),
            root = s.path("root.json"),
        );
        std::fs::write(&config, text).unwrap();
        config.display().to_string()
    }

    /// The slot the firmware boots next (`tandem-disk boot`).
    pub(crate) fn boot(&self) -> String {
        let flags = ["boot", "disk.img", self.flag, self.path];
        self.s.stdout("tandem-disk", &flags).trim().to_owned()
    }
}

/// What an operator does, through the binaries, on a disk image file and an ESP directory:
/// sign a release with a UKI, install it, "reboot" with `tandem-disk boot`, read `status`.
#[test]
fn the_binaries_install_a_uki_where_the_loader_reads_it() {
    for esp in ESP_BACKENDS {
        let backend = esp.0;
        let node = EspNode::new(esp);
        let s = &node.s;
        let config_arg = node.config("a");
        let out = s.stdout(
            "tandem-updater",
            &[
                "--config",
                &config_arg,
                "--json",
                "install",
                "v2-uki.tandem",
            ],
        );
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["target"], "b", "{out}");
        let bundle_len = std::fs::metadata(s.path("v2-uki.tandem")).unwrap().len();
        let read = out["write"]["bytes_read"].as_u64().unwrap();
        assert!(read > 0 && read < bundle_len, "{out}");
        assert_eq!(
            std::fs::read_to_string(s.path("esp/tandem/a/vmlinuz")).unwrap(),
            "factory kernel",
            "{backend}"
        );
        assert_eq!(
            std::fs::read(s.path("esp/tandem/b/uki.efi")).unwrap(),
            std::fs::read(s.path("uki.efi")).unwrap(),
            "{backend}"
        );
        assert_eq!(node.boot(), "b", "{backend}");
        node.config("b");
        let status = s.stdout(
            "tandem-updater",
            &["--config", &config_arg, "status", "--json"],
        );
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let files = &status["slots"][1]["boot_files"];
        assert_eq!(files[0]["file"], "uki", "{backend}: {files}");
        assert_eq!(files[0]["version"], "2.0.0", "{backend}: {files}");
        assert_eq!(files[1]["text"], "quiet v2", "{backend}: {files}");
        let text = s.stdout("tandem-updater", &["--config", &config_arg, "status"]);
        assert!(text.contains("  uki.efi: "), "{backend}: {text}");
    }
}
