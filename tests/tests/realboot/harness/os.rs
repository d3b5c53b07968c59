//! The test OS: the product, its releases and what each makes the machine do, the two boot
//! backends, and the updater's configuration inside the machine.

pub const PRODUCT: &str = "acme-realboot";
pub const MIB: u64 = 1 << 20;
/// Boots a new slot gets (the updater's `tries`): 2 keeps scenario 3 short.
pub const TRIES: u8 = 2;
/// The size of every release's root image.
pub const IMAGE_SIZE: u64 = 4 * MIB;

/// A release of the test OS: what its root image makes the machine do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The health marker is there: boot-check passes.
    Healthy,
    /// No health marker: boot-check fails.
    Unhealthy,
}

/// The releases: (version, behaviour). The factory's is the first; a release carries the
/// boot assets [`boot_assets`] finds for its version.
pub const RELEASES: &[(&str, Behaviour)] = &[
    ("1.0.0", Behaviour::Healthy),
    ("2.0.0", Behaviour::Healthy),
    ("3.0.0", Behaviour::Unhealthy),
    // Its root is healthy: only its boot assets keep it from coming up.
    ("4.0.0", Behaviour::Healthy),
    ("5.0.0", Behaviour::Healthy),
];

/// The release a new disk has in slot A, with its root and its initramfs in both slots'
/// boot files (no UKI, no command line of its own).
pub const FACTORY: &str = "1.0.0";

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

/// The boot assets a release of the test OS carries: its initramfs and kernel parameters,
/// with Debian's kernel. On systemd-boot the release carries them as one UKI
/// (`uki-VERSION.efi`, the parameters as its `.cmdline`), on GRUB as kernel, initramfs
/// (`initrd-VERSION.img`) and command line.
#[derive(Debug, Clone, Copy)]
pub struct BootAssets {
    /// The release they belong to: the initramfs's marker and the UKI's `VERSION_ID`.
    pub version: &'static str,
    pub init: Init,
    /// The release's kernel parameters.
    pub cmdline: &'static str,
}

/// The boot assets of the releases that carry some (3.0.0 does not: slot A keeps the
/// factory's). Every command line has `panic=1`: Debian's kernel (`CONFIG_PANIC_TIMEOUT=0`)
/// would hang after a panic, and only a reset lets the loader spend its next try. The broken
/// one has `console=ttyS0` and no `quiet`, so the kernel's command line and its panic are in
/// the serial log.
pub const BOOT_ASSETS: &[BootAssets] = &[
    BootAssets {
        version: "2.0.0",
        init: Init::Tandem,
        cmdline: "quiet panic=1 tandem.test=v2",
    },
    BootAssets {
        version: "4.0.0",
        init: Init::Exits,
        cmdline: "panic=1 console=ttyS0 tandem.test=v4",
    },
    BootAssets {
        version: "5.0.0",
        init: Init::Tandem,
        cmdline: "quiet panic=1 tandem.test=v5",
    },
];

/// The boot assets release `version` carries, if any.
pub fn boot_assets(version: &str) -> Option<&'static BootAssets> {
    BOOT_ASSETS.iter().find(|a| a.version == version)
}

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
