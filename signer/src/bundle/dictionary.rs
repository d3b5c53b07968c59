//! The per-bundle zstd dictionary (FORMAT §3.2, docs/DESIGN.md §8): small chunks compress
//! poorly alone, so the signer trains a dictionary on samples of the image and compresses
//! every frame with it; frames stay independent of each other. The dictionary is stored after
//! the payload and its hash signed in the manifest.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::Error;

/// Target dictionary size: zstd's own default (110 KiB), rounded to 112 KiB.
pub const DICTIONARY_SIZE: usize = 112 << 10;
/// Bytes of samples read from the image: enough for a good dictionary, few enough that
/// training takes a fraction of the signing time.
const SAMPLE_BUDGET: u64 = 2 << 20;
const SAMPLE_LEN: usize = 4096;
/// Fewer non-zero samples than this make no useful dictionary (and zstd refuses to train).
const MIN_SAMPLES: usize = 64;

/// Blocks read at once while scanning for data.
const SCAN_BLOCKS: u64 = 256;

/// A dictionary trained on 4 KiB samples of the first `size` bytes of `image` (all-zero
/// blocks skipped), or `None` when the image has too little data to train on. The samples
/// are spread evenly over the image (about 2 MiB of reads); when fewer than [`MIN_SAMPLES`]
/// of those hold data (a filesystem image that is mostly free space: an ext4 image keeps its
/// data in a few block groups), they are the image's first blocks holding data instead,
/// found by reading the image through its zeros.
pub fn train_dictionary(image: &File, size: u64) -> Result<Option<Vec<u8>>, Error> {
    let blocks = size / SAMPLE_LEN as u64;
    let wanted = (SAMPLE_BUDGET / SAMPLE_LEN as u64).min(blocks);
    let mut samples = spread_samples(image, blocks, wanted)?;
    if samples.len() < MIN_SAMPLES * SAMPLE_LEN {
        samples = first_data_blocks(image, blocks, wanted)?;
    }
    let sizes = vec![SAMPLE_LEN; samples.len() / SAMPLE_LEN];
    if sizes.len() < MIN_SAMPLES {
        return Ok(None);
    }
    // zstd declines to train on data without enough structure (e.g. all random): then no
    // dictionary is the right answer, not an error.
    Ok(zstd::dict::from_continuous(&samples, &sizes, DICTIONARY_SIZE).ok())
}

/// Up to `wanted` blocks holding data, among `wanted` blocks spread evenly over `blocks`.
fn spread_samples(image: &File, blocks: u64, wanted: u64) -> Result<Vec<u8>, Error> {
    let mut samples = Vec::new();
    let mut block = vec![0u8; SAMPLE_LEN];
    for i in 0..wanted {
        read_blocks(image, i * blocks / wanted, &mut block)?;
        if block.iter().any(|&b| b != 0) {
            samples.extend_from_slice(&block);
        }
    }
    Ok(samples)
}

/// The first `wanted` blocks holding data, in image order.
fn first_data_blocks(image: &File, blocks: u64, wanted: u64) -> Result<Vec<u8>, Error> {
    let mut samples = Vec::new();
    let mut buf = Vec::new();
    let mut at = 0;
    while at < blocks && samples.len() < wanted as usize * SAMPLE_LEN {
        let n = SCAN_BLOCKS.min(blocks - at);
        buf.resize(n as usize * SAMPLE_LEN, 0);
        read_blocks(image, at, &mut buf)?;
        for block in buf
            .chunks_exact(SAMPLE_LEN)
            .filter(|b| b.iter().any(|&x| x != 0))
        {
            if samples.len() < wanted as usize * SAMPLE_LEN {
                samples.extend_from_slice(block);
            }
        }
        at += n;
    }
    Ok(samples)
}

/// Fills `buf` from block number `at` on.
fn read_blocks(image: &File, at: u64, buf: &mut [u8]) -> Result<(), Error> {
    image
        .read_exact_at(buf, at * SAMPLE_LEN as u64)
        .map_err(Error::io("reading the image for the dictionary"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn trains_on_text_and_declines_tiny_or_empty_images() {
        let mut f = tempfile::tempfile().unwrap();
        let words = [
            "kernel ", "module ", "systemd ", "tandem ", "slot ", "boot ",
        ];
        // Words in a pseudo-random order: a vocabulary to learn, not one repeating period
        // (which trains a dictionary of a few hundred bytes).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let text: String = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                words[(x % 6) as usize]
            })
            .collect();
        f.write_all(text.as_bytes()).unwrap();
        let size = text.len() as u64;
        let dict = train_dictionary(&f, size).unwrap().expect("a dictionary");
        assert!(!dict.is_empty() && dict.len() <= DICTIONARY_SIZE);
        // A small chunk compresses better with it than alone.
        let chunk = &text.as_bytes()[8192..12288];
        let alone = zstd::bulk::compress(chunk, 3).unwrap().len();
        let with = zstd::bulk::Compressor::with_dictionary(3, &dict)
            .unwrap()
            .compress(chunk)
            .unwrap()
            .len();
        assert!(
            with < alone,
            "{with} bytes with the dictionary, {alone} without"
        );
        assert!(train_dictionary(&f, 8192).unwrap().is_none());
        let zeros = tempfile::tempfile().unwrap();
        zeros.set_len(64 << 20).unwrap();
        assert!(train_dictionary(&zeros, 64 << 20).unwrap().is_none());
        // The same text at the start of a 64 MiB image of zeros (a filesystem image mostly
        // free): samples at fixed offsets would find 16 data blocks, too few to train on.
        let mut sparse = tempfile::tempfile().unwrap();
        sparse.write_all(text.as_bytes()).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let dict = train_dictionary(&sparse, 64 << 20).unwrap();
        assert!(dict.is_some_and(|d| !d.is_empty()));
    }
}
