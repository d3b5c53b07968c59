//! Unified kernel images, made as systemd's `ukify` makes them (it is not in Debian 12):
//! systemd's EFI stub with the os-release, the command line, the kernel and the initramfs
//! added by `objcopy` as the sections `.osrel`, `.cmdline`, `.linux` and `.initrd`, each
//! placed after the stub's last section and the one before it.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::env::{run, SYSTEMD_STUB};

/// Alignment of the added sections' addresses: a page, a multiple of the stub's
/// `SectionAlignment` (0x200 in systemd 252's stub).
const ALIGN: u64 = 0x1000;

/// What goes into a UKI.
pub struct UkiParts<'a> {
    /// `.osrel`: the text of an os-release file (`VERSION_ID=` is what systemd-boot shows).
    pub os_release: &'a str,
    /// `.cmdline`: the kernel parameters the stub passes when the loader gives none.
    pub cmdline: &'a str,
    /// `.linux`: an EFI-stub kernel.
    pub kernel: &'a Path,
    /// `.initrd`: the initramfs.
    pub initrd: &'a Path,
}

/// Builds the UKI `out` from the stub and `parts`; `scratch` is a directory for the text
/// sections' files.
pub fn build(parts: &UkiParts, scratch: &Path, out: &Path) {
    let osrel = scratch.join("uki-osrel");
    let cmdline = scratch.join("uki-cmdline");
    fs::write(&osrel, parts.os_release).expect("uki .osrel");
    fs::write(&cmdline, parts.cmdline).expect("uki .cmdline");
    let sections = [
        (".osrel", osrel.as_path()),
        (".cmdline", cmdline.as_path()),
        (".linux", parts.kernel),
        (".initrd", parts.initrd),
    ];
    let sizes: Vec<u64> = sections
        .iter()
        .map(|(_, file)| {
            fs::metadata(file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .len()
        })
        .collect();
    let stub_end = sections_end(&run(Command::new("objdump").arg("-h").arg(SYSTEMD_STUB)));
    let mut objcopy = Command::new("objcopy");
    for ((name, file), vma) in sections.iter().zip(layout(stub_end, &sizes)) {
        objcopy
            .arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
    }
    run(objcopy.arg(SYSTEMD_STUB).arg(out));
    fs::remove_file(osrel).expect("rm uki-osrel");
    fs::remove_file(cmdline).expect("rm uki-cmdline");
}

/// The first address past the sections `objdump -h` lists (rows `IDX NAME SIZE VMA …`,
/// sizes and addresses in hex).
fn sections_end(objdump_h: &str) -> u64 {
    objdump_h
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u32>().ok()?;
            let _name = words.next()?;
            let size = u64::from_str_radix(words.next()?, 16).ok()?;
            let vma = u64::from_str_radix(words.next()?, 16).ok()?;
            Some(vma + size)
        })
        .max()
        .expect("objdump -h of the stub lists no section")
}

/// The addresses of sections of `sizes`, one after another from `start`, each aligned to
/// [`ALIGN`]: they overlap neither the stub nor each other, however large the kernel.
fn layout(start: u64, sizes: &[u64]) -> Vec<u64> {
    let mut next = start;
    sizes
        .iter()
        .map(|size| {
            let vma = next.next_multiple_of(ALIGN);
            next = vma + size;
            vma
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd 252's stub as Debian 12 ships it (`objdump -h`, flags lines included).
    const STUB_252: &str = "
/usr/lib/systemd/boot/efi/linuxx64.efi.stub:     file format pei-x86-64

Sections:
Idx Name          Size      VMA               LMA               File off  Algn
  0 .text         0000bff0  0000000000004000  0000000000004000  00000400  2**4
                  CONTENTS, ALLOC, LOAD, READONLY, CODE
  1 .reloc        0000000c  0000000000010000  0000000000010000  0000c400  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
  6 .sbat         000000e2  0000000000019000  0000000000019000  00011000  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
  7 .sdmagic      00000034  0000000000019100  0000000000019100  00011200  2**2
                  CONTENTS, ALLOC, LOAD, READONLY, DATA
";

    #[test]
    fn the_stub_ends_after_its_last_section() {
        assert_eq!(sections_end(STUB_252), 0x19134);
    }

    #[test]
    fn sections_follow_each_other_page_aligned() {
        let kernel = 0xd8_87c0;
        assert_eq!(
            layout(0x19134, &[0x36, 0x1f, kernel, 0x1e_4600]),
            [0x1a000, 0x1b000, 0x1c000, 0xda5000]
        );
    }
}
