//! The test OS: the product, its releases and what each makes the machine do, the two boot
//! backends, and the updater's configuration inside the machine.

pub const PRODUCT: &str = "acme-realboot";
pub const MIB: u64 = 1 << 20;
/// Boots a new slot gets (the updater's `tries`): 2 keeps scenario 3 short.
pub const TRIES: u8 = 2;
/// The big release (v5) whose install the test cuts.
pub const BIG_IMAGE: u64 = 24 * MIB;

/// A release of the test OS: what its slot image makes the machine do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The health marker is there: boot-check passes.
    Healthy,
    /// No health marker: boot-check fails.
    Unhealthy,
    /// `/init` powers off before boot-check (a kernel that never comes up).
    Dies,
}

/// The releases: (version, behaviour, image size).
pub const RELEASES: &[(&str, Behaviour, u64)] = &[
    ("1.0.0", Behaviour::Healthy, 4 * MIB),
    ("2.0.0", Behaviour::Healthy, 4 * MIB),
    ("3.0.0", Behaviour::Unhealthy, 4 * MIB),
    ("4.0.0", Behaviour::Dies, 4 * MIB),
    ("5.0.0", Behaviour::Healthy, BIG_IMAGE),
];

/// What an initramfs's `/init` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The test's `/init` (`init.sh`): says which boot assets it belongs to
    /// (`TANDEM-INITRD release=…`) and the kernel's command line (`TANDEM-CMDLINE …`), then
    /// runs the updater.
    Tandem,
    /// Exits at once: the kernel panics ("Attempted to kill init!").
    Exits,
}

/// The boot assets of a release of the test OS: its initramfs and kernel parameters, and
/// the UKI made of them with Debian's kernel (artefacts `initrd-VERSION.img`,
/// `uki-VERSION.efi`).
#[derive(Debug, Clone, Copy)]
pub struct BootAssets {
    /// The release they belong to: the initramfs's marker and the UKI's `VERSION_ID`.
    pub version: &'static str,
    pub init: Init,
    /// The release's kernel parameters (the UKI's `.cmdline`).
    pub cmdline: &'static str,
}

/// The boot assets the test OS has. Every command line has `panic=1`: Debian's kernel
/// (`CONFIG_PANIC_TIMEOUT=0`) would hang after a panic, and only a reset lets the loader
/// spend its next try. The broken one adds `console=ttyS0`, so the panic is in the serial log.
pub const BOOT_ASSETS: &[BootAssets] = &[
    BootAssets {
        version: "1.0.0",
        init: Init::Tandem,
        cmdline: "quiet panic=1 tandem.test=v1",
    },
    BootAssets {
        version: "2.0.0",
        init: Init::Tandem,
        cmdline: "quiet panic=1 tandem.test=v2",
    },
    BootAssets {
        version: "3.0.0",
        init: Init::Exits,
        cmdline: "quiet panic=1 console=ttyS0 tandem.test=v3",
    },
];

/// The release whose boot assets a new disk has for both slots.
pub const FACTORY: &str = "1.0.0";

/// The test OS's os-release file for `version`.
pub fn os_release(version: &str) -> String {
    format!("NAME=\"Tandem test OS\"\nID=tandem-test\nVERSION_ID={version}\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SystemdBoot,
    Grub,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::SystemdBoot, Backend::Grub];

    pub fn name(self) -> &'static str {
        match self {
            Backend::SystemdBoot => "systemd-boot",
            Backend::Grub => "grub",
        }
    }
}

/// The updater's configuration inside the machine.
pub fn config(backend: Backend) -> String {
    let boot = match backend {
        Backend::SystemdBoot => "boot = \"systemd-boot\"\nesp = \"/esp\"\n",
        Backend::Grub => "boot = \"grub\"\ngrubenv = \"/esp/tandem/grubenv\"\n",
    };
    format!(
        "disk = \"/dev/vda\"\n{boot}state = \"/state/tandem/state.json\"\n\
         root = \"/etc/tandem/root.json\"\nproduct = \"{PRODUCT}\"\ntries = {TRIES}\n\
         cmdline = \"/proc/cmdline\"\n\
         reboot = [\"/bin/sh\", \"-c\", \"echo TANDEM-REBOOT; sync; poweroff -f\"]\n\
         health_deadline = \"60s\"\n\n[[health]]\n\
         exec = [\"/bin/sh\", \"-c\", \"test -e /slot/etc/tandem-healthy\"]\ntimeout = \"20s\"\n"
    )
}
