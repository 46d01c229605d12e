//! Columnar snapshot blobs (docs/FORMAT.md, 11): how a format-2 version's snapshot
//! travels. The blob holds the state's descriptive header and its canonical records
//! (FORMAT.md, 6) column by column ([`crate::columnar`]), in key order. The consumer
//! rebuilds the format-2 state file from it ([`crate::compact`]); slot keys and index
//! hashes are derived from the records here, never shipped, and the records' count and
//! digest are checked against the manifest.
//!
//! ```text
//! blob := "FEEDKITC"        magic
//!         u32 header_len    little-endian
//!         header            header_len bytes: the state's descriptive header, JSON
//!         body              a columnar body (columnar.rs), to the end of the blob
//! ```

use xxhash_rust::xxh3::xxh3_64;

use crate::columnar::{self, Decoded};
use crate::diff::record_digest;
use crate::error::{Error, Result};
use crate::msgpack::{write_array_header, Reader, Token};
use crate::records::Records;
use crate::verify::MAX_DEPTH;

pub const MAGIC: [u8; 8] = *b"FEEDKITC";
/// The longest header a blob may declare (a schema's JSON is far smaller).
pub const MAX_HEADER: usize = 16 << 20;
const HEAD: usize = MAGIC.len() + 4;

/// The kind of one key part (`KeySpec.parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Int,
    Str,
    Bytes,
}

impl Part {
    pub fn parse(name: &str) -> Result<Part> {
        match name {
            "int" => Ok(Part::Int),
            "str" => Ok(Part::Str),
            "bytes" => Ok(Part::Bytes),
            _ => Err(Error::invalid(format!("key part kind {name:?}"))),
        }
    }
}

/// A state's primary key: its record fields and their kinds (same lengths, at least one).
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub fields: &'a [usize],
    pub parts: &'a [Part],
}

impl Key<'_> {
    /// A single int column: the slot key is the int itself.
    pub fn int_slots(&self) -> bool {
        self.parts == [Part::Int]
    }
}

/// The record's first `fields.len()` field spans up to field `last`, into `out`.
fn spans<'r>(record: &'r [u8], width: usize, last: usize, out: &mut Vec<&'r [u8]>) -> Result<()> {
    out.clear();
    let mut r = Reader::new(record);
    match r.token()? {
        Token::Array(n) if n == width => {}
        _ => return Err(Error::damaged(format!("a record that is not an array of {width} fields"))),
    }
    for _ in 0..=last.min(width.saturating_sub(1)) {
        let at = r.pos();
        r.skip(MAX_DEPTH)?;
        out.push(r.since(at));
    }
    Ok(())
}

fn last_field(key: &Key<'_>, index: &[usize], width: usize) -> Result<usize> {
    let last = key.fields.iter().chain(index).copied().max().unwrap_or(0);
    if key.fields.is_empty() || key.fields.len() != key.parts.len() || last >= width {
        return Err(Error::invalid(format!("key fields {:?} or index fields {index:?} of {width} columns", key.fields)));
    }
    Ok(last)
}

/// The order [`encode`] writes records in: by int key for an int key, else by the
/// key fields' canonical bytes (which for non-negative ints is their numeric order).
pub fn key_order(records: &Records<'_>, width: usize, key: &Key<'_>) -> Result<Vec<u32>> {
    let n = records.len();
    let last = last_field(key, &[], width)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut fields = Vec::with_capacity(last + 1);
    if key.int_slots() {
        let mut ints = Vec::with_capacity(n);
        for i in 0..n {
            spans(records.get(i), width, last, &mut fields)?;
            ints.push(match Reader::new(fields[key.fields[0]]).token()? {
                Token::Int(v) => v,
                _ => i64::MAX, // not an int key: refused by the consumer's derive
            });
        }
        order.sort_unstable_by_key(|&i| ints[i as usize]);
    } else {
        let k = key.fields.len();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(n * k);
        for i in 0..n {
            spans(records.get(i), width, last, &mut fields)?;
            parts.extend(key.fields.iter().map(|&f| fields[f]));
        }
        order.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize * k, b as usize * k);
            parts[a..a + k].cmp(&parts[b..b + k])
        });
    }
    Ok(order)
}

