//! The `VERSION_ID` of a Unified Kernel Image, read from its `.osrel` section (the os-release
//! text systemd-stub embeds). A bounded walk of the PE/COFF headers and nothing more: the DOS
//! header's `e_lfanew` (offset 0x3C), the `PE\0\0` signature and COFF header, the section
//! table, one section of at most [`MAX_OSREL`] bytes. Anything unexpected gives `None`.
//! Display only: nothing trusts what this returns.

/// Largest `.osrel` section read.
pub const MAX_OSREL: u32 = 64 << 10;
/// Most sections a PE image may have (PE/COFF specification).
const MAX_SECTIONS: u16 = 96;
const SECTION_LEN: usize = 40;

/// Reads `len` bytes at `offset` of the image, or `None` past its end or on any failure.
pub type ReadAt<'a> = dyn FnMut(u64, usize) -> Option<Vec<u8>> + 'a;

/// The `VERSION_ID` of the UKI that `read_at` reads, if it is a PE image with an `.osrel`
/// section that names one.
pub fn version_id(read_at: &mut ReadAt<'_>) -> Option<String> {
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
    let osrel = table
        .chunks_exact(SECTION_LEN)
        .find(|s| s.get(..8) == Some(b".osrel\0\0"))?;
    let virtual_size = u32_at(osrel, 8)?;
    let raw_size = u32_at(osrel, 16)?;
    let len = match virtual_size {
        0 => raw_size,
        v => v.min(raw_size),
    }
    .min(MAX_OSREL);
    let text = read_at(u64::from(u32_at(osrel, 20)?), len as usize)?;
    os_release_field(&text, "VERSION_ID")
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

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE image with one `.osrel` section holding `osrel`.
    fn pe_with_osrel(osrel: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b[..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&64u32.to_le_bytes());
        b[64..68].copy_from_slice(b"PE\0\0");
        b[70..72].copy_from_slice(&1u16.to_le_bytes()); // one section, no optional header
        let s = 88;
        b[s..s + 8].copy_from_slice(b".osrel\0\0");
        let len = (osrel.len() as u32).to_le_bytes();
        b[s + 8..s + 12].copy_from_slice(&len);
        b[s + 16..s + 20].copy_from_slice(&len);
        b[s + 20..s + 24].copy_from_slice(&128u32.to_le_bytes());
        b.extend_from_slice(osrel);
        b.extend_from_slice(&[0; 512]);
        b
    }

    fn read(image: &[u8]) -> Option<String> {
        version_id(&mut |at, len| {
            let at = usize::try_from(at).ok()?;
            image.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
        })
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
    }
}
