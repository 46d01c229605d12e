//! Blobs (feedkit/blobs.py): a state file compressed with zstd, named by its manifest
//! with its size, the SHA-256 of its compressed bytes and its decompressed size.
//!
//! [`decompress`] is `blobs.decompress_file` in one pass over any reader: the size and
//! the SHA-256 are checked before anything decompressed is trusted, a frame that
//! declares another size than the manifest is refused from its header, the output stops
//! before it would pass the declared size, and the decoder's window is capped by what
//! the declared size can need. The messages are the Python path's, word for word.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::error::Error;

/// Decoding windows: libzstd's own default limit (2**27) at most.
const MAX_WINDOW: u64 = 1 << 27;
const MIN_WINDOW: u64 = 1 << 20;
/// Bytes of the longest zstd frame header.
const FRAME_HEADER_MAX: usize = 18;
/// Bytes read and written at a time.
const CHUNK: usize = 1 << 20;

/// What a manifest says about one blob.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub key: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub raw_size: u64,
}

impl BlobInfo {
    /// `sha256_hex`: 64 lower-case hex digits (the manifest's parser checked them).
    pub fn new(key: &str, size: u64, sha256_hex: &str, raw_size: u64) -> crate::Result<BlobInfo> {
        let bad = || Error::damaged(format!("blob {key}: sha256 {sha256_hex:?} is not 64 hex digits"));
        if sha256_hex.len() != 64 {
            return Err(bad());
        }
        let mut sha256 = [0u8; 32];
        for (i, out) in sha256.iter_mut().enumerate() {
            *out = u8::from_str_radix(sha256_hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(BlobInfo { key: key.to_string(), size, sha256, raw_size })
    }
}

/// The largest zstd window a blob of `raw_size` decompressed bytes may ask for
/// (`blobs.window_limit`): the output rounded up to a power of two, within
/// `[1 MiB, 128 MiB]`.
pub fn window_limit(raw_size: u64) -> u64 {
    raw_size.max(1).next_power_of_two().clamp(MIN_WINDOW, MAX_WINDOW)
}

/// Why a blob did not decompress: its bytes (`IntegrityError`), or reading the source
/// or writing the output (an `OSError` for the caller's file).
#[derive(Debug)]
pub enum Failure {
    Damaged(Error),
    Read(io::Error),
    Write(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Damaged(e)
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.sha.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                // Kept: the decoder reports it as corrupt data, which it is not.
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(copy)
            }
        }
    }
}

/// Decompresses the blob `src` of `size` bytes (checked against `info.size` first) into
/// `out`, and returns the xxh3-128 of the output past its first `hash_after` bytes (a
/// state file's body checksum, as its prefix stores it: big-endian).
///
/// Memory holds one chunk of input and output and a window of at most
/// [`window_limit`] bytes; `out` never receives more than `info.raw_size` bytes. On an
/// error `out` may hold part of the output: callers write to a temporary name.
pub fn decompress<R: Read, W: Write>(
    src: R,
    size: u64,
    info: &BlobInfo,
    out: &mut W,
    hash_after: usize,
) -> Result<[u8; 16], Failure> {
    let key = &info.key;
    if size != info.size {
        return Err(Error::damaged(format!("blob {key}: {size} bytes, the manifest says {}", info.size)).into());
    }
    let mut source = Hashing { inner: src, sha: Sha256::new(), failed: None };
    let mut head = Vec::with_capacity(FRAME_HEADER_MAX);
    (&mut source).take(FRAME_HEADER_MAX as u64).read_to_end(&mut head).map_err(Failure::Read)?;
    let mut failure: Option<Failure> = None;
    if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(&head) {
        if declared != info.raw_size {
            failure = Some(Failure::Damaged(Error::damaged(format!(
                "blob {key}: its zstd frame declares {declared} bytes, the manifest says {}",
                info.raw_size
            ))));
        }
    }
    let mut written = 0u64;
    let mut body = Xxh3::new();
    if failure.is_none() {
        failure = inflate(&head, &mut source, info, out, hash_after, &mut written, &mut body).err();
    }
    if let Some(e) = source.failed.take() {
        return Err(Failure::Read(e));
    }
    // Hash whatever the decoder did not read: the checksum covers the whole blob.
    let mut rest = vec![0u8; CHUNK];
    loop {
        match source.read(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Failure::Read(e)),
        }
    }
    if source.sha.finalize().as_slice() != info.sha256 {
        return Err(Error::damaged(format!("blob {key}: SHA-256 mismatch (corrupt or replaced blob)")).into());
    }
    if let Some(f) = failure {
        return Err(f);
    }
    if written != info.raw_size {
        return Err(Error::damaged(format!(
            "blob {key}: {written} bytes decompressed, the manifest says {}",
            info.raw_size
        ))
        .into());
    }
    Ok(body.digest128().to_be_bytes())
}

