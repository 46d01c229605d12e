//! `verify`: what a state file must pass before it gets a final name in a cache folder
//! (docs/FORMAT.md, 4.8). The body checksum finds damage; the structural checks refuse
//! a file whose checksum was computed over bad tables (a buggy or hostile writer), so
//! that no lookup, merge or iteration can fail on the tables of a verified file.
//!
//! One pass over the slot table checks the offsets and reads every record's first
//! bytes; faults other than bad offsets are noted and reported after the pass, in the
//! order `StateFile._verify_py` (the Python oracle) reports them, so both refuse a file
//! with the same message.

use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Error, Result};
use crate::codings::{read_elements, unpack, Codings, Dictionary, Kind};
use crate::layout::{bucket_of, mix, record_header, u32_at, IndexTable, Prefix, Table, PREFIX_SIZE, TOMBSTONE};

/// How deep a record's values may nest: the decoder's limit (`native/src/decode.rs`),
/// counted the same way (a record's fields are at depth 0).
pub const MAX_DEPTH: usize = 256;

/// What the header says the body holds.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Entries: records plus tombstones.
    pub count: usize,
    pub tombstones: usize,
    /// Columns of the schema: every record is an array of this many values.
    pub width: usize,
    /// The secondary indexes, by field name, in the header's order.
    pub indexes: Vec<(String, IndexTable)>,
    /// Also check that every record decodes: exactly one msgpack array of `width` values,
    /// strings in UTF-8, nothing nested deeper than [`MAX_DEPTH`], no byte after it.
    pub records: bool,
    /// Format 2: the columns' codings (None: format 1).
    pub codings: Option<Codings>,
}

/// The xxh3-128 of the bytes past the prefix, as the prefix stores it (big-endian).
pub fn body_digest(bytes: &[u8]) -> [u8; 16] {
    xxh3_128(bytes.get(PREFIX_SIZE..).unwrap_or_default()).to_be_bytes()
}

/// Checks the file `bytes` (whose slot table and heap `table` describes) against its
/// checksum and `expected`.
///
/// `body`: the body digest already computed while the file was written (the consumer's
/// decompression computes it), or `None` to hash the file here.
pub fn verify(bytes: &[u8], table: &Table, expected: &Expected, body: Option<&[u8]>) -> Result<()> {
    let prefix = Prefix::parse(bytes)?;
    let matches = match body {
        Some(digest) => digest == prefix.digest,
        None => body_digest(bytes) == prefix.digest,
    };
    if !matches {
        return Err(Error::damaged("state file checksum mismatch"));
    }
    let live = match (&table.buckets, &expected.codings) {
        (None, None) => check_slots(bytes, table, expected)?,
        (Some(_), Some(codings)) => check_entries(bytes, table, codings, expected)?,
        _ => return Err(Error::damaged("a table and codings of different formats")),
    };
    for (name, index) in &expected.indexes {
        check_index(bytes, index, &live).map_err(|_| {
            Error::damaged(format!("the index on '{name}' does not match the slot table"))
        })?;
    }
    Ok(())
}

/// Which slots hold a live record (not a tombstone), one bit per slot below the terminal.
pub struct Live {
    bits: Vec<u64>,
    len: usize,
}

impl Live {
    fn new(len: usize) -> Live {
        Live { bits: vec![0; len.div_ceil(64)], len }
    }

    fn set(&mut self, j: usize) {
        self.bits[j / 64] |= 1 << (j % 64);
    }

    /// Whether slot `j` holds a live record (false for any `j` outside the table).
    pub fn get(&self, j: usize) -> bool {
        j < self.len && self.bits[j / 64] & (1 << (j % 64)) != 0
    }
}

fn offsets_fault() -> Error {
    Error::damaged("record offsets do not match the slot table")
}

