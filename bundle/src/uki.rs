//! What a Unified Kernel Image says about itself: the `VERSION_ID` of its `.osrel` section
//! (the os-release text systemd-stub embeds) and the kernel command line of its `.cmdline`
//! section. A bounded walk of the PE/COFF headers and nothing more: the DOS header's
//! `e_lfanew` (offset 0x3C), the `PE\0\0` signature and COFF header, the section table, one
//! section of a bounded length. Anything unexpected gives `None`. Nothing trusts what this
//! returns: the signer shows it, the agent uses a `.cmdline` only from a verified UKI.

/// Largest `.osrel` section read.
pub const MAX_OSREL: u32 = 64 << 10;
/// Largest `.cmdline` section read: the longest command line with as much again of padding
/// (NULs, a newline) after it.
const MAX_CMDLINE_SECTION: u32 = 2 * proto::MAX_CMDLINE as u32;
/// Most sections a PE image may have (PE/COFF specification).
const MAX_SECTIONS: u16 = 96;
const SECTION_LEN: usize = 40;
/// Longest section name held in the section table itself (longer ones go to a string table).
const SECTION_NAME_LEN: usize = 8;

/// Reads `len` bytes at `offset` of the image, or `None` past its end or on any failure.
pub type ReadAt<'a> = dyn FnMut(u64, usize) -> Option<Vec<u8>> + 'a;

/// A [`ReadAt`] over a file, by positioned reads (the file's cursor does not move).
pub fn file_reader(file: &std::fs::File) -> impl FnMut(u64, usize) -> Option<Vec<u8>> + '_ {
    use std::os::unix::fs::FileExt;
    move |at, len| {
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, at).ok().map(|()| buf)
    }
}

/// The `VERSION_ID` of the UKI that `read_at` reads, if it is a PE image with an `.osrel`
/// section that names one.
pub fn version_id(read_at: &mut ReadAt<'_>) -> Option<String> {
    let text = section(read_at, ".osrel", MAX_OSREL)?;
    os_release_field(&text, "VERSION_ID")
}

/// The kernel command line in the `.cmdline` section of the UKI that `read_at` reads, without
/// its trailing NULs and whitespace, if it passes [`proto::check_cmdline`].
pub fn cmdline(read_at: &mut ReadAt<'_>) -> Option<String> {
    let raw = section(read_at, ".cmdline", MAX_CMDLINE_SECTION)?;
    let end = raw
        .iter()
        .rposition(|&b| b != 0 && !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    proto::cmdline_text(raw.get(..end)?).ok()
}

/// The `.cmdline` section of the UKI that `read_at` reads as text, however malformed (bytes
/// that are not UTF-8 replaced): what a check of the words on it must see, where
/// [`cmdline`] gives `None` for a command line that breaks [`proto::check_cmdline`].
pub fn cmdline_lossy(read_at: &mut ReadAt<'_>) -> Option<String> {
    let raw = section(read_at, ".cmdline", MAX_CMDLINE_SECTION)?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// The bytes of the PE image's section called `name` (at most 8 bytes, as in the section
/// table), if it has one of at most `max_len` bytes: its virtual size, or its raw size when
/// that is smaller (the rest is zero fill) or the virtual size is 0.
pub fn section(read_at: &mut ReadAt<'_>, name: &str, max_len: u32) -> Option<Vec<u8>> {
    let (offset, len) = find_section(read_at, name)?;
    if len > max_len {
        return None;
    }
    read_at(u64::from(offset), len as usize)
}

/// Whether the file that `read_at` reads is a PE image with a non-empty section called
/// `name`: a UKI has `.linux` (the kernel), where any other file an operator might pass by
/// mistake (a bare kernel, an initramfs, a loader) has none.
pub fn has_section(read_at: &mut ReadAt<'_>, name: &str) -> bool {
    find_section(read_at, name).is_some_and(|(_, len)| len > 0)
}

/// Where the section called `name` starts in the file, and its length.
fn find_section(read_at: &mut ReadAt<'_>, name: &str) -> Option<(u32, u32)> {
    let mut wanted = [0u8; SECTION_NAME_LEN];
    wanted
        .get_mut(..name.len())?
        .copy_from_slice(name.as_bytes());
    let dos = read_at(0, 64)?;
    if dos.get(..2)? != b"MZ" {
        return None;
    }
    let pe = u64::from(u32_at(&dos, 0x3C)?);
    let coff = read_at(pe, 24)?;
    if coff.get(..4)? != b"PE\0\0" {
        return None;
    }
    let sections = u16_at(&coff, 6)?;
    if sections > MAX_SECTIONS {
        return None;
    }
    let table_at = pe + 24 + u64::from(u16_at(&coff, 20)?);
    let table = read_at(table_at, usize::from(sections) * SECTION_LEN)?;
    let entry = table
        .chunks_exact(SECTION_LEN)
        .find(|s| s.get(..SECTION_NAME_LEN) == Some(&wanted[..]))?;
    let virtual_size = u32_at(entry, 8)?;
    let raw_size = u32_at(entry, 16)?;
    let len = match virtual_size {
        0 => raw_size,
        v => v.min(raw_size),
    };
    Some((u32_at(entry, 20)?, len))
}

/// The value of `key` in os-release text (`KEY=value`, optionally quoted).
fn os_release_field(text: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))?;
    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
    let clean =
        !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_graphic());
    clean.then(|| value.to_owned())
}

