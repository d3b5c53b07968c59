//! GRUB interoperability: grub-editenv reads our grubenv and writes one we read; the shipped
//! `docs/grub.cfg.example` runs in a real GRUB (grub-emu) boot after boot, over a grubenv on
//! a FAT ESP inside the disk image, and counts down and falls back exactly as the reference
//! firmware predicts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use std::io::Write;

use partitions::boot::grub::{GrubEnv, GrubEnvBootControl, ENVBLK_SIZE};
use partitions::boot::{BootFile, BootFiles};
use partitions::io::{FileStore, MemFs, RealFs};
use partitions::{select_and_boot, BootControl, Disk, SlotBootState, SlotId, SlotPair};

use crate::util::*;

fn pair_of(img: &Path) -> SlotPair {
    Disk::open(img).unwrap().slots("root").unwrap()
}

/// The grub backend over `store` for the image's pair.
fn grub_on(img: &Path, store: Arc<dyn FileStore>) -> GrubEnvBootControl {
    let disk = Disk::open(img).unwrap();
    let pair = disk.slots("root").unwrap();
    GrubEnvBootControl::new(store, "grubenv", &disk, &pair)
}

#[test]
fn grub_editenv_lists_our_grubenv() {
    let t = Tmp::new();
    let img = t.small_image("disk.img");
    let pair = pair_of(&img);
    let store: Arc<dyn FileStore> = Arc::new(RealFs::new(t.dir.path()));
    let bc = grub_on(&img, store);
    bc.prepare().unwrap();
    bc.set_trial(SlotId::A, 1).unwrap();
    bc.mark_good(SlotId::A).unwrap();
    bc.set_trial(SlotId::B, 3).unwrap();
    bc.record_boot_attempt(SlotId::B).unwrap();
    assert_eq!(std::fs::metadata(t.path("grubenv")).unwrap().len(), 1024);
    let list = stdout(&t.run(cmd("grub-editenv").args(["grubenv", "list"])));
    let mut lines: Vec<&str> = list.lines().collect();
    lines.sort();
    let a = format!("TANDEM_A_PARTUUID={}", pair.slot(SlotId::A).partuuid);
    let b = format!("TANDEM_B_PARTUUID={}", pair.slot(SlotId::B).partuuid);
    let mut want = vec![
        "TANDEM_A_OK=1",
        "TANDEM_A_TRIES=0",
        "TANDEM_B_OK=0",
        "TANDEM_B_TRIES=2",
        "TANDEM_ORDER=b a",
        &a,
        &b,
    ];
    want.sort();
    assert_eq!(lines, want);
}

#[test]
fn we_read_a_grubenv_made_by_grub_editenv() {
    let t = Tmp::new();
    let img = t.small_image("disk.img");
    t.run(cmd("grub-editenv").args(["grubenv", "create"]));
    t.run(cmd("grub-editenv").args([
        "grubenv",
        "set",
        "saved_entry=Debian GNU/Linux",
        "TANDEM_ORDER=a b",
        "TANDEM_A_TRIES=0",
        "TANDEM_A_OK=1",
        "TANDEM_B_TRIES=7",
        "TANDEM_B_OK=0",
        "odd=back\\slash",
    ]));
    let raw = std::fs::read(t.path("grubenv")).unwrap();
    assert!(
        raw.starts_with(b"# GRUB Environment Block\n# "),
        "Debian adds a warning comment line"
    );
    let store: Arc<dyn FileStore> = Arc::new(RealFs::new(t.dir.path()));
    let bc = grub_on(&img, store);
    assert_eq!(
        bc.state(SlotId::A).unwrap(),
        SlotBootState::new(2, 0, true).unwrap()
    );
    assert_eq!(
        bc.state(SlotId::B).unwrap(),
        SlotBootState::new(1, 7, false).unwrap()
    );
    // Our write keeps the other variables and the comment, and grub-editenv still reads it.
    bc.set_trial(SlotId::B, 2).unwrap();
    let list = stdout(&t.run(cmd("grub-editenv").args(["grubenv", "list"])));
    assert!(list.contains("saved_entry=Debian GNU/Linux\n"), "{list}");
    assert!(list.contains("odd=back\\slash\n"), "{list}");
    assert!(
        list.contains("TANDEM_ORDER=b a\n") && list.contains("TANDEM_B_TRIES=2\n"),
        "{list}"
    );
    let raw = std::fs::read(t.path("grubenv")).unwrap();
    assert_eq!(raw.len(), ENVBLK_SIZE);
    assert!(raw.starts_with(b"# GRUB Environment Block\n# WARNING"));
}