/// The slot table and the records: offsets ascend from the heap start to the heap end,
/// a record for every occupied slot and none for an empty one, an empty terminal slot,
/// the header's counts, one-byte tombstones (overlays only), records opening an array
/// of the schema's width (and, with `expected.records`, decoding).
fn check_slots(bytes: &[u8], table: &Table, expected: &Expected) -> Result<Live> {
    let mut slots = table.slots(bytes)?;
    let (mut key, mut start) = slots.next().ok_or_else(offsets_fault)?;
    if start != table.heap_start as u64 {
        return Err(offsets_fault());
    }
    let heap_end = table.heap_end as u64;
    let header = record_header(expected.width);
    let mut live = Live::new(table.slot_count - 1);
    let (mut entries, mut tombstones) = (0usize, 0usize);
    let (mut long_tombstone, mut bad_width) = (false, false);
    let mut undecodable: Option<(usize, Error)> = None;
    let mut stack = Vec::new();
    for (j, (next_key, end)) in slots.enumerate() {
        // Slot j holds `key`; its record is [start, end), where slot j + 1's begins.
        let occupied = key != table.empty;
        if end < start || end > heap_end || (end != start) != occupied {
            return Err(offsets_fault());
        }
        if occupied {
            // start < end <= heap_end <= the file's size (Table::new): inside `bytes`.
            let record = bytes.get(start as usize..end as usize).ok_or_else(offsets_fault)?;
            entries += 1;
            if record[0] == TOMBSTONE {
                tombstones += 1;
                long_tombstone |= record.len() != 1;
            } else {
                live.set(j);
                bad_width |= !opens(record, header);
                if expected.records && undecodable.is_none() {
                    if let Err(e) = decodes(record, expected.width, &mut stack) {
                        undecodable = Some((j, e));
                    }
                }
            }
        }
        (key, start) = (next_key, end);
    }
    if key != table.empty || start != heap_end {
        return Err(offsets_fault()); // the terminal slot: empty, at the heap end
    }
    if entries != expected.count || tombstones != expected.tombstones {
        return Err(Error::damaged(format!(
            "{entries} entries and {tombstones} tombstones, the header says {} and {}",
            expected.count, expected.tombstones
        )));
    }
    if tombstones > 0 && !table.overlay {
        return Err(Error::damaged("a tombstone in a base file"));
    }
    if long_tombstone {
        return Err(Error::damaged("a tombstone longer than one byte"));
    }
    if bad_width {
        return Err(Error::damaged(format!(
            "records that are not {}-column arrays",
            expected.width
        )));
    }
    if let Some((j, e)) = undecodable {
        return Err(Error::damaged(format!("the record of slot {j} does not decode: {e}")));
    }
    Ok(live)
}

/// Format 2's entries, directory, dictionaries and records (FORMAT.md, 10.6): record
/// offsets from the heap start to the heap end, never decreasing; entries in ascending
/// mixed-key order, none holding the empty sentinel, each in the bucket the directory
/// puts it in; a directory from 0 to the entry count, no bucket over its `max`; the
/// terminal entry empty at the heap end; each dictionary's offsets from 0 to its length;
/// with `expected.records`, every dictionary value one msgpack value and every record
/// its columns' codings exactly (ids inside their dictionaries).
fn check_entries(bytes: &[u8], table: &Table, codings: &Codings, expected: &Expected) -> Result<Live> {
    let b = table.buckets.as_ref().ok_or_else(offsets_fault)?;
    let n = table.slot_count - 1;
    if n != expected.count || expected.tombstones != 0 {
        return Err(Error::damaged(format!("{n} entries, the header says {}", expected.count)));
    }
    let dir_fault = |why: String| Error::damaged(format!("the bucket directory does not match the entries: {why}"));
    let dir = |i: usize| {
        u32_at(bytes, b.at + 4 * i).map(|v| v as usize).ok_or_else(|| dir_fault("outside the file".into()))
    };
    let (first, last) = (dir(0)?, dir(b.count)?);
    if first != 0 || last != n {
        return Err(dir_fault(format!("it runs from {first} to {last}, not from 0 to the {n} entries")));
    }
    let mut stack = Vec::new();
    for (c, col) in codings.columns.iter().enumerate() {
        if let Some(d) = &col.dict {
            check_dictionary(bytes, d, expected.records, &mut stack)
                .map_err(|e| Error::damaged(format!("the dictionary of column {c}: {e}")))?;
        }
    }
    let mut slots = table.slots(bytes)?;
    let (mut key, mut start) = slots.next().ok_or_else(offsets_fault)?;
    if start != table.heap_start as u64 {
        return Err(offsets_fault());
    }
    let heap_end = table.heap_end as u64;
    let (mut bucket, mut bucket_end) = (0usize, dir(1)?);
    let mut last_mixed: Option<u64> = None;
    let mut undecodable: Option<(usize, Error)> = None;
    for (j, (next_key, end)) in slots.enumerate() {
        if j == n {
            break;
        }
        if end < start || end > heap_end {
            return Err(offsets_fault());
        }
        if key == table.empty {
            return Err(Error::damaged(format!("entry {j} holds the empty key")));
        }
        let mixed = mix(table.home, key);
        if last_mixed.is_some_and(|m| m >= mixed) {
            return Err(Error::damaged("entries out of key order"));
        }
        last_mixed = Some(mixed);
        while j >= bucket_end {
            bucket += 1;
            if bucket >= b.count {
                return Err(dir_fault(format!("it ends before entry {j}")));
            }
            let next = dir(bucket + 1)?;
            if next < bucket_end {
                return Err(dir_fault(format!("it decreases after bucket {bucket}")));
            }
            bucket_end = next;
        }
        let home = bucket_of(mixed, b.count);
        if home != bucket {
            return Err(dir_fault(format!("entry {j} lies in bucket {bucket}, its key's is {home}")));
        }
        if expected.records && undecodable.is_none() {
            let record = &bytes[start as usize..end as usize]; // inside the heap, so the file
            if let Err(e) = coded(record, codings, &mut stack) {
                undecodable = Some((j, e));
            }
        }
        (key, start) = (next_key, end);
    }
    if start != heap_end {
        return Err(offsets_fault());
    }
    if key != table.empty {
        return Err(Error::damaged("the terminal entry is not empty"));
    }
    // every bucket within its max (the walk above saw only the buckets holding entries)
    let mut prev = 0usize;
    for i in 1..=b.count {
        let d = dir(i)?;
        if d < prev {
            return Err(dir_fault(format!("it decreases after bucket {}", i - 1)));
        }
        if d - prev > b.max {
            return Err(dir_fault(format!("bucket {} holds {} entries, over the header's max {}", i - 1, d - prev, b.max)));
        }
        prev = d;
    }
    if let Some((j, e)) = undecodable {
        return Err(Error::damaged(format!("the record of entry {j} does not decode: {e}")));
    }
    let mut live = Live::new(n);
    for j in 0..n {
        live.set(j);
    }
    Ok(live)
}