/// The little-endian `u16` at byte `at` of `b`, if `b` holds it.
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The little-endian `u32` at byte `at` of `b`, if `b` holds it.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE image with one section called `name` holding `content`.
    fn pe_with(name: &[u8; 8], content: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b[..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&64u32.to_le_bytes());
        b[64..68].copy_from_slice(b"PE\0\0");
        b[70..72].copy_from_slice(&1u16.to_le_bytes()); // one section, no optional header
        let s = 88;
        b[s..s + 8].copy_from_slice(name);
        let len = (content.len() as u32).to_le_bytes();
        b[s + 8..s + 12].copy_from_slice(&len);
        b[s + 16..s + 20].copy_from_slice(&len);
        b[s + 20..s + 24].copy_from_slice(&128u32.to_le_bytes());
        b.extend_from_slice(content);
        b.extend_from_slice(&[0; 512]);
        b
    }

    fn pe_with_osrel(osrel: &[u8]) -> Vec<u8> {
        pe_with(b".osrel\0\0", osrel)
    }

    fn pe_with_cmdline(cmdline: &[u8]) -> Vec<u8> {
        pe_with(b".cmdline", cmdline)
    }

    /// A bounded [`ReadAt`] over `image`.
    fn reader(image: &[u8]) -> impl FnMut(u64, usize) -> Option<Vec<u8>> + '_ {
        |at, len| {
            let at = usize::try_from(at).ok()?;
            image.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
        }
    }

    fn over<T>(image: &[u8], f: fn(&mut ReadAt<'_>) -> Option<T>) -> Option<T> {
        f(&mut reader(image))
    }

    fn read(image: &[u8]) -> Option<String> {
        over(image, version_id)
    }

    fn read_cmdline(image: &[u8]) -> Option<String> {
        over(image, cmdline)
    }

    #[test]
    fn a_uki_is_a_pe_image_with_a_kernel_section() {
        let has_linux = |image: &[u8]| has_section(&mut reader(image), ".linux");
        assert!(has_linux(&pe_with(b".linux\0\0", b"the kernel")));
        assert!(!has_linux(&pe_with(b".linux\0\0", b"")), "an empty .linux");
        assert!(
            !has_linux(&pe_with_cmdline(b"quiet")),
            "a PE image without .linux"
        );
        assert!(!has_linux(b"\x1f\x8b an initramfs, not a PE image"));
    }

    #[test]
    fn reads_version_id_from_osrel() {
        let uki = pe_with_osrel(b"NAME=\"Acme OS\"\nVERSION_ID=\"42.1\"\nID=acme\n");
        assert_eq!(read(&uki).as_deref(), Some("42.1"));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(read(&pe_with_osrel(b"NAME=x\n")), None);
        assert_eq!(read(b"not a PE file at all"), None);
        let mut uki = pe_with_osrel(b"VERSION_ID=1\n");
        uki[0x3C..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&uki), None);
        let mut uki = pe_with_osrel(b"VERSION_ID=1\n");
        uki[70..72].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(read(&uki), None);
        assert_eq!(read(&pe_with_osrel(b"VERSION_ID=\"a\x07b\"\n")), None);
        // A UKI without `.osrel` (only `.cmdline`) has no version.
        assert_eq!(read(&pe_with_cmdline(b"quiet")), None);
    }

    #[test]
    fn reads_the_cmdline_section_without_its_padding() {
        let text = "console=ttyS0 rd.marker=v2 quiet";
        assert_eq!(
            read_cmdline(&pe_with_cmdline(text.as_bytes())).as_deref(),
            Some(text)
        );
        // What ukify and objcopy leave after the text: a newline, NULs up to the alignment.
        let padded = pe_with_cmdline(format!("{text}\n\0\0\0").as_bytes());
        assert_eq!(read_cmdline(&padded).as_deref(), Some(text));
        // Virtual size 0: the raw size counts, zero fill included.
        let mut unsized_ = pe_with_cmdline(text.as_bytes());
        unsized_[96..100].copy_from_slice(&0u32.to_le_bytes());
        unsized_[104..108].copy_from_slice(&512u32.to_le_bytes());
        assert_eq!(read_cmdline(&unsized_).as_deref(), Some(text));
    }

    #[test]
    fn a_cmdline_section_the_rule_refuses_is_none() {
        let longest = "a".repeat(proto::MAX_CMDLINE);
        assert_eq!(
            read_cmdline(&pe_with_cmdline(longest.as_bytes())).as_deref(),
            Some(longest.as_str())
        );
        let too_long = "a".repeat(proto::MAX_CMDLINE + 1);
        let oversized = "a".repeat(2 * proto::MAX_CMDLINE + 1);
        for bad in [
            b"quiet\ninit=/bin/sh".as_slice(),
            b" quiet",
            b"\0\0\0",
            b"caf\xc3\xa9",
            b"\xff\xfe",
            too_long.as_bytes(),
            oversized.as_bytes(),
        ] {
            assert_eq!(read_cmdline(&pe_with_cmdline(bad)), None, "{bad:?}");
        }
        assert_eq!(read_cmdline(&pe_with_osrel(b"VERSION_ID=1\n")), None);
    }

    #[test]
    fn any_section_is_read_by_name_within_its_bound() {
        let uki = pe_with(b".linux\0\0", b"kernel bytes");
        let mut read_at = reader(&uki);
        assert_eq!(
            section(&mut read_at, ".linux", 64),
            Some(b"kernel bytes".to_vec())
        );
        assert_eq!(section(&mut read_at, ".linux", 11), None, "over its bound");
        assert_eq!(section(&mut read_at, ".initrd", 64), None, "absent");
        assert_eq!(
            section(&mut read_at, ".linux-longer", 64),
            None,
            "name over 8 bytes"
        );
    }
}
