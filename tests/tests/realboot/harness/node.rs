//! One node: its disk (ESP, root-a with the factory's release, root-b, state) and USB stick,
//! in `target/realboot/run/NAME/`, provisioned as an operator would with `tandem-disk`, and
//! read back on the host between boots: the boot state as the bootloader will see it, and the
//! agent's state file.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use partitions::boot::grub::GrubEnv;

use super::artefacts::Artefacts;
use super::env::{mtools, run, Env, SYSTEMD_BOOT};
use super::os::{Backend, FACTORY, MIB};
use super::vm::Vm;

/// Room for three sets of boot files at the install's peak (docs/booting.md, Space): the
/// test's UKI is about 39 MB, mostly the debug updater in its initramfs.
pub const ESP_SIZE: u64 = 160 * MIB;
pub const SLOT_SIZE: u64 = 32 * MIB;
pub const STATE_SIZE: u64 = 8 * MIB;

/// A partition's byte range on the disk image.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub offset: u64,
    pub len: u64,
}

/// A slot's boot state as the bootloader sees it, read from the ESP on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotBoot {
    /// No entry / not in `TANDEM_ORDER`.
    Unbootable,
    /// Committed: no counter / `OK=1`.
    Good,
    /// Not committed, with this many tries left (0: bad, never picked).
    Trial(u8),
}

/// The boot state of both slots and the raw text it was read from.
#[derive(Debug, Clone)]
pub struct BootView {
    pub a: SlotBoot,
    pub b: SlotBoot,
    pub raw: String,
}

/// What a new node is made of.
pub struct Provision<'a> {
    /// The node's directory under `target/realboot/run/`.
    pub name: String,
    pub slot_size: u64,
    /// The factory's root image, written into slot A.
    pub factory_image: &'a Path,
    /// The factory's kernel and initramfs, both slots' boot files.
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// The GRUB image (`grubx64.efi`), for GRUB.
    pub grub: &'a Path,
    /// Secure Boot: the signed systemd-boot and the factory's signed UKI (slot A's boot
    /// file instead of its kernel and initramfs).
    pub signed: Option<Signed<'a>>,
    /// The USB stick's image, copied for the node.
    pub usb: Option<&'a Path>,
    /// The agent's state file on the state partition.
    pub state_file: &'static str,
}

/// The signed boot files of a Secure Boot node (systemd-boot).
#[derive(Clone, Copy)]
pub struct Signed<'a> {
    pub loader: &'a Path,
    pub factory_uki: &'a Path,
}

pub struct Node {
    pub backend: Backend,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub usb: Option<PathBuf>,
    pub esp: Part,
    pub state: Part,
    state_file: &'static str,
}

impl Node {
    /// The busybox node: the test's initramfs runs the agent, v1 in slot A, the USB stick.
    pub fn new(env: &Env, art: &Artefacts, backend: Backend) -> Node {
        let grub = art.path("grubx64.efi");
        let image = art.path(&format!("v{FACTORY}.img"));
        let initrd = art.initrd(FACTORY);
        let usb = art.usb(backend);
        Self::provision(
            env,
            backend,
            &Provision {
                name: backend.name().to_string(),
                slot_size: SLOT_SIZE,
                factory_image: &image,
                kernel: &env.kernel,
                initrd: &initrd,
                grub: &grub,
                signed: None,
                usb: Some(&usb),
                state_file: "/tandem/state.json",
            },
        )
    }