/// A snapshot blob of `records` (canonical arrays of `width` fields, any order) with
/// the descriptive `header`; streams compressed at zstd `level`.
pub fn encode(records: &Records<'_>, width: usize, key: &Key<'_>, header: &[u8], level: i32) -> Result<Vec<u8>> {
    if header.len() > MAX_HEADER {
        return Err(Error::invalid(format!("a header of {} bytes", header.len())));
    }
    let order = key_order(records, width, key)?;
    let selection = records.select(&order);
    drop(order);
    let body = columnar::encode(&selection.records(), width, level)?;
    let mut blob = Vec::with_capacity(HEAD + header.len() + body.len());
    blob.extend_from_slice(&MAGIC);
    blob.extend_from_slice(&(header.len() as u32).to_le_bytes());
    blob.extend_from_slice(header);
    blob.extend_from_slice(&body);
    Ok(blob)
}

/// The blob's header bytes (untrusted: the caller parses and checks them).
pub fn header(blob: &[u8]) -> Result<&[u8]> {
    head_of(blob, &MAGIC, "a columnar snapshot blob")
}

fn head_of<'b>(blob: &'b [u8], magic: &[u8; 8], what: &str) -> Result<&'b [u8]> {
    if blob.get(..magic.len()) != Some(&magic[..]) {
        let name = String::from_utf8_lossy(magic);
        return Err(Error::damaged(format!("not {what} (no {name} magic)")));
    }
    let len = u32::from_le_bytes(blob[magic.len()..].get(..4).and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::damaged("the blob ends inside its head"))?) as usize;
    if len > MAX_HEADER {
        return Err(Error::damaged(format!("a header of {len} bytes")));
    }
    blob.get(HEAD..HEAD + len).ok_or_else(|| Error::damaged(format!("the blob ends inside its {len}-byte header")))
}

/// What the manifest says the blob must rebuild.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub width: usize,
    pub key: Key<'a>,
    /// The indexed fields, by record position.
    pub index: &'a [usize],
    /// Bytes of the canonical records (the manifest's `raw_size`).
    pub raw_size: u64,
    pub record_count: u64,
    pub state_digest: u64,
}

/// The records a blob holds, with what the state file needs beside them.
#[derive(Debug)]
pub struct Rebuilt {
    pub records: Decoded,
    pub derived: Derived,
}

/// Decodes `blob` and derives its slot keys and index hashes, refusing a blob whose
/// records are not what `expected` says (size, count, digest) or whose keys are not the
/// key's kinds.
pub fn decode(blob: &[u8], expected: &Expected<'_>) -> Result<Rebuilt> {
    let head = header(blob)?;
    let body = &blob[HEAD + head.len()..];
    let max = usize::try_from(expected.raw_size).map_err(|_| Error::damaged("a huge raw size"))?;
    let records = columnar::decode_tapped(body, expected.width, max)?;
    if records.heap.len() as u64 != expected.raw_size {
        return Err(Error::damaged(format!(
            "{} bytes of records, the manifest says {}", records.heap.len(), expected.raw_size)));
    }
    if records.starts.len() as u64 != expected.record_count {
        return Err(Error::damaged(format!(
            "{} records, the manifest says {}", records.starts.len(), expected.record_count)));
    }
    let derived = derive(&records.records()?, expected.width, &expected.key, expected.index)?;
    if derived.digest != expected.state_digest {
        return Err(Error::damaged(format!(
            "records of digest {:016x}, the manifest says {:016x}", derived.digest, expected.state_digest)));
    }
    Ok(Rebuilt { records, derived })
}

/// A state's slot keys and index hashes, derived from its records as the producer's
/// encoder derives them from Arrow (FORMAT.md, 4.7 and 5), and the records' digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub keys: Vec<u64>,
    pub index_hashes: Vec<Vec<u64>>,
    pub digest: u64,
}