/// A dictionary's offsets ascend from 0 to its length; with `values`, each value is
/// exactly one msgpack value.
fn check_dictionary(bytes: &[u8], d: &Dictionary, values: bool, stack: &mut Vec<usize>) -> Result<()> {
    let bound = |i: usize| u32_at(bytes, d.at + 4 * i).map(|v| v as usize).ok_or_else(|| Error::damaged("outside the file"));
    if bound(0)? != 0 || bound(d.values)? != d.length {
        return Err(Error::damaged("offsets do not span its values"));
    }
    let all = &bytes[d.bytes_at()..d.bytes_at() + d.length]; // inside the file (Dictionary::new)
    let mut prev = 0usize;
    for i in 1..=d.values {
        let next = bound(i)?;
        if next < prev {
            return Err(Error::damaged("offsets decrease"));
        }
        if next > d.length {
            // ascending to the last, which is the length: an offset past it decreases later,
            // but the values before are read now
            return Err(Error::damaged(format!("offset {i} is past its {} bytes of values", d.length)));
        }
        if values {
            let one = |what: &str| Error::damaged(format!("value {} is not one msgpack value: {what}", i - 1));
            if next == prev {
                return Err(one("no bytes"));
            }
            match value_end(&all[..next], prev, stack) {
                Ok(end) if end != next => return Err(one("bytes after it")),
                Err(e) => return Err(one(e.message())),
                Ok(_) => {}
            }
        }
        prev = next;
    }
    Ok(())
}

/// One format-2 record holds exactly its columns' codings.
fn coded(record: &[u8], codings: &Codings, stack: &mut Vec<usize>) -> Result<()> {
    let mut r = crate::msgpack::Reader::new(record);
    for col in &codings.columns {
        match (col.kind, &col.dict) {
            (Kind::Key, _) => {}
            (Kind::Plain, _) => {
                let end = value_end(record, r.pos(), stack)?;
                r.raw(end - r.pos())?;
            }
            (Kind::Dict, Some(d)) => {
                if r.uint()? >= d.values as u64 {
                    return Err(Error::damaged("a dictionary id past its dictionary"));
                }
            }
            (Kind::Elements, Some(d)) => {
                if let Some((count, ids)) = read_elements(&mut r, d.bits)? {
                    if (0..count).any(|k| unpack(ids, k, d.bits) >= d.values as u64) {
                        return Err(Error::damaged("an element id past its dictionary"));
                    }
                }
            }
            (Kind::Fields, Some(d)) => {
                if r.peek() == Some(crate::codings::NO_STRUCT) {
                    r.raw(1)?;
                    continue;
                }
                for _ in 0..d.values {
                    let end = value_end(record, r.pos(), stack)?;
                    r.raw(end - r.pos())?;
                }
            }
            _ => return Err(Error::damaged("a coded column has no dictionary")),
        }
    }
    if r.remaining() != 0 {
        return Err(Error::damaged("bytes after the end of the record"));
    }
    Ok(())
}

/// Whether `record` starts with `header` (byte by byte: a slice comparison would call
/// memcmp for every record).
#[inline(always)]
fn opens(record: &[u8], header: Option<([u8; 3], usize)>) -> bool {
    match (header, record) {
        (Some((head, 1)), [first, ..]) => *first == head[0],
        (Some((head, _)), [a, b, c, ..]) => [*a, *b, *c] == head,
        _ => false,
    }
}