    /// A node made of `p`, with an empty ext4 (labelled `tandem-state`) as its state partition.
    pub fn provision(env: &Env, backend: Backend, p: &Provision) -> Node {
        let dir = env.work.join("run").join(&p.name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("run dir");
        let disk = dir.join("disk.img");
        let size = 2 * MIB + ESP_SIZE + 2 * p.slot_size + STATE_SIZE;
        run(env
            .bin("tandem-disk")
            .arg("create")
            .arg(&disk)
            .arg(format!("--size={size}"))
            .arg(format!("--slot-size={}", p.slot_size))
            .arg(format!("--esp={ESP_SIZE}"))
            .arg(format!("--state={STATE_SIZE}")));
        let esp = partition(&disk, 1);
        let state = partition(&disk, 4);
        Self::fill_esp(env, p, backend, &dir, &disk, esp);
        // The state partition: an empty ext4.
        let state_img = dir.join("state.img");
        run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "tandem-state"])
            .arg(&state_img)
            .arg(format!("{}k", state.len / 1024)));
        put(&disk, state, &state_img);
        fs::remove_file(&state_img).expect("rm state.img");
        let usb = p.usb.map(|from| {
            let usb = dir.join("usb.img");
            fs::copy(from, &usb).expect("usb");
            usb
        });
        Node {
            backend,
            dir,
            disk,
            usb,
            esp,
            state,
            state_file: p.state_file,
        }
    }

    /// The ESP's content, staged in a directory: the boot state comes from tandem-disk (the
    /// same partitions code as the updater), the factory's image is written into root-a and
    /// marked good.
    fn fill_esp(env: &Env, p: &Provision, backend: Backend, dir: &Path, disk: &Path, esp: Part) {
        let tree = dir.join("esp");
        for d in ["EFI/BOOT", "tandem/a", "tandem/b"] {
            fs::create_dir_all(tree.join(d)).expect("mkdir esp");
        }
        if let Some(signed) = p.signed {
            fs::copy(signed.factory_uki, tree.join("tandem/a/uki.efi")).expect("factory UKI");
        }
        let backend_args: Vec<String> = match backend {
            Backend::SystemdBoot => vec![
                "--backend=systemd-boot".into(),
                format!("--esp={}", tree.display()),
            ],
            Backend::Grub => vec![
                "--backend=grub".into(),
                format!("--grubenv={}", tree.join("tandem/grubenv").display()),
            ],
        };
        run(env
            .bin("tandem-disk")
            .arg("init-boot")
            .arg(disk)
            .args(&backend_args));
        run(env
            .bin("tandem-disk")
            .arg("write-slot")
            .arg(disk)
            .arg("a")
            .arg(p.factory_image)
            .args(&backend_args));
        let loader = match backend {
            Backend::SystemdBoot => p
                .signed
                .map_or_else(|| PathBuf::from(SYSTEMD_BOOT), |s| s.loader.to_path_buf()),
            Backend::Grub => {
                fs::copy(
                    env.docs.join("grub.cfg.example"),
                    tree.join("tandem/grub.cfg"),
                )
                .expect("grub.cfg");
                p.grub.to_path_buf()
            }
        };
        fs::copy(loader, tree.join("EFI/BOOT/BOOTX64.EFI")).expect("loader");
        for slot in ["a", "b"].into_iter().filter(|_| p.signed.is_none()) {
            fs::copy(p.kernel, tree.join(format!("tandem/{slot}/vmlinuz"))).expect("kernel");
            fs::copy(p.initrd, tree.join(format!("tandem/{slot}/initrd.img"))).expect("initrd");
        }
        let esp_img = dir.join("esp.img");
        run(Command::new("mkfs.vfat")
            .args(["-C", "-n", "ESP"])
            .arg(&esp_img)
            .arg((esp.len / 1024).to_string()));
        let mut mcopy = mtools("mcopy");
        mcopy.arg("-s").arg("-i").arg(&esp_img);
        for entry in fs::read_dir(&tree).expect("ls esp") {
            mcopy.arg(entry.expect("entry").path());
        }
        run(mcopy.arg("::"));
        put(disk, esp, &esp_img);
        fs::remove_file(&esp_img).expect("rm esp.img");
    }

    /// What the next boot's `/init` does after boot-check (`install …` or `none`).
    pub fn set_step(&self, step: &str) {
        let usb = self.usb.as_ref().expect("a node with a USB stick");
        let file = self.dir.join("step");
        fs::write(&file, format!("{step}\n")).expect("step");
        run(mtools("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(usb)
            .arg(&file)
            .arg("::/step"));
    }

    fn esp_image(&self) -> String {
        format!("{}@@{}", self.disk.display(), self.esp.offset)
    }

    /// The boot state as the bootloader will read it, from the ESP on the disk image.
    pub fn boot_view(&self) -> BootView {
        match self.backend {
            Backend::SystemdBoot => self.systemd_boot_view(),
            Backend::Grub => self.grub_view(),
        }
    }

    /// systemd-boot: one entry per bootable slot, a `+LEFT-DONE` counter while on trial.
    fn systemd_boot_view(&self) -> BootView {
        let listing =
            run(mtools("mdir").args(["-b", "-i", &self.esp_image(), "::/loader/entries"]));
        let names: Vec<String> = listing
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .filter(|n| n.ends_with(".conf"))
            .map(str::to_string)
            .collect();
        let slot = |s: char| {
            let found: Vec<&String> = names
                .iter()
                .filter(|n| n.starts_with(&format!("tandem-{s}")))
                .collect();
            assert!(found.len() <= 1, "two entries for slot {s}: {names:?}");
            match found.first() {
                None => SlotBoot::Unbootable,
                Some(n) => match n.split_once('+') {
                    None => SlotBoot::Good,
                    Some((_, counter)) => {
                        let left = counter.split(['-', '.']).next().unwrap_or("");
                        SlotBoot::Trial(left.parse().expect("tries left"))
                    }
                },
            }
        };
        BootView {
            a: slot('a'),
            b: slot('b'),
            raw: format!("loader/entries: {}", names.join(" ")),
        }
    }

    /// GRUB: the slots in `TANDEM_ORDER`, `TANDEM_X_OK` and `TANDEM_X_TRIES`.
    fn grub_view(&self) -> BootView {
        let text = run(mtools("mtype").args(["-i", &self.esp_image(), "::/tandem/grubenv"]));
        let env = GrubEnv::parse(text.as_bytes()).expect("grubenv parses");
        let order = env.get("TANDEM_ORDER").unwrap_or_default();
        let slot = |s: &str| {
            if !order.split_whitespace().any(|w| w == s) {
                SlotBoot::Unbootable
            } else if env
                .get(&format!("TANDEM_{}_OK", s.to_uppercase()))
                .as_deref()
                == Some("1")
            {
                SlotBoot::Good
            } else {
                let tries = env.get(&format!("TANDEM_{}_TRIES", s.to_uppercase()));
                SlotBoot::Trial(tries.unwrap_or_default().parse().unwrap_or(0))
            }
        };
        let raw = env
            .names()
            .filter(|n| !n.ends_with("PARTUUID"))
            .map(|n| format!("{n}={}", env.get(n).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ");
        BootView {
            a: slot("a"),
            b: slot("b"),
            raw: format!("grubenv: {raw}"),
        }
    }

    /// The names of `slot`'s boot files on the ESP (`/tandem/SLOT/`), sorted.
    pub fn boot_files(&self, slot: &str) -> Vec<String> {
        let dir = format!("::/tandem/{slot}");
        let listing = run(mtools("mdir").args(["-b", "-i", &self.esp_image(), &dir]));
        let mut names: Vec<String> = listing
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The agent's state file, read from the state partition (a copy, through debugfs).
    pub fn agent_state(&self) -> serde_json::Value {
        let copy = self.dir.join("state-readback.img");
        get(&self.disk, self.state, &copy);
        // After a power cut the last fsynced state may be in the ext4 journal only: debugfs
        // does not replay it, so replay it on the copy first (as the next mount would).
        let fsck = Command::new("e2fsck")
            .args(["-E", "journal_only", "-y"])
            .arg(&copy)
            .output()
            .expect("e2fsck");
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck on the state partition: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat {}", self.state_file)])
            .arg(&copy)
            .output()
            .expect("debugfs");
        let _ = fs::remove_file(&copy);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "state.json on the state partition does not parse ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// A machine that boots this node.
    pub fn vm(&self) -> Vm {
        Vm::new(&self.dir, &self.disk, self.usb.as_deref())
    }
}

/// The byte range of partition `n` (1-based), from sgdisk.
pub(super) fn partition(disk: &Path, n: u32) -> Part {
    let info = run(Command::new("sgdisk")
        .arg("-i")
        .arg(n.to_string())
        .arg(disk));
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("sgdisk -i {n}: no {name:?} in\n{info}"))
    };
    Part {
        offset: field("First sector:") * 512,
        len: field("Partition size:") * 512,
    }
}

/// `dd conv=notrunc`: the image file into the partition.
fn put(disk: &Path, part: Part, image: &Path) {
    let data = fs::read(image).expect("read image");
    assert!(
        data.len() as u64 <= part.len,
        "{} is larger than its partition",
        image.display()
    );
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .expect("open disk");
    f.seek(SeekFrom::Start(part.offset)).expect("seek");
    f.write_all(&data).expect("write partition");
}

/// The partition into a file.
fn get(disk: &Path, part: Part, out: &Path) {
    let mut f = fs::File::open(disk).expect("open disk");
    f.seek(SeekFrom::Start(part.offset)).expect("seek");
    let mut data = vec![0; usize::try_from(part.len).expect("len")];
    f.read_exact(&mut data).expect("read partition");
    fs::write(out, data).expect("write copy");
}