fn inflate<R: Read, W: Write>(
    head: &[u8],
    source: &mut Hashing<R>,
    info: &BlobInfo,
    out: &mut W,
    hash_after: usize,
    written: &mut u64,
    body: &mut Xxh3,
) -> Result<(), Failure> {
    let key = &info.key;
    let corrupt = |e: io::Error| Failure::Damaged(Error::damaged(format!("blob {key}: corrupt zstd data: {e}")));
    let window_log = window_limit(info.raw_size).trailing_zeros();
    let input = io::BufReader::with_capacity(CHUNK, head.chain(source));
    // Across frames, as python-zstandard's reader goes: bytes after the first frame are
    // decoded too (and a blob is one frame, so they are refused one way or another).
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
    decoder.window_log_max(window_log).map_err(corrupt)?;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        let before = *written;
        *written += n as u64;
        if *written > info.raw_size {
            return Err(Error::damaged(format!("blob {key}: expands past its declared {} bytes", info.raw_size)).into());
        }
        out.write_all(&chunk[..n]).map_err(Failure::Write)?;
        let skip = (hash_after as u64).saturating_sub(before).min(n as u64) as usize;
        body.update(&chunk[skip..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(blob: &[u8], raw: u64) -> BlobInfo {
        let sha: String = Sha256::digest(blob).iter().map(|b| format!("{b:02x}")).collect();
        BlobInfo::new("f/deltas/x.delta.zst", blob.len() as u64, &sha, raw).unwrap()
    }

    fn run(blob: &[u8], info: &BlobInfo) -> Result<(Vec<u8>, [u8; 16]), String> {
        let mut out = Vec::new();
        match decompress(blob, blob.len() as u64, info, &mut out, 48) {
            Ok(d) => Ok((out, d)),
            Err(Failure::Damaged(e)) => Err(e.message().to_string()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_good_blob_decompresses_with_its_body_digest() {
        let raw = data(3 << 20);
        let blob = zstd::bulk::compress(&raw, 3).unwrap();
        let (out, digest) = run(&blob, &info(&blob, raw.len() as u64)).unwrap();
        assert_eq!(out, raw);
        assert_eq!(digest, xxhash_rust::xxh3::xxh3_128(&raw[48..]).to_be_bytes());
        // shorter than the prefix: the digest of nothing
        let blob = zstd::bulk::compress(b"abc", 3).unwrap();
        assert_eq!(run(&blob, &info(&blob, 3)).unwrap().1, xxhash_rust::xxh3::xxh3_128(b"").to_be_bytes());
    }

    #[test]
    fn size_and_checksum_come_first() {
        let raw = data(10_000);
        let blob = zstd::bulk::compress(&raw, 3).unwrap();
        let good = info(&blob, raw.len() as u64);
        let mut out = Vec::new();
        let Err(Failure::Damaged(e)) = decompress(&blob[..], blob.len() as u64 - 1, &good, &mut out, 48) else {
            panic!("a short blob passed");
        };
        assert!(e.message().contains("bytes, the manifest says"), "{}", e.message());
        let mut flipped = blob.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(run(&flipped, &good).unwrap_err().contains("SHA-256 mismatch"));
        let wrong = BlobInfo { sha256: [0; 32], ..good.clone() };
        assert!(run(&blob, &wrong).unwrap_err().contains("SHA-256 mismatch"));
        assert!(BlobInfo::new("k", 1, "zz", 1).is_err());
    }

    #[test]
    fn declared_sizes_and_output_lengths_must_be_the_manifests() {
        let raw = data(10_000);
        let blob = zstd::bulk::compress(&raw, 3).unwrap();
        // the frame declares 10,000 bytes
        assert!(run(&blob, &info(&blob, 9_999)).unwrap_err().contains("its zstd frame declares 10000"));
        // no declared size (a streamed frame): the output itself is checked
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.window_log(20).unwrap();
        enc.write_all(&raw).unwrap();
        let streamed = enc.finish().unwrap();
        assert!(run(&streamed, &info(&streamed, 5_000)).unwrap_err().contains("expands past its declared 5000"));
        assert!(run(&streamed, &info(&streamed, 20_000)).unwrap_err().contains("10000 bytes decompressed"));
        assert_eq!(run(&streamed, &info(&streamed, 10_000)).unwrap().0, raw);
        // not zstd at all, and truncated frames
        let junk = b"definitely not a zstd frame".to_vec();
        assert!(run(&junk, &info(&junk, 10)).unwrap_err().contains("corrupt zstd data"));
        let cut = blob[..blob.len() / 2].to_vec();
        let msg = run(&cut, &info(&cut, 10_000)).unwrap_err();
        assert!(msg.contains("corrupt zstd data") || msg.contains("bytes decompressed"), "{msg}");
    }

    #[test]
    fn windows_are_capped_by_the_declared_size() {
        assert_eq!(window_limit(0), 1 << 20);
        assert_eq!(window_limit(3 << 20), 4 << 20);
        assert_eq!(window_limit(u64::MAX / 2), 1 << 27);
        // a frame made with a 8 MiB window for a blob said to be 1 MiB: refused
        let raw = data(8 << 20);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(23).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.write_all(&raw).unwrap();
        let blob = enc.finish().unwrap();
        let msg = run(&blob, &info(&blob, 1 << 20)).unwrap_err();
        assert!(msg.contains("corrupt zstd data") || msg.contains("expands past"), "{msg}");
    }
}