/// One record: a single msgpack array of `width` values, strings in UTF-8, nested at
/// most [`MAX_DEPTH`] deep (counted as the decoder counts), and nothing after it.
/// `stack` is scratch space, reused between records.
///
/// This walks the bytes itself rather than through [`crate::msgpack::Reader`]: building
/// a token per value made the check cost several times the rest of `verify`. It
/// accepts exactly what the Reader's tokens would (the cargo tests compare the two).
pub fn decodes(record: &[u8], width: usize, stack: &mut Vec<usize>) -> Result<()> {
    let (pos, pending) = match *record {
        [b @ 0x90..=0x9f, ..] => (1, (b & 0x0f) as usize),
        [0xdc, hi, lo, ..] => (3, u16::from_be_bytes([hi, lo]) as usize),
        [0xdd, a, b, c, d, ..] => (5, u32::from_be_bytes([a, b, c, d]) as usize),
        _ => (0, usize::MAX),
    };
    if pending != width {
        return Err(Error::damaged(format!("not an array of {width} values")));
    }
    if walk(record, pos, pending, stack)? != record.len() {
        return Err(Error::damaged("bytes after the end of the record"));
    }
    Ok(())
}

/// Where the one value at `at` of `bytes` ends, checked as [`decodes`] checks a record's
/// values (format 2's plain fields and dictionary values).
pub fn value_end(bytes: &[u8], at: usize, stack: &mut Vec<usize>) -> Result<usize> {
    walk(bytes, at, 1, stack)
}

/// Walks `pending` values from `pos`; returns where they end (inside `record`).
fn walk(record: &[u8], mut pos: usize, mut pending: usize, stack: &mut Vec<usize>) -> Result<usize> {
    let fail = |why: &str| Err(Error::damaged(why.to_string()));
    // A big-endian length of `w` bytes at `at`.
    let length = |at: usize, w: usize| -> Option<usize> {
        let bytes = record.get(at..at.checked_add(w)?)?;
        Some(bytes.iter().fold(0usize, |n, &b| n << 8 | b as usize))
    };
    let short = || Error::damaged("msgpack data ends early");
    stack.clear();
    loop {
        while pending == 0 {
            match stack.pop() {
                Some(p) => pending = p,
                None if pos > record.len() => return Err(short()),
                None => return Ok(pos),
            }
        }
        pending -= 1;
        let b = *record.get(pos).ok_or_else(short)?;
        pos += 1;
        let items = match b {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => continue,
            0xcc | 0xd0 => {
                pos += 1;
                continue;
            }
            0xcd | 0xd1 => {
                pos += 2;
                continue;
            }
            0xca | 0xce | 0xd2 => {
                pos += 4;
                continue;
            }
            0xcb | 0xcf | 0xd3 => {
                pos += 8;
                continue;
            }
            0xd4..=0xd8 => {
                pos += 1 + (1 << (b - 0xd4)); // the type code, then 1 to 16 bytes
                continue;
            }
            0xa0..=0xbf | 0xd9..=0xdb => {
                let (w, n) = match b {
                    0xa0..=0xbf => (0, (b & 0x1f) as usize),
                    _ => (1 << (b - 0xd9), length(pos, 1 << (b - 0xd9)).ok_or_else(short)?),
                };
                let text = record.get(pos + w..pos + w + n).ok_or_else(short)?;
                if !text.is_ascii() && std::str::from_utf8(text).is_err() {
                    return fail("a string that is not UTF-8");
                }
                pos += w + n;
                continue;
            }
            0xc4..=0xc6 => {
                let w = 1 << (b - 0xc4);
                pos += w + length(pos, w).ok_or_else(short)?;
                continue;
            }
            0xc7..=0xc9 => {
                let w = 1 << (b - 0xc7);
                pos += w + 1 + length(pos, w).ok_or_else(short)?; // length, type code, data
                continue;
            }
            0x80..=0x8f => 2 * (b & 0x0f) as usize,
            0x90..=0x9f => (b & 0x0f) as usize,
            0xdc..=0xdf => {
                let w = if b & 1 == 0 { 2 } else { 4 };
                let n = length(pos, w).ok_or_else(short)?;
                pos += w;
                if b >= 0xde { 2 * n } else { n }
            }
            0xc1 => return fail("msgpack byte 0xc1 is never used"),
        };
        // Every item takes a byte at least: a longer container cannot be in the record.
        if items > record.len() - pos {
            return Err(short());
        }
        // This container sits at depth stack.len(): the decoder refuses it at MAX_DEPTH.
        if stack.len() >= MAX_DEPTH {
            return fail("msgpack value nested too deep");
        }
        stack.push(pending);
        pending = items;
    }
}

/// One secondary index: first postings that start at 0, never decrease and end at the
/// postings' count, empty entries owning no postings, as many filled entries as the
/// header's `values`, an empty terminal entry, and postings naming live records.
fn check_index(bytes: &[u8], index: &IndexTable, live: &Live) -> Result<()> {
    let fault = || Error::damaged("index");
    let mut entries = index.entries(bytes)?;
    let (mut hash, mut first) = entries.next().ok_or_else(fault)?;
    if first != 0 {
        return Err(fault());
    }
    let mut filled = 0usize;
    for (next_hash, next_first) in entries {
        if next_first < first || (hash == index.empty && next_first != first) {
            return Err(fault());
        }
        filled += (hash != index.empty) as usize;
        (hash, first) = (next_hash, next_first);
    }
    if hash != index.empty || first != index.count as u64 || filled != index.values {
        return Err(fault());
    }
    if !index.postings(bytes)?.all(|slot| live.get(slot as usize)) {
        return Err(fault());
    }
    Ok(())
}

