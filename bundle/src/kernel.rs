//! The version string of an x86 Linux kernel image (bzImage), read from its real-mode setup
//! header (the kernel's `Documentation/arch/x86/boot.rst`): the `HdrS` magic at 0x202, the
//! boot protocol version at 0x206 (2.00 or later has the field), and at 0x20E the offset of
//! the version string minus 0x200. Three bounded reads and nothing more; anything unexpected
//! gives `None`. Display only: nothing trusts what this returns.

use crate::uki::{u16_at, ReadAt};

/// Where the setup header's fields this reads start (the `HdrS` magic).
const HEADER_AT: u64 = 0x202;
/// From the magic to the end of the `kernel_version` field.
const HEADER_LEN: usize = 0x210 - 0x202;
/// The first boot protocol with a `kernel_version` field.
const MIN_PROTOCOL: u16 = 0x0200;
/// Longest version shown.
const MAX_VERSION: usize = 64;

/// The version of the kernel image that `read_at` reads (like `6.1.0-57-cloud-amd64`: the
/// version string up to its first space), if it is a bzImage whose header names one.
pub fn version(read_at: &mut ReadAt<'_>) -> Option<String> {
    let header = read_at(HEADER_AT, HEADER_LEN)?;
    if header.get(..4)? != b"HdrS" || u16_at(&header, 4)? < MIN_PROTOCOL {
        return None;
    }
    let pointer = u16_at(&header, 0x20E - 0x202)?;
    if pointer == 0 {
        return None;
    }
    let text = read_at(u64::from(pointer) + 0x200, MAX_VERSION)?;
    let version: Vec<u8> = text
        .into_iter()
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    let printable = !version.is_empty() && version.iter().all(u8::is_ascii_graphic);
    printable.then(|| String::from_utf8_lossy(&version).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: a setup header of `protocol` whose version string, at 0x400
    /// (pointer 0x200), is `banner`.
    fn bzimage(protocol: u16, banner: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x600];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        b[0x20E..0x210].copy_from_slice(&0x200u16.to_le_bytes());
        b[0x400..0x400 + banner.len()].copy_from_slice(banner);
        b
    }

    fn read(image: &[u8]) -> Option<String> {
        version(&mut |at, len| {
            let at = usize::try_from(at).ok()?;
            image.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
        })
    }

    #[test]
    fn reads_the_version_up_to_the_first_space() {
        let image = bzimage(
            0x020f,
            b"6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0",
        );
        assert_eq!(read(&image).as_deref(), Some("6.1.0-57-cloud-amd64"));
        let image = bzimage(0x0200, b"6.12.1\0trailing");
        assert_eq!(read(&image).as_deref(), Some("6.12.1"));
        let long = [b'7'; 100];
        assert_eq!(read(&bzimage(0x020f, &long)), Some("7".repeat(MAX_VERSION)));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(
            read(&bzimage(0x01ff, b"6.1.0\0")),
            None,
            "protocol before 2.00"
        );
        assert_eq!(read(&bzimage(0x020f, b"\0")), None, "empty string");
        assert_eq!(
            read(&bzimage(0x020f, b"6.1\x1b[2J\0")),
            None,
            "control character"
        );
        let mut image = bzimage(0x020f, b"6.1.0\0");
        image[0x202] = b'X';
        assert_eq!(read(&image), None, "no HdrS magic");
        let mut image = bzimage(0x020f, b"6.1.0\0");
        image[0x20E..0x210].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(read(&image), None, "no version pointer");
        image[0x20E..0x210].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(read(&image), None, "pointer past the end");
        assert_eq!(read(b"MZ not a kernel"), None);
    }
}