/// Slot keys (the int itself, or xxh3-64 of a str's UTF-8, a bytes key's bytes, or a
/// composite key's msgpack array) and index hashes (xxh3-64 of the field's canonical
/// bytes) of `records`; a key field of another kind than its part (a null included) is
/// an error naming the record.
pub fn derive(records: &Records<'_>, width: usize, key: &Key<'_>, index: &[usize]) -> Result<Derived> {
    let last = last_field(key, index, width)?;
    let n = records.len();
    let mut keys = Vec::with_capacity(n);
    let mut index_hashes: Vec<Vec<u64>> = index.iter().map(|_| Vec::with_capacity(n)).collect();
    let mut fields = Vec::with_capacity(last + 1);
    let mut scratch = Vec::new();
    let single = key.fields.len() == 1;
    for i in 0..n {
        let record = records.get(i);
        spans(record, width, last, &mut fields).map_err(|e| at_record(i, e))?;
        if single {
            let value = fields[key.fields[0]];
            keys.push(match (key.parts[0], Reader::new(value).token()?) {
                (Part::Int, Token::Int(v)) => v as u64,
                (Part::Str, Token::Str(b)) | (Part::Bytes, Token::Bin(b)) => xxh3_64(b),
                (part, _) => return Err(bad_key(i, part)),
            });
        } else {
            scratch.clear();
            write_array_header(&mut scratch, key.fields.len());
            for (&f, &part) in key.fields.iter().zip(key.parts) {
                let value = fields[f];
                match (part, Reader::new(value).token()?) {
                    (Part::Int, Token::Int(_) | Token::UInt(_)) | (Part::Str, Token::Str(_)) | (Part::Bytes, Token::Bin(_)) => {}
                    (part, _) => return Err(bad_key(i, part)),
                }
                scratch.extend_from_slice(value);
            }
            keys.push(xxh3_64(&scratch));
        }
        for (hashes, &f) in index_hashes.iter_mut().zip(index) {
            hashes.push(xxh3_64(fields[f]));
        }
    }
    let digest = record_digest((0..n).map(|i| records.get(i)));
    Ok(Derived { keys, index_hashes, digest })
}

fn at_record(i: usize, e: Error) -> Error {
    Error::damaged(format!("record {i}: {}", e.message()))
}

fn bad_key(i: usize, part: Part) -> Error {
    Error::damaged(format!("record {i}: a key field that is not {}", match part {
        Part::Int => "an int",
        Part::Str => "a str",
        Part::Bytes => "bytes",
    }))
}

// -- delta blobs ------------------------------------------------------------------------

/// The magic of a columnar delta blob (FORMAT.md, 11.5).
pub const DELTA_MAGIC: [u8; 8] = *b"FEEDKITD";

/// A columnar delta blob: the overlay's descriptive `header`, the deleted slot keys
/// (`deleted`, any order; stored ascending, as u64, in one zstd frame) and the upserted
/// records (canonical arrays of `width` fields, any order; a columnar body in key order).
///
/// ```text
/// delta := "FEEDKITD" u32 header_len header
///          u64 deleted   u64 stored   stored bytes: zstd of the deleted keys, u64 LE
///          body          a columnar body of the upserts, to the end of the blob
/// ```
pub fn encode_delta(upserts: &Records<'_>, deleted: &[u64], width: usize, key: &Key<'_>, header: &[u8],
                    level: i32) -> Result<Vec<u8>> {
    if header.len() > MAX_HEADER {
        return Err(Error::invalid(format!("a header of {} bytes", header.len())));
    }
    let mut keys = deleted.to_vec();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid("a key deleted twice"));
    }
    let raw: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
    let frame = zstd::bulk::compress(&raw, level).map_err(|e| Error::invalid(format!("zstd: {e}")))?;
    let order = key_order(upserts, width, key)?;
    let body = columnar::encode(&upserts.select(&order).records(), width, level)?;
    let mut blob = Vec::with_capacity(HEAD + header.len() + 16 + frame.len() + body.len());
    blob.extend_from_slice(&DELTA_MAGIC);
    blob.extend_from_slice(&(header.len() as u32).to_le_bytes());
    blob.extend_from_slice(header);
    blob.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    blob.extend_from_slice(&(frame.len() as u64).to_le_bytes());
    blob.extend_from_slice(&frame);
    blob.extend_from_slice(&body);
    Ok(blob)
}

/// A delta blob's contents: the upserts with their derived keys and index hashes, and
/// the deleted slot keys, ascending.
#[derive(Debug)]
pub struct Delta {
    pub upserts: Decoded,
    pub derived: Derived,
    pub deleted: Vec<u64>,
}

/// The delta blob's header bytes (untrusted).
pub fn delta_header(blob: &[u8]) -> Result<&[u8]> {
    head_of(blob, &DELTA_MAGIC, "a columnar delta blob")
}