/// A disk image with a FAT ESP holding `/tandem/grubenv` and dummy kernels, and a grub-emu
/// prefix whose grub.cfg runs the shipped example and then halts.
struct GrubRig {
    t: Tmp,
    img: PathBuf,
    pair: SlotPair,
    prefix: PathBuf,
    map: PathBuf,
}

const ESP_AT: &str = "@@1M";

impl GrubRig {
    fn new() -> Self {
        let t = Tmp::new();
        let img = t.small_image("disk.img");
        let pair = pair_of(&img);
        // FAT on the ESP (partition 1: 16 MiB at 1 MiB), in place: no root, no loop device.
        t.run(
            cmd("mkfs.vfat")
                .args(["--offset", "2048"])
                .arg(&img)
                .arg("16384"),
        );
        let esp = format!("{}{ESP_AT}", img.display());
        t.run(mtools("mmd").args(["-i", &esp, "::tandem", "::tandem/a", "::tandem/b"]));
        std::fs::write(t.path("kernel"), b"not a kernel").unwrap();
        for s in ["a", "b"] {
            t.run(
                mtools("mcopy")
                    .args(["-i", &esp])
                    .arg(t.path("kernel"))
                    .arg(format!("::tandem/{s}/vmlinuz")),
            );
        }
        // The grubenv is made by our code, then lives on the ESP.
        std::fs::create_dir(t.path("host")).unwrap();
        let store: Arc<dyn FileStore> = Arc::new(RealFs::new(t.path("host")));
        grub_on(&img, store).prepare().unwrap();
        // Another program's variable: it must survive GRUB's save_env and our writes (it
        // sits in the second sector, behind our filler line).
        let host_env = t.path("host/grubenv");
        let mut env = GrubEnv::parse(&std::fs::read(&host_env).unwrap()).unwrap();
        env.set("saved_entry", "someone else's");
        std::fs::write(&host_env, env.to_block().unwrap()).unwrap();
        let rig = Self {
            prefix: t.path("prefix"),
            map: t.path("device.map"),
            img,
            pair,
            t,
        };
        rig.push_env();
        std::fs::create_dir(&rig.prefix).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grub.cfg.example");
        std::fs::copy(&example, rig.prefix.join("tandem.cfg")).expect("docs/grub.cfg.example");
        // grub-emu has no `linux` or `chainloader`: these functions stand in and print what GRUB
        // would boot. `boot` then fails harmlessly ("load the kernel first").
        std::fs::write(
            rig.prefix.join("grub.cfg"),
            format!(
                "function linux {{ echo \"TANDEM-KERNEL $1\"; shift; for a in $@; do echo \"TANDEM-ARG $a\"; done; }}\n\
                 function chainloader {{ echo \"TANDEM-UKI $1\"; shift; for a in $@; do echo \"TANDEM-ARG $a\"; done; }}\n\
                 function initrd {{ echo \"TANDEM-INITRD $1\"; }}\n\
                 source \"{}\"\n\
                 echo TANDEM-END\n\
                 halt\n",
                rig.prefix.join("tandem.cfg").display()
            ),
        )
        .unwrap();
        std::fs::write(&rig.map, format!("(hd0) {}\n", rig.img.display())).unwrap();
        rig
    }

