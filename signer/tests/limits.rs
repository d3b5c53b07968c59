//! Bounded parsing: header lengths are checked against limits and the file size before any
//! allocation or read of the section.

use std::io::{self, Read, Seek, SeekFrom};

use signer::bundle::BundleHead;
use signer::{BundleHeader, Error, FormatError, Limits, Section};

/// A "file" that claims to be `len` bytes long, serves `prefix` then zeros, and counts the
/// bytes it handed out.
struct Claimed {
    prefix: Vec<u8>,
    len: u64,
    pos: u64,
    served: u64,
}

impl Read for Claimed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min((self.len - self.pos) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.prefix.get(self.pos as usize + i).copied().unwrap_or(0);
        }
        self.pos += n as u64;
        self.served += n as u64;
        Ok(n)
    }
}

impl Seek for Claimed {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => (self.len as i64 + d) as u64,
            SeekFrom::Current(d) => (self.pos as i64 + d) as u64,
        };
        Ok(self.pos)
    }
}

/// What a reader asks for first: the longest header (24 bytes, FORMAT §2), whatever the
/// version.
const HEADER_READ: u64 = BundleHeader::LEN_INDEX as u64;

fn file(header: BundleHeader, len: u64) -> Claimed {
    Claimed {
        prefix: header.encode().to_vec(),
        len,
        pos: 0,
        served: 0,
    }
}

#[test]
fn four_gib_manifest_header_is_refused_before_allocating() {
    // The file claims 8 GiB, so only the limit can stop a 4 GiB allocation.
    let mut f = file(
        BundleHeader {
            version: 1,
            manifest_len: u32::MAX,
            signature_block_len: 4096,
            dictionary_len: 0,
            index_len: 0,
        },
        8 << 30,
    );
    match BundleHead::read(&mut f, &Limits::default()) {
        Err(Error::Format(FormatError::TooLarge {
            section: Section::Manifest,
            len,
            max,
        })) => {
            assert_eq!((len, max), (u64::from(u32::MAX), 16 << 20));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(f.served, HEADER_READ, "only the header was read");
}

#[test]
fn oversized_signature_block_is_refused() {
    let mut f = file(
        BundleHeader {
            version: 1,
            manifest_len: 100,
            signature_block_len: 1 << 30,
            dictionary_len: 0,
            index_len: 0,
        },
        8 << 30,
    );
    assert!(matches!(
        BundleHead::read(&mut f, &Limits::default()),
        Err(Error::Format(FormatError::TooLarge {
            section: Section::SignatureBlock,
            ..
        }))
    ));
    assert_eq!(f.served, HEADER_READ);
}

#[test]
fn manifest_longer_than_the_file_is_refused_before_reading_it() {
    let mut f = file(
        BundleHeader {
            version: 1,
            manifest_len: 10 << 20,
            signature_block_len: 4096,
            dictionary_len: 0,
            index_len: 0,
        },
        1000,
    );
    match BundleHead::read(&mut f, &Limits::default()) {
        Err(Error::Format(FormatError::Truncated {
            expected,
            actual: 1000,
        })) => assert_eq!(expected, 16 + (10 << 20) + 4096),
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(f.served, HEADER_READ);
}

#[test]
fn oversized_index_and_dictionary_are_refused_before_reading_them() {
    let v3 = |dictionary_len, index_len| BundleHeader {
        version: 3,
        manifest_len: 100,
        signature_block_len: 4096,
        dictionary_len,
        index_len,
    };
    for (header, section) in [
        (v3(0, Limits::default().max_index_len + 1), Section::Index),
        (v3((1 << 20) + 1, 100), Section::Dictionary),
    ] {
        let mut f = file(header, 8 << 30);
        match BundleHead::read(&mut f, &Limits::default()) {
            Err(Error::Format(FormatError::TooLarge { section: s, .. })) => assert_eq!(s, section),
            other => panic!("expected TooLarge {section:?}, got {other:?}"),
        }
        assert_eq!(f.served, HEADER_READ);
    }
    // An index longer than what the file has after the signature block.
    let mut f = file(v3(0, 1 << 20), 24 + 100 + 4096 + 1000);
    assert!(matches!(
        BundleHead::read(&mut f, &Limits::default()),
        Err(Error::Format(FormatError::Truncated { .. }))
    ));
    assert_eq!(f.served, HEADER_READ);
    // Version 3 always carries an index.
    let e = BundleHeader::parse(&v3(0, 0).encode(), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("index length"), "{e}");
}

#[test]
fn lower_limits_apply() {
    let limits = Limits {
        max_manifest_len: 1000,
        ..Limits::default()
    };
    let h = BundleHeader {
        version: 1,
        manifest_len: 1001,
        signature_block_len: 4096,
        dictionary_len: 0,
        index_len: 0,
    }
    .encode();
    assert!(matches!(
        BundleHeader::parse(&h, &limits),
        Err(FormatError::TooLarge {
            section: Section::Manifest,
            ..
        })
    ));
}

#[test]
fn metadata_document_over_the_limit_is_refused() {
    let limits = Limits {
        max_metadata_len: 100,
        ..Limits::default()
    };
    let doc = vec![b' '; 101];
    let e = signer::verify::trust_root(&doc, crate::util::now(), &limits).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Format(FormatError::TooLarge {
                section: Section::Metadata,
                ..
            })
        ),
        "{e:?}"
    );
}