/// Decodes a delta blob. `raw_size`: the upserts' bytes (the manifest's); `max_deleted`:
/// the most keys it may delete (the parent state's record count). Refused: another
/// size, more deletions, a keys frame that does not hold exactly its keys, keys not
/// strictly ascending, and whatever [`derive`] and the body's decoder refuse.
pub fn decode_delta(blob: &[u8], width: usize, key: &Key<'_>, index: &[usize], raw_size: u64,
                    max_deleted: u64) -> Result<Delta> {
    let head = delta_header(blob)?;
    let mut at = HEAD + head.len();
    let word = |at: usize| -> Result<u64> {
        blob.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| Error::damaged("the blob ends inside its deleted keys"))
    };
    let (count, stored) = (word(at)?, word(at + 8)?);
    at += 16;
    if count > max_deleted {
        return Err(Error::damaged(format!("{count} deleted keys, the state holds {max_deleted} records")));
    }
    let frame = usize::try_from(stored).ok().and_then(|n| blob.get(at..at.checked_add(n)?))
        .ok_or_else(|| Error::damaged(format!("a deleted keys frame of {stored} bytes past the blob's end")))?;
    at += frame.len();
    let want = (count as usize).checked_mul(8).ok_or_else(|| Error::damaged("a huge key count"))?;
    // zstd expands a byte to at most 2^15 bytes: a frame too small for its keys is refused
    // before anything is allocated for them.
    if want > frame.len().saturating_mul(1 << 15) + 64 {
        return Err(Error::damaged(format!("{count} deleted keys cannot come from {stored} bytes")));
    }
    let raw = zstd::bulk::decompress(frame, want)
        .map_err(|e| Error::damaged(format!("the deleted keys' zstd frame: {e}")))?;
    if raw.len() != want {
        return Err(Error::damaged(format!("{} bytes of deleted keys, not {want}", raw.len())));
    }
    let deleted: Vec<u64> = raw.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    if deleted.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::damaged("deleted keys not in ascending order"));
    }
    let max = usize::try_from(raw_size).map_err(|_| Error::damaged("a huge raw size"))?;
    let upserts = columnar::decode(&blob[at..], width, max)?;
    if upserts.heap.len() as u64 != raw_size {
        return Err(Error::damaged(format!("{} bytes of records, the manifest says {raw_size}", upserts.heap.len())));
    }
    let derived = derive(&upserts.records()?, width, key, index)?;
    Ok(Delta { upserts, derived, deleted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyhash::{hash_composite, Part as KeyPart};
    use crate::msgpack::{write_bin, write_int, write_nil, write_str};

    fn heap(rows: &[Vec<u8>]) -> (Vec<u8>, Vec<i64>, Vec<i64>) {
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            starts.push(heap.len() as i64);
            lengths.push(r.len() as i64);
            heap.extend_from_slice(r);
        }
        (heap, starts, lengths)
    }

    fn row(id: i64, name: &str, tag: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_array_header(&mut out, 3);
        write_str(&mut out, name);
        write_int(&mut out, id);
        write_bin(&mut out, tag);
        out
    }

    const INT: Key<'static> = Key { fields: &[1], parts: &[Part::Int] };

    #[test]
    fn blobs_rebuild_their_records_in_key_order_with_derived_keys() {
        let rows: Vec<Vec<u8>> = (0..500).map(|i| row((i * 7919) % 1000 - 300, &format!("n{}", i % 13), b"t")).collect();
        let (h, s, l) = heap(&rows);
        let records = Records::new(vec![&h], None, &s, &l).unwrap();
        let blob = encode(&records, 3, &INT, b"{\"feed\":\"f\"}", 3).unwrap();
        assert_eq!(header(&blob).unwrap(), b"{\"feed\":\"f\"}");
        let digest = record_digest(rows.iter().map(Vec::as_slice));
        let expected = Expected { width: 3, key: INT, index: &[0], raw_size: h.len() as u64, record_count: 500, state_digest: digest };
        let rebuilt = decode(&blob, &expected).unwrap();
        let got = rebuilt.records.records().unwrap();
        let mut want = rows.clone();
        want.sort_by_key(|r| { let mut rd = Reader::new(r); rd.token().unwrap(); rd.skip(8).unwrap(); rd.canonical_int().unwrap().unwrap() });
        assert_eq!((0..500).map(|i| got.get(i).to_vec()).collect::<Vec<_>>(), want);
        for (i, r) in want.iter().enumerate() {
            let mut rd = Reader::new(r);
            rd.token().unwrap();
            let at = rd.pos();
            rd.skip(8).unwrap();
            let name = rd.since(at);
            let id = rd.canonical_int().unwrap().unwrap();
            assert_eq!(rebuilt.derived.keys[i], id as u64);
            assert_eq!(rebuilt.derived.index_hashes[0][i], xxh3_64(name));
        }
        // Another count, digest or size is refused.
        for wrong in [
            Expected { record_count: 499, ..expected },
            Expected { state_digest: digest ^ 1, ..expected },
            Expected { raw_size: expected.raw_size - 1, ..expected },
            Expected { width: 4, ..expected },
        ] {
            assert!(decode(&blob, &wrong).is_err());
        }
    }

    #[test]
    fn hashed_keys_are_the_encoders() {
        let rows = [row(1, "a", b"x"), row(2, "b", b"y")];
        let (h, s, l) = heap(&rows);
        let records = Records::new(vec![&h], None, &s, &l).unwrap();
        let str_key = Key { fields: &[0], parts: &[Part::Str] };
        assert_eq!(derive(&records, 3, &str_key, &[]).unwrap().keys, vec![xxh3_64(b"a"), xxh3_64(b"b")]);
        let bin_key = Key { fields: &[2], parts: &[Part::Bytes] };
        assert_eq!(derive(&records, 3, &bin_key, &[]).unwrap().keys[1], xxh3_64(b"y"));
        let both = Key { fields: &[1, 0], parts: &[Part::Int, Part::Str] };
        let mut buf = Vec::new();
        assert_eq!(derive(&records, 3, &both, &[]).unwrap().keys[0],
                   hash_composite(&[KeyPart::Int(1), KeyPart::Str("a")], &mut buf));
        // A key field of another kind, or null, is refused.
        assert!(derive(&records, 3, &Key { fields: &[0], parts: &[Part::Int] }, &[]).is_err());
        let mut null = Vec::new();
        write_array_header(&mut null, 3);
        write_str(&mut null, "c");
        write_nil(&mut null);
        write_bin(&mut null, b"");
        let (h, s, l) = heap(&[null]);
        let records = Records::new(vec![&h], None, &s, &l).unwrap();
        assert!(derive(&records, 3, &INT, &[]).is_err());
        assert!(derive(&records, 3, &Key { fields: &[3], parts: &[Part::Int] }, &[]).is_err());
    }

    #[test]
    fn damaged_heads_are_refused() {
        assert!(header(b"FEEDKITX\0\0\0\0").is_err());
        assert!(header(b"FEEDKITC\x05\0\0").is_err());
        assert!(header(b"FEEDKITC\x05\0\0\0abc").is_err());
        assert!(header(b"FEEDKITC\xff\xff\xff\xff").is_err());
        assert_eq!(header(b"FEEDKITC\x01\0\0\0{").unwrap(), b"{");
    }

    #[test]
    fn delta_blobs_hold_their_upserts_and_deleted_keys() {
        let rows: Vec<Vec<u8>> = (0..50).map(|i| row(i * 3, "w", b"x")).collect();
        let (h, s, l) = heap(&rows);
        let records = Records::new(vec![&h], None, &s, &l).unwrap();
        let deleted = [9u64, 2, 400, u64::MAX];
        let blob = encode_delta(&records, &deleted, 3, &INT, b"{}", 3).unwrap();
        assert_eq!(delta_header(&blob).unwrap(), b"{}");
        let d = decode_delta(&blob, 3, &INT, &[], h.len() as u64, 10).unwrap();
        assert_eq!(d.deleted, vec![2, 9, 400, u64::MAX]);
        assert_eq!(d.derived.keys, (0..50).map(|i| (i * 3) as u64).collect::<Vec<_>>());
        assert_eq!(d.upserts.heap, h);
        // more deletions than the state holds, another raw size, damaged keys
        assert!(decode_delta(&blob, 3, &INT, &[], h.len() as u64, 3).is_err());
        assert!(decode_delta(&blob, 3, &INT, &[], h.len() as u64 + 1, 10).is_err());
        let keys_at = HEAD + 2;
        let mut more = blob.clone();
        more[keys_at] = 5; // five keys claimed, four stored
        assert!(decode_delta(&more, 3, &INT, &[], h.len() as u64, 10).is_err());
        let mut huge = blob.clone();
        huge[keys_at + 7] = 0x10; // 2^60 keys
        assert!(decode_delta(&huge, 3, &INT, &[], h.len() as u64, u64::MAX).is_err());
        assert!(encode_delta(&records, &[1, 1], 3, &INT, b"{}", 3).is_err());
        assert!(delta_header(b"FEEDKITC\0\0\0\0").is_err());
        // every truncation is refused, never a panic
        for cut in 0..blob.len() {
            assert!(decode_delta(&blob[..cut], 3, &INT, &[], h.len() as u64, 10).is_err(), "cut at {cut}");
        }
    }
}