    fn esp(&self) -> String {
        format!("{}{ESP_AT}", self.img.display())
    }

    /// Our backend over the host copy of the grubenv.
    fn host_bc(&self) -> GrubEnvBootControl {
        grub_on(&self.img, Arc::new(RealFs::new(self.t.path("host"))))
    }

    fn push_env(&self) {
        self.t.run(
            mtools("mcopy")
                .args(["-o", "-i", &self.esp()])
                .arg(self.t.path("host/grubenv"))
                .arg("::tandem/grubenv"),
        );
    }

    fn pull_env(&self) {
        self.t.run(
            mtools("mcopy")
                .args(["-o", "-i", &self.esp(), "::tandem/grubenv"])
                .arg(self.t.path("host/grubenv")),
        );
    }

    /// Give `slot` these boot files with our code (in the host directory, beside the host
    /// grubenv, as the agent does), then mirror its directory onto the ESP.
    fn give(&self, slot: SlotId, set: &[(BootFile, &[u8])]) {
        let files = BootFiles::new(Arc::new(RealFs::new(self.t.path("host"))), "").with_grub_env();
        let mut staging = files.stage(slot).unwrap();
        for (file, data) in set {
            let mut f = staging.create(*file).unwrap();
            f.write_all(data).unwrap();
            f.finish().unwrap();
        }
        staging.commit().unwrap();
        for name in ["uki.efi", "vmlinuz", "initrd.img", "cmdline", "cmdline.env"] {
            let host = self.t.path(&format!("host/{slot}/{name}"));
            let esp = format!("::tandem/{slot}/{name}");
            if host.exists() {
                self.t.run(
                    mtools("mcopy")
                        .args(["-o", "-i", &self.esp()])
                        .arg(&host)
                        .arg(&esp),
                );
            } else {
                // Absent already is fine.
                self.t
                    .run_any(mtools("mdel").args(["-i", &self.esp(), &esp]));
            }
        }
    }

    /// Change the boot state with our code (as the OS would), on the ESP copy.
    fn with_state(&self, f: impl FnOnce(&GrubEnvBootControl)) {
        self.pull_env();
        f(&self.host_bc());
        self.push_env();
    }

    /// One boot in grub-emu: what GRUB would have started, or None.
    fn boot_image(&self) -> Option<Booted> {
        let out = self.t.run(
            Command::new(tool("grub-emu"))
                .args(["-r", "host", "-d"])
                .arg(&self.prefix)
                .arg("-m")
                .arg(&self.map),
        );
        let text = clean(&stdout(&out));
        assert!(
            text.contains("TANDEM-END"),
            "the script did not run to its end:\n{text}"
        );
        let field = |tag: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(tag))
                .map(str::to_owned)
        };
        let Some(image) = field("TANDEM-KERNEL ").or_else(|| field("TANDEM-UKI ")) else {
            assert!(text.contains("tandem: nothing bootable"), "{text}");
            return None;
        };
        let slot = if image.contains("/tandem/a/") {
            SlotId::A
        } else {
            SlotId::B
        };
        let args = text
            .lines()
            .filter_map(|l| l.strip_prefix("TANDEM-ARG "))
            .map(str::to_owned)
            .collect();
        Some(Booted {
            slot,
            uki: field("TANDEM-UKI ").is_some(),
            image,
            args,
            initrd: field("TANDEM-INITRD "),
        })
    }

    /// One boot in grub-emu of a slot with a kernel and no command line: the slot GRUB
    /// chose, or None.
    fn boot(&self) -> Option<SlotId> {
        let booted = self.boot_image()?;
        let slot = booted.slot;
        assert_eq!(
            booted.image,
            format!("(hd0,gpt1)/tandem/{slot}/vmlinuz"),
            "{booted:?}"
        );
        assert!(!booted.uki);
        assert_eq!(booted.args, self.slot_args(slot), "{booted:?}");
        Some(slot)
    }

    /// The parameters GRUB adds for `slot`.
    fn slot_args(&self, slot: SlotId) -> Vec<String> {
        let partuuid = self.pair.slot(slot).partuuid;
        vec![
            format!("root=PARTUUID={partuuid}"),
            "rw".into(),
            format!("tandem.slot={slot}"),
        ]
    }

    /// Boot once in GRUB and once in the reference firmware (on a copy of the same grubenv):
    /// same choice, same grubenv afterwards.
    fn boot_and_compare(&self) -> Option<SlotId> {
        self.pull_env();
        let before = std::fs::read(self.t.path("host/grubenv")).unwrap();
        let mem = MemFs::new();
        mem.write_atomic(Path::new("grubenv"), &before).unwrap();
        let reference = grub_on(&self.img, Arc::new(mem.clone()));
        let predicted = select_and_boot(&reference).ok();
        let got = self.boot();
        assert_eq!(got, predicted, "GRUB and the reference firmware disagree");
        self.pull_env();
        let after_grub =
            GrubEnv::parse(&std::fs::read(self.t.path("host/grubenv")).unwrap()).unwrap();
        let after_ref = reference.read_env().unwrap();
        assert_eq!(
            after_grub.get("saved_entry").as_deref(),
            Some("someone else's")
        );
        for v in [
            "TANDEM_ORDER",
            "TANDEM_A_TRIES",
            "TANDEM_A_OK",
            "TANDEM_B_TRIES",
            "TANDEM_B_OK",
        ] {
            assert_eq!(after_grub.get(v), after_ref.get(v), "{v} after the boot");
        }
        got
    }
}