/// What [`decodes`] must accept, walked through the msgpack Reader's tokens: the slow
/// reference the cargo tests and the fuzz target compare `decodes` with.
pub fn decodes_by_tokens(record: &[u8], width: usize) -> bool {
    use crate::msgpack::{Reader, Token};
    let mut r = Reader::new(record);
    if !matches!(r.token(), Ok(Token::Array(n)) if n == width) {
        return false;
    }
    let (mut stack, mut pending) = (Vec::new(), width);
    loop {
        while pending == 0 {
            match stack.pop() {
                Some(p) => pending = p,
                None => return r.remaining() == 0,
            }
        }
        pending -= 1;
        let items = match r.token() {
            Err(_) => return false,
            Ok(Token::Array(n)) => n,
            Ok(Token::Map(n)) => 2 * n,
            Ok(Token::Str(s)) if std::str::from_utf8(s).is_err() => return false,
            Ok(_) => continue,
        };
        if stack.len() >= MAX_DEPTH {
            return false;
        }
        stack.push(pending);
        pending = items;
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::layout::{align, Home, BODY_ALIGN, INDEX_ENTRY_SIZE, SLOT_SIZE};
    use crate::msgpack::{write_array_header, write_int, write_str};

    /// A state file built the way `write_state` builds one (int keys, `low` homes, no
    /// JSON header: verify reads none), for the checks below to damage.
    pub struct Built {
        pub bytes: Vec<u8>,
        pub table: Table,
        pub expected: Expected,
    }

    impl Built {
        pub fn verify(&self) -> Result<()> {
            verify(&self.bytes, &self.table, &self.expected, None)
        }

        /// Recomputes the checksum (damage behind a valid checksum: only structure shows it).
        pub fn reseal(&mut self) {
            let digest = body_digest(&self.bytes);
            self.bytes[32..48].copy_from_slice(&digest);
        }

        pub fn word(&mut self, at: usize, value: u64) {
            self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            self.reseal();
        }

        pub fn slot_at(&self, j: usize) -> usize {
            self.table.slots_at + j * SLOT_SIZE
        }
    }

    /// `rows` as (key, name, tombstone); with `index`, one secondary index on the
    /// record's name length (value hash = length).
    pub fn build(rows: &[(i64, &str, bool)], width: usize, overlay: bool, index: bool) -> Built {
        let empty = i64::MIN as u64;
        let bits = 3.max((2 * rows.len()).next_power_of_two().trailing_zeros());
        let cap = 1usize << bits;
        let mut slots: Vec<Option<(i64, Vec<u8>, bool)>> = vec![None; cap + rows.len() + 1];
        for (k, name, tomb) in rows {
            let mut rec = Vec::new();
            if *tomb {
                rec.push(TOMBSTONE);
            } else {
                write_array_header(&mut rec, width);
                write_int(&mut rec, *k);
                for _ in 1..width {
                    write_str(&mut rec, name);
                }
            }
            let mut j = (*k as u64 & (cap as u64 - 1)) as usize;
            while slots[j].is_some() {
                j += 1;
            }
            slots[j] = Some((*k, rec, *tomb));
        }
        let last = slots.iter().rposition(|s| s.is_some()).map_or(0, |j| j + 1);
        slots.truncate(last.max(cap) + 1);
        let slot_count = slots.len();
        let body = align(PREFIX_SIZE, BODY_ALIGN);
        let heap_start = body + slot_count * SLOT_SIZE;
        let mut bytes = vec![0u8; heap_start];
        bytes[..8].copy_from_slice(crate::layout::MAGIC);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[16..24].copy_from_slice(&(body as u64).to_le_bytes());
        let mut at = heap_start as u64;
        for (j, slot) in slots.iter().enumerate() {
            let s = body + j * SLOT_SIZE;
            let key = slot.as_ref().map_or(empty, |(k, _, _)| *k as u64);
            bytes[s..s + 8].copy_from_slice(&key.to_le_bytes());
            bytes[s + 8..s + 16].copy_from_slice(&at.to_le_bytes());
            at += slot.as_ref().map_or(0, |(_, r, _)| r.len() as u64);
        }
        for (_, rec, _) in slots.iter().flatten() {
            bytes.extend_from_slice(rec);
        }
        let heap_end = bytes.len();
        bytes.resize(align(heap_end, 8), 0);
        let mut indexes = Vec::new();
        if index {
            // value hash = name length + 1 (never 0, the empty sentinel), one entry per
            // distinct length in ascending slots of a 2**3 table without collisions
            let mut by_value: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
            for (j, slot) in slots.iter().enumerate() {
                if let Some((_, rec, false)) = slot {
                    by_value.entry(rec.len() as u64 % 7 + 1).or_default().push(j as u32);
                }
            }
            let table_at = bytes.len();
            let entries = 9usize;
            let mut first = 0u64;
            let mut postings = Vec::new();
            for e in 0..entries {
                let (hash, posted) = match by_value.get(&(e as u64)) {
                    Some(p) if e < 8 => (e as u64, p.clone()),
                    _ => (0, Vec::new()),
                };
                bytes.extend_from_slice(&hash.to_le_bytes());
                bytes.extend_from_slice(&first.to_le_bytes());
                first += posted.len() as u64;
                postings.extend(posted);
            }
            let postings_at = bytes.len();
            for p in &postings {
                bytes.extend_from_slice(&p.to_le_bytes());
            }
            bytes.resize(align(bytes.len(), 8), 0);
            let index = IndexTable::new(
                bytes.len(), table_at, entries, 0, by_value.len(), postings_at, postings.len(),
            )
            .unwrap();
            assert_eq!(index.entries(&bytes).unwrap().len() * INDEX_ENTRY_SIZE, 16 * entries);
            indexes.push(("size".to_string(), index));
        }
        let size = bytes.len() as u64;
        bytes[24..32].copy_from_slice(&size.to_le_bytes());
        let table = Table::new(
            bytes.len(), body, slot_count, bits, Home::Low, empty, heap_start, heap_end, overlay,
        )
        .unwrap();
        let tombstones = rows.iter().filter(|r| r.2).count();
        let expected = Expected { count: rows.len(), tombstones, width, indexes, records: true, codings: None };
        let mut built = Built { bytes, table, expected };
        built.reseal();
        built
    }

    fn rows() -> Vec<(i64, &'static str, bool)> {
        vec![(3, "a", false), (11, "bb", false), (42, "dddd", false), (50, "e", false), (19, "", false)]
    }

    fn refused(b: &Built, says: &str) {
        let err = b.verify().expect_err(says);
        assert!(err.message().contains(says), "{:?} does not say {says:?}", err.message());
    }

    #[test]
    fn valid_files_pass() {
        build(&rows(), 3, false, false).verify().unwrap();
        build(&rows(), 3, false, true).verify().unwrap();
        build(&rows(), 20, false, true).verify().unwrap(); // array16 headers
        build(&[], 1, false, false).verify().unwrap();
        let mut over = rows();
        over.push((7, "", true));
        build(&over, 2, true, true).verify().unwrap();
    }

    #[test]
    fn the_checksum_covers_everything_past_the_prefix() {
        let mut b = build(&rows(), 3, false, true);
        let last = b.bytes.len() - 1;
        b.bytes[last] ^= 1;
        refused(&b, "checksum");
        // a digest handed over instead of hashing: the file's own digest passes
        let mut b = build(&rows(), 3, false, false);
        let digest = body_digest(&b.bytes);
        assert!(verify(&b.bytes, &b.table, &b.expected, Some(&digest)).is_ok());
        assert!(verify(&b.bytes, &b.table, &b.expected, Some(&[0; 16])).is_err());
        assert!(verify(&b.bytes, &b.table, &b.expected, Some(&digest[..8])).is_err());
        b.bytes[60] ^= 1; // the zero padding after the header counts too
        assert!(b.verify().is_err());
    }

    #[test]
    fn offsets_must_ascend_from_heap_start_to_heap_end() {
        let b = build(&rows(), 3, false, false);
        let (start, end) = (b.table.heap_start as u64, b.table.heap_end as u64);
        let last = b.table.slot_count - 1;
        for (slot, value) in [(0, start + 1), (last, end - 1), (last, end + 1), (0, u64::MAX)] {
            let mut d = build(&rows(), 3, false, false);
            d.word(d.slot_at(slot) + 8, value);
            refused(&d, "record offsets");
        }
        // a decreasing offset in the middle, and one past the heap that comes back
        let mut d = build(&rows(), 3, false, false);
        let j = (0..last).find(|&j| d.table.slot_key(&d.bytes, j) != Some(d.table.empty)).unwrap();
        d.word(d.slot_at(j + 1) + 8, start);
        refused(&d, "record offsets");
        let mut d = build(&rows(), 3, false, false);
        d.word(d.slot_at(j + 1) + 8, (i64::MAX as u64) + 5);
        refused(&d, "record offsets");
    }

    #[test]
    fn occupied_and_empty_slots_match_their_records() {
        // an empty slot given a key (its record would be zero bytes), an occupied one emptied
        let b = build(&rows(), 3, false, false);
        let empty_slot = (0..b.table.slot_count - 1)
            .find(|&j| b.table.slot_key(&b.bytes, j) == Some(b.table.empty))
            .unwrap();
        let mut d = build(&rows(), 3, false, false);
        d.word(d.slot_at(empty_slot), 1234);
        refused(&d, "record offsets");
        let mut d = build(&rows(), 3, false, false);
        d.word(d.slot_at(3), d.table.empty); // key 3's slot
        refused(&d, "record offsets");
        // the terminal slot must be empty
        let mut d = build(&rows(), 3, false, false);
        d.word(d.slot_at(d.table.slot_count - 1), 77);
        refused(&d, "record offsets");
    }

    #[test]
    fn counts_must_be_the_headers() {
        let mut b = build(&rows(), 3, false, false);
        b.expected.count = 4;
        refused(&b, "5 entries and 0 tombstones, the header says 4 and 0");
        let mut over = rows();
        over.push((7, "", true));
        let mut b = build(&over, 3, true, false);
        b.expected.tombstones = 0;
        refused(&b, "6 entries and 1 tombstones");
    }

    #[test]
    fn tombstones_are_one_byte_and_only_in_overlays() {
        let mut over = rows();
        over.push((7, "", true));
        let mut b = build(&over, 3, false, false);
        refused(&b, "a tombstone in a base file");
        b.table.overlay = true;
        b.verify().unwrap();
        // a record that starts with C0 but is longer: key 3's record becomes C0 A1 61 ...
        let mut d = build(&rows(), 3, true, false);
        let at = d.table.record_offset(&d.bytes, 3).unwrap() as usize;
        d.bytes[at] = TOMBSTONE;
        d.expected.tombstones = 1;
        d.reseal();
        refused(&d, "a tombstone longer than one byte");
    }

    #[test]
    fn records_open_an_array_of_the_schema_width() {
        let mut b = build(&rows(), 3, false, false);
        b.expected.width = 4;
        refused(&b, "not 4-column arrays");
        let mut b = build(&rows(), 20, false, false);
        b.expected.width = 21;
        refused(&b, "not 21-column arrays");
        b.expected.width = 70_000; // array32: never written by format 1
        refused(&b, "not 70000-column arrays");
        // array16 headers are compared whole: DC 00 13 is 19 columns, not 20
        let mut b = build(&[(3, "", false)], 20, false, false);
        let at = b.table.record_offset(&b.bytes, 3).unwrap() as usize;
        b.bytes[at + 2] = 0x13;
        b.reseal();
        refused(&b, "not 20-column arrays");
    }

    #[test]
    fn records_must_decode_when_asked() {
        let rows = rows();
        let mut b = build(&rows, 3, false, false);
        let at = b.table.record_offset(&b.bytes, 2).unwrap() as usize; // key 50: 93 32 A1 65 A1 65
        b.bytes[at + 2] = 0xC1;
        b.reseal();
        refused(&b, "the record of slot 2 does not decode");
        b.expected.records = false;
        b.verify().unwrap(); // the header byte alone is right
        let mut b = build(&rows, 3, false, false);
        b.bytes[at + 3] = 0xFF; // bad UTF-8
        b.reseal();
        refused(&b, "not UTF-8");
        let mut b = build(&rows, 3, false, false);
        b.bytes[at + 2] = 0xA0; // "" then fixint 0x65, then "e": two bytes left over
        b.reseal();
        refused(&b, "does not decode");
        let mut b = build(&rows, 3, false, false);
        b.bytes[at + 2] = 0xA7; // a longer string: the record ends early
        b.reseal();
        refused(&b, "does not decode");
    }

    #[test]
    fn decoding_follows_the_decoders_depth_limit() {
        let mut stack = Vec::new();
        let nested = |levels: usize| {
            let mut rec = vec![0x91];
            rec.extend(std::iter::repeat_n(0x91, levels - 1));
            rec.push(0x90); // the innermost array is empty: still a container at its depth
            rec
        };
        assert!(decodes(&nested(MAX_DEPTH), 1, &mut stack).is_ok());
        assert!(decodes(&nested(MAX_DEPTH + 1), 1, &mut stack).is_err());
        assert!(decodes(&[0x92, 0x81, 0x01, 0x02, 0xc3], 2, &mut stack).is_ok());
        assert!(decodes(&[0x92, 0x81, 0x01], 2, &mut stack).is_err());
        assert!(decodes(&[0x92, 0x01, 0x02, 0x03], 2, &mut stack).is_err());
        assert!(decodes(&[0x91, 0xd9, 0x02, b'a'], 1, &mut stack).is_err());
    }

    #[test]
    fn decodes_accepts_what_the_readers_tokens_accept() {
        // Every value form of the format, then each record damaged byte by byte
        let mut rec = Vec::new();
        write_array_header(&mut rec, 12);
        for v in [0i64, -1, -33, 200, -200, 70_000, -70_000, 1 << 40, i64::MIN] {
            write_int(&mut rec, v);
        }
        write_str(&mut rec, "héllo");
        write_str(&mut rec, &"x".repeat(300));
        rec.extend_from_slice(&[0x82, 0xa1, b'k', 0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0,
            0xc2, 0xd6, 0x05, 1, 2, 3, 4]); // {k: [1.0, nil], false: ext 5}
        let mut records = vec![rec.clone()];
        let extras: [&[u8]; 10] = [
            &[0x92, 0xc4, 0x02, 1, 2, 0xc7, 0x01, 0x07, 9], // bin8, ext8
            &[0x92, 0xca, 0, 0, 0, 0, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x92, 0xdc, 0x00, 0x01, 0xc3, 0xde, 0x00, 0x01, 0x01, 0x02],
            &[0x92, 0xdd, 0, 0, 0, 1, 0xc3, 0xdf, 0, 0, 0, 1, 0x01, 0x02],
            &[0x92, 0xda, 0x00, 0x01, b'a', 0xdb, 0, 0, 0, 1, b'b'],
            &[0x92, 0xc5, 0x00, 0x01, 7, 0xc6, 0, 0, 0, 1, 8],
            &[0x92, 0xc8, 0x00, 0x01, 0x01, 7, 0xc9, 0, 0, 0, 1, 0x02, 8],
            &[0x92, 0xd4, 1, 1, 0xd8, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            &[0x92, 0xa2, 0xc3, 0x28, 0xd9, 0x01, 0xed], // bad UTF-8 (a lone continuation)
            &[0xdd, 0, 0, 0, 2, 0xc0, 0xc0], // an array32 header (cargo fuzz found it)
        ];
        records.extend(extras.iter().map(|r| r.to_vec()));
        let mut stack = Vec::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut checked = 0;
        for base in &records {
            let width = if base[0] == 0x9c { 12 } else { 2 };
            assert_eq!(decodes(base, width, &mut stack).is_ok(), decodes_by_tokens(base, width));
            for at in 0..base.len() {
                for _ in 0..24 {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let mut d = base.clone();
                    d[at] = (seed >> 56) as u8;
                    if seed & 1 == 0 {
                        d.truncate(at + (seed >> 8) as usize % (d.len() - at));
                    }
                    assert_eq!(decodes(&d, width, &mut stack).is_ok(), decodes_by_tokens(&d, width),
                               "{d:02x?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000);
    }

    #[test]
    fn postings_must_name_live_records() {
        let b = build(&rows(), 3, false, true);
        b.verify().unwrap();
        let index = b.expected.indexes[0].1.clone();
        let posting = |d: &mut Built, value: u32| {
            d.bytes[index.postings_at..index.postings_at + 4].copy_from_slice(&value.to_le_bytes());
            d.reseal();
        };
        let empty_slot = (0..b.table.slot_count - 1)
            .find(|&j| b.table.slot_key(&b.bytes, j) == Some(b.table.empty))
            .unwrap();
        let last = b.table.slot_count as u32 - 1;
        for value in [empty_slot as u32, last, last + 1, u32::MAX] {
            let mut d = build(&rows(), 3, false, true);
            posting(&mut d, value);
            refused(&d, "the index on 'size' does not match the slot table");
        }
        // a tombstone is no live record
        let mut over = rows();
        over.push((7, "", true));
        let mut d = build(&over, 3, true, true);
        d.verify().unwrap();
        posting(&mut d, 7);
        refused(&d, "the index on 'size'");
    }

    #[test]
    fn value_tables_must_be_well_formed() {
        let b = build(&rows(), 3, false, true);
        let index = b.expected.indexes[0].1.clone();
        let entry = |e: usize| index.table_at + e * INDEX_ENTRY_SIZE;
        let filled = (0..index.slots - 1)
            .find(|&e| u64_word(&b.bytes, entry(e)) != 0)
            .unwrap();
        let empty = (filled..index.slots - 1).find(|&e| u64_word(&b.bytes, entry(e)) == 0).unwrap();
        let cases: Vec<(usize, u64)> = vec![
            (entry(0) + 8, 1),                        // the first posting is not 0
            (entry(index.slots - 1) + 8, 99),         // the terminal entry is not the count
            (entry(index.slots - 1), 5),              // the terminal entry is not empty
            (entry(filled + 1) + 8, u64::MAX),        // first postings that decrease
            (entry(filled + 1) + 8, 1 << 63),         // ... seen as unsigned, no wrap
            (entry(empty), 0xDEAD),                   // an extra filled entry (values)
            (entry(filled), 0),                       // a filled entry emptied, owning postings
        ];
        for (at, value) in cases {
            let mut d = build(&rows(), 3, false, true);
            d.word(at, value);
            refused(&d, "the index on 'size'");
        }
    }

    fn u64_word(bytes: &[u8], at: usize) -> u64 {
        crate::layout::u64_at(bytes, at).unwrap()
    }
}