/// What GRUB would have started.
#[derive(Debug)]
struct Booted {
    slot: SlotId,
    /// Chainloaded (a UKI), not `linux`.
    uki: bool,
    image: String,
    args: Vec<String>,
    initrd: Option<String>,
}

fn mtools(name: &str) -> Command {
    let mut c = cmd(name);
    c.env("MTOOLS_SKIP_CHECK", "1");
    c
}

/// Drop terminal escapes and carriage returns from grub-emu's output.
fn clean(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn grub_counts_tries_down_and_falls_back_like_the_reference() {
    let rig = GrubRig::new();
    assert_eq!(
        rig.boot_and_compare(),
        None,
        "fresh grubenv: nothing bootable"
    );
    rig.with_state(|bc| {
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
    });
    assert_eq!(rig.boot_and_compare(), Some(SlotId::A));
    rig.with_state(|bc| bc.set_trial(SlotId::B, 3).unwrap());
    let boots: Vec<_> = (0..5).map(|_| rig.boot_and_compare()).collect();
    let (a, b) = (Some(SlotId::A), Some(SlotId::B));
    assert_eq!(boots, [b, b, b, a, a], "three tries of b, then back to a");
    let st = rig.host_bc().states().unwrap();
    assert_eq!(
        st[1],
        SlotBootState::new(2, 0, false).unwrap(),
        "b used up its tries"
    );
    // A new trial of b, committed after its first boot: b stays, no try is used any more.
    rig.with_state(|bc| bc.set_trial(SlotId::B, 2).unwrap());
    assert_eq!(rig.boot_and_compare(), b);
    rig.with_state(|bc| bc.mark_good(SlotId::B).unwrap());
    assert_eq!(rig.boot_and_compare(), b);
    assert_eq!(rig.boot_and_compare(), b);
    assert_eq!(
        rig.host_bc().state(SlotId::B).unwrap(),
        SlotBootState::new(2, 0, true).unwrap()
    );
    // Health check failed on an update of a: marked bad, GRUB goes back to b.
    rig.with_state(|bc| bc.set_trial(SlotId::A, 3).unwrap());
    assert_eq!(rig.boot_and_compare(), a);
    rig.with_state(|bc| bc.mark_bad(SlotId::A).unwrap());
    assert_eq!(rig.boot_and_compare(), b);
}

#[test]
fn grub_uses_every_try_from_fifteen_down() {
    // Both slots on trial with 15 tries (every string-comparison branch of both slots),
    // a first: 15 boots of a, 15 of b, then nothing.
    let rig = GrubRig::new();
    rig.with_state(|bc| {
        bc.set_trial(SlotId::B, 15).unwrap();
        bc.set_trial(SlotId::A, 15).unwrap();
    });
    let boots: Vec<_> = (0..31).map(|_| rig.boot_and_compare()).collect();
    let mut want = vec![Some(SlotId::A); 15];
    want.extend(vec![Some(SlotId::B); 15]);
    want.push(None);
    assert_eq!(boots, want);
}

#[test]
fn grub_editenv_reads_our_cmdline_env_exactly() {
    let t = Tmp::new();
    let files = BootFiles::new(Arc::new(RealFs::new(t.dir.path())), "").with_grub_env();
    let long = format!("console=ttyS0 {}", "x".repeat(2000));
    for cmdline in [
        "console=ttyS0,115200 quiet tandem.marker=v2",
        r"path=C:\tandem\new two\\backslashes",
        &long,
    ] {
        let mut staging = files.stage(SlotId::B).unwrap();
        let mut f = staging.create(BootFile::Cmdline).unwrap();
        f.write_all(cmdline.as_bytes()).unwrap();
        f.finish().unwrap();
        staging.commit().unwrap();
        let list = stdout(&t.run(cmd("grub-editenv").args(["b/cmdline.env", "list"])));
        assert_eq!(list, format!("TANDEM_CMDLINE={cmdline}\n"));
    }
    let size = std::fs::metadata(t.path("b/cmdline.env")).unwrap().len();
    assert_eq!(
        size,
        3 * 1024,
        "a long command line: a block of a larger multiple of 1024"
    );
}

#[test]
fn grub_boots_the_slots_uki_or_kernel_with_its_cmdline() {
    let rig = GrubRig::new();
    // Slot a: kernel + initrd with a command line; slot b: a UKI with another one.
    rig.give(
        SlotId::A,
        &[
            (BootFile::Kernel, b"kernel a"),
            (BootFile::Initrd, b"initrd a"),
            (BootFile::Cmdline, b"console=ttyS0 tandem.marker=v1\n"),
        ],
    );
    rig.give(
        SlotId::B,
        &[
            (BootFile::Uki, b"MZ uki b"),
            (BootFile::Cmdline, b"quiet tandem.marker=v2"),
        ],
    );
    rig.with_state(|bc| {
        bc.set_trial(SlotId::A, 1).unwrap();
        bc.mark_good(SlotId::A).unwrap();
    });
    let a = rig.boot_image().unwrap();
    assert_eq!(a.slot, SlotId::A);
    assert!(!a.uki, "{a:?}");
    assert_eq!(a.image, "(hd0,gpt1)/tandem/a/vmlinuz");
    assert_eq!(a.initrd.as_deref(), Some("(hd0,gpt1)/tandem/a/initrd.img"));
    let mut want = vec!["console=ttyS0".to_string(), "tandem.marker=v1".into()];
    want.extend(rig.slot_args(SlotId::A));
    assert_eq!(a.args, want);

    rig.with_state(|bc| bc.set_trial(SlotId::B, 1).unwrap());
    let b = rig.boot_image().unwrap();
    assert_eq!(b.slot, SlotId::B);
    assert!(b.uki, "{b:?}");
    assert_eq!(b.image, "(hd0,gpt1)/tandem/b/uki.efi");
    assert_eq!(b.initrd, None);
    let mut want = vec!["quiet".to_string(), "tandem.marker=v2".into()];
    want.extend(rig.slot_args(SlotId::B));
    assert_eq!(b.args, want);

    // b's try is used up: back to a, whose command line is its own.
    let a = rig.boot_image().unwrap();
    assert_eq!(
        (a.slot, a.args[1].as_str()),
        (SlotId::A, "tandem.marker=v1")
    );
}
