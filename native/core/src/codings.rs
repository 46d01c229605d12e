//! Format 2's records (docs/FORMAT.md, 10.5): each field coded as itself (`plain`: its
//! canonical msgpack), left out (`key`: the single int key, which the record's entry
//! holds), as the id of its value in the column's dictionary (`dict`), as the ids of
//! its elements in the column's dictionary, bit-packed (`elements`), or, for a struct
//! whose every value has the same fields, as its field values alone, the field names in
//! the column's dictionary (`fields`). A dictionary holds each distinct value once, as
//! its canonical msgpack bytes.
//!
//! A record's canonical bytes (FORMAT.md, 6: what the state digest, the producer's diff
//! and a format-1 file hold) are rebuilt by [`Codings::canonical`]; the writer side
//! ([`Coder`]) picks the codings from a sample of the records, builds the dictionaries
//! and codes each record.

use std::collections::{HashMap, HashSet};

use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::columnar::Tap;
use crate::error::{Error, Result};
use crate::layout::u32_at;
use crate::msgpack::{write_array_header, write_int, write_map_header, write_uint, Reader, Token};
use crate::records::Records;
use crate::verify::{value_end, MAX_DEPTH};

/// msgpack nil: a null list in an `elements` field.
pub const NIL: u8 = 0xC0;
/// A null struct in a `fields` field: the byte msgpack never uses, so that no field
/// value (a nil included) starts with it.
pub const NO_STRUCT: u8 = 0xC1;

/// How one column's field is stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Key,
    Dict,
    Elements,
    Fields,
}

impl Kind {
    /// Whether the column has a dictionary.
    pub fn coded(self) -> bool {
        matches!(self, Kind::Dict | Kind::Elements | Kind::Fields)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Key => "key",
            Kind::Dict => "dict",
            Kind::Elements => "elements",
            Kind::Fields => "fields",
        }
    }

    pub fn from_name(name: &str) -> Result<Kind> {
        Ok(match name {
            "plain" => Kind::Plain,
            "key" => Kind::Key,
            "dict" => Kind::Dict,
            "elements" => Kind::Elements,
            "fields" => Kind::Fields,
            other => return Err(Error::damaged(format!("unknown column coding {other:?}"))),
        })
    }
}

/// A column's dictionary in a file: `values + 1` u32 offsets at `at`, into the `length`
/// bytes that follow them; ids of `elements` fields take `bits` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dictionary {
    pub at: usize,
    pub values: usize,
    pub length: usize,
    pub bits: u32,
}

impl Dictionary {
    /// Checks that the dictionary lies inside a file of `file_size` bytes.
    pub fn new(file_size: usize, at: usize, values: usize, length: usize, bits: u32) -> Result<Dictionary> {
        let end = values
            .checked_add(1)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(at))
            .and_then(|n| n.checked_add(length));
        if end.is_none_or(|end| end > file_size) || !(1..=32).contains(&bits) {
            return Err(Error::damaged("a dictionary does not fit the file"));
        }
        Ok(Dictionary { at, values, length, bits })
    }

    /// Absolute offset of the value bytes.
    #[inline(always)]
    pub fn bytes_at(&self) -> usize {
        self.at + 4 * (self.values + 1)
    }

    /// The canonical bytes of value `id`.
    #[inline]
    pub fn value<'a>(&self, bytes: &'a [u8], id: u64) -> Result<&'a [u8]> {
        if id >= self.values as u64 {
            return Err(Error::damaged(format!("dictionary id {id} of {} values", self.values)));
        }
        let id = id as usize;
        let bound = |i: usize| u32_at(bytes, self.at + 4 * i).map(|v| v as usize);
        match (bound(id), bound(id + 1)) {
            (Some(a), Some(b)) if a <= b && b <= self.length => {
                Ok(&bytes[self.bytes_at() + a..self.bytes_at() + b])
            }
            _ => Err(Error::damaged(format!("dictionary value {id} lies outside its dictionary"))),
        }
    }
}

/// Bytes of `count` ids of `bits` bits, or None when that overflows.
#[inline(always)]
pub fn packed_len(count: usize, bits: u32) -> Option<usize> {
    Some(count.checked_mul(bits as usize)?.checked_add(7)? / 8)
}

/// Id `i` of the `bits`-bit ids packed in `payload` (LSB first).
#[inline(always)]
pub fn unpack(payload: &[u8], i: usize, bits: u32) -> u64 {
    let bit = i * bits as usize;
    let byte = bit / 8;
    let mut word = [0u8; 8];
    let avail = payload.len().saturating_sub(byte).min(8);
    word[..avail].copy_from_slice(&payload[byte..byte + avail]);
    (u64::from_le_bytes(word) >> (bit % 8)) & ((1u64 << bits) - 1)
}

/// Appends `ids` packed at `bits` bits each (LSB first), as [`unpack`] reads them.
pub fn pack(ids: &[u32], bits: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + packed_len(ids.len(), bits).expect("ids fit memory"), 0);
    for (i, &id) in ids.iter().enumerate() {
        let bit = i * bits as usize;
        let (mut v, mut at) = ((id as u64) << (bit % 8), start + bit / 8);
        while v != 0 {
            out[at] |= v as u8;
            v >>= 8;
            at += 1;
        }
    }
}

/// One column of a format-2 file: its coding and, for `dict` and `elements`, its
/// dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub kind: Kind,
    pub dict: Option<Dictionary>,
}

/// The columns of a format-2 file, in schema order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Codings {
    pub columns: Vec<Column>,
}

/// An `elements` field's ids: the count, then the packed ids (None for a null list).
#[inline]
pub fn read_elements<'a>(r: &mut Reader<'a>, bits: u32) -> Result<Option<(usize, &'a [u8])>> {
    if r.peek() == Some(NIL) {
        r.raw(1)?;
        return Ok(None);
    }
    let count = r.uint()?;
    // A count the bytes left cannot hold is damage (and cannot make anyone allocate).
    let left = r.remaining() as u64 * 8 / bits as u64;
    if count > left {
        return Err(Error::damaged("an elements field is longer than its record"));
    }
    let count = count as usize;
    let payload = r.raw(packed_len(count, bits).expect("bounded by the record"))?;
    Ok(Some((count, payload)))
}

fn bad_coding() -> Error {
    Error::damaged("a coded column has no dictionary")
}

impl Codings {
    /// Appends the canonical msgpack record (FORMAT.md, 6) of the format-2 `record` of
    /// the entry holding `slot_key`, dictionaries read from the file `bytes`.
    pub fn canonical(&self, bytes: &[u8], slot_key: u64, record: &[u8], out: &mut Vec<u8>) -> Result<()> {
        write_array_header(out, self.columns.len());
        let mut r = Reader::new(record);
        for c in &self.columns {
            match (c.kind, &c.dict) {
                (Kind::Key, _) => write_int(out, slot_key as i64),
                (Kind::Plain, _) => {
                    let at = r.pos();
                    r.skip(MAX_DEPTH)?;
                    out.extend_from_slice(&record[at..r.pos()]);
                }
                (Kind::Dict, Some(d)) => out.extend_from_slice(d.value(bytes, r.uint()?)?),
                (Kind::Elements, Some(d)) => match read_elements(&mut r, d.bits)? {
                    None => out.push(NIL),
                    Some((count, ids)) => {
                        write_array_header(out, count);
                        for i in 0..count {
                            out.extend_from_slice(d.value(bytes, unpack(ids, i, d.bits))?);
                        }
                    }
                },
                (Kind::Fields, Some(d)) => {
                    if r.peek() == Some(NO_STRUCT) {
                        r.raw(1)?;
                        out.push(NIL);
                        continue;
                    }
                    write_map_header(out, d.values);
                    for i in 0..d.values {
                        out.extend_from_slice(d.value(bytes, i as u64)?);
                        let at = r.pos();
                        r.skip(MAX_DEPTH)?;
                        out.extend_from_slice(&record[at..r.pos()]);
                    }
                }
                _ => return Err(bad_coding()),
            }
        }
        if r.remaining() != 0 {
            return Err(Error::damaged("bytes after a record's last field"));
        }
        Ok(())
    }
}

// -- the writer side ----------------------------------------------------------------------

/// Records sampled to choose the codings.
const SAMPLE: usize = 4096;
/// A column is dictionary-coded when its sampled values (or elements) repeat this many
/// times on average at least: a near-unique column would pay an id and an offset per
/// value on top of the value.
const REPEATS: usize = 8;

/// The schema kinds (`manifest` `kind`, FORMAT.md 2.2) whose values may be coded.
fn dict_candidate(kind: &str) -> bool {
    matches!(kind, "str" | "bytes" | "list" | "map" | "struct" | "decimal" | "uuid")
}

/// The spans of the `width` fields of the canonical record `record`, into `spans`
/// (walked by `verify`'s byte walker, several times faster than tokens).
fn field_spans(record: &[u8], width: usize, spans: &mut Vec<(usize, usize)>) -> Result<()> {
    spans.clear();
    let mut r = Reader::new(record);
    match r.token()? {
        Token::Array(n) if n == width => {}
        _ => return Err(Error::damaged(format!("a record that is not an array of {width} fields"))),
    }
    let mut at = r.pos();
    let mut stack = Vec::new();
    for _ in 0..width {
        let end = value_end(record, at, &mut stack)?;
        spans.push((at, end));
        at = end;
    }
    if at != record.len() {
        return Err(Error::damaged("bytes after a record's last field"));
    }
    Ok(())
}

/// The elements of the canonical list `value` (an array, or None for nil).
fn element_spans(value: &[u8], spans: &mut Vec<(usize, usize)>) -> Result<Option<()>> {
    spans.clear();
    let mut r = Reader::new(value);
    let n = match r.token()? {
        Token::Nil => return Ok(None),
        Token::Array(n) => n,
        _ => return Err(Error::damaged("a list column's value is not an array")),
    };
    for _ in 0..n {
        let at = r.pos();
        r.skip(MAX_DEPTH)?;
        spans.push((at, r.pos()));
    }
    Ok(Some(()))
}

/// The keys and values of the canonical map `value` (None for nil): `keys[i]` and
/// `values[i]` are spans of `value`.
fn map_spans(value: &[u8], keys: &mut Vec<(usize, usize)>, values: &mut Vec<(usize, usize)>) -> Result<Option<()>> {
    keys.clear();
    values.clear();
    let mut r = Reader::new(value);
    let n = match r.token()? {
        Token::Nil => return Ok(None),
        Token::Map(n) => n,
        _ => return Err(Error::damaged("a struct column's value is not a map")),
    };
    for _ in 0..n {
        for spans in [&mut *keys, &mut *values] {
            let at = r.pos();
            r.skip(MAX_DEPTH)?;
            spans.push((at, r.pos()));
        }
    }
    Ok(Some(()))
}

/// One column's dictionary while it is built.
#[derive(Default)]
struct Interned<'a> {
    ids: HashMap<&'a [u8], u32, Xxh3DefaultBuilder>,
    values: Vec<&'a [u8]>,
}

impl<'a> Interned<'a> {
    #[inline]
    fn id(&mut self, value: &'a [u8]) -> u32 {
        let next = self.values.len() as u32;
        let id = *self.ids.entry(value).or_insert(next);
        if id == next {
            self.values.push(value);
        }
        id
    }

    fn bits(&self) -> u32 {
        (u32::BITS - (self.values.len().saturating_sub(1) as u32).leading_zeros()).max(1)
    }
}

/// The codings of a new format-2 file and its dictionaries, built from its records.
pub struct Coder<'a> {
    pub kinds: Vec<Kind>,
    dicts: Vec<Interned<'a>>,
    width: usize,
    /// Per field, the ids of a dictionary given with the records (a columnar blob's):
    /// then nothing is hashed.
    given: Vec<Option<Given<'a>>>,
}

/// A given dictionary's ids in record order: one per record (`dict`), or each record's
/// elements' from `starts[i]` to `starts[i + 1]` (`elements`).
struct Given<'a> {
    ids: &'a [u32],
    starts: Option<Vec<usize>>,
}

/// A sample of one column's values (or list elements).
#[derive(Default)]
struct Sample<'a> {
    count: usize,
    distinct: HashSet<&'a [u8]>,
    bytes: usize,
    /// Distinct values among the first half of the sample (set by [`Sample::half`]).
    half: usize,
}

impl<'a> Sample<'a> {
    fn add(&mut self, value: &'a [u8]) {
        self.count += 1;
        self.distinct.insert(value);
        self.bytes += value.len();
    }

    fn half(&mut self) {
        self.half = self.distinct.len();
    }

    /// Whether the values repeat enough, and are `min_len` bytes long on average at
    /// least, to pay for ids: each repeats [`REPEATS`] times in the sample, or the
    /// distinct values stopped growing (the second half of the sample added under a
    /// tenth to the first half's: a bounded vocabulary the whole table repeats more).
    fn worth_it(&self, min_len: usize) -> bool {
        let d = self.distinct.len();
        self.count > 0
            && self.bytes >= min_len * self.count
            && (d * REPEATS <= self.count || (self.count >= 2 * SATURATED && d * 10 <= self.half * 11))
    }
}

/// Values a sample must hold before a vocabulary that stopped growing counts as one.
const SATURATED: usize = 1024;

/// One column's sample: its whole values, for lists their elements, for structs their
/// field names (None once two values differ in them).
#[derive(Default)]
struct Sampled<'a> {
    values: Sample<'a>,
    elements: Sample<'a>,
    fields: Option<Option<Vec<&'a [u8]>>>,
}

impl<'a> Sampled<'a> {
    fn names(&mut self, names: Vec<&'a [u8]>) {
        match &self.fields {
            None => self.fields = Some(Some(names)),
            Some(Some(seen)) if *seen != names => self.fields = Some(None),
            _ => {}
        }
    }
}

impl<'a> Coder<'a> {
    /// Chooses the codings of `records` (canonical arrays of `kinds.len()` fields; `kinds`
    /// the schema's column kinds) from a sample, then builds every dictionary (in the
    /// records' order: ids in order of first use). `key_field`: the single int key's
    /// field, which entries hold (left out of records); `key_fields`: every key field,
    /// never coded (a lookup compares them).
    pub fn new(records: &Records<'a>, kinds: &[&str], key_field: Option<usize>, key_fields: &[usize]) -> Result<Coder<'a>> {
        Coder::with_taps(records, kinds, key_field, key_fields, &[])
    }

    /// [`Coder::new`], taking the dictionary of a field from `taps` (a columnar blob's,
    /// [`crate::columnar::decode_tapped`], for the same records in the same order) where
    /// the field's coding is the tap's kind (`dict` for a `DICT` column, `elements` for
    /// a `LIST` of one): its values become the file's dictionary and its ids the
    /// records' codes, with no value hashed.
    pub fn with_taps(records: &Records<'a>, kinds: &[&str], key_field: Option<usize>, key_fields: &[usize],
                     taps: &'a [Option<Tap>]) -> Result<Coder<'a>> {
        let width = kinds.len();
        let n = records.len();
        let step = n.div_ceil(SAMPLE).max(1);
        let mut seen: Vec<Sampled<'_>> = (0..width).map(|_| Sampled::default()).collect();
        let (mut spans, mut elems, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        let halfway = n.div_ceil(step) / 2 * step;
        for i in (0..n).step_by(step) {
            if i == halfway {
                seen.iter_mut().for_each(|s| {
                    s.values.half();
                    s.elements.half();
                });
            }
            let record = records.get(i);
            field_spans(record, width, &mut spans)?;
            for (c, &(a, b)) in spans.iter().enumerate() {
                if !dict_candidate(kinds[c]) || key_fields.contains(&c) {
                    continue;
                }
                let s = &mut seen[c];
                s.values.add(&record[a..b]);
                if kinds[c] == "list" && element_spans(&record[a..b], &mut elems)?.is_some() {
                    for &(x, y) in &elems {
                        s.elements.add(&record[a + x..a + y]);
                    }
                }
                if kinds[c] == "struct" && map_spans(&record[a..b], &mut keys, &mut elems)?.is_some() {
                    s.names(keys.iter().map(|&(x, y)| &record[a + x..a + y]).collect());
                }
            }
        }
        let mut chosen: Vec<Kind> = (0..width)
            .map(|c| {
                let s = &seen[c];
                if Some(c) == key_field {
                    Kind::Key
                } else if s.values.worth_it(3) {
                    Kind::Dict
                } else if kinds[c] == "list" && s.elements.worth_it(2) {
                    Kind::Elements
                } else if matches!(s.fields, Some(Some(ref names)) if !names.is_empty()) {
                    Kind::Fields
                } else {
                    Kind::Plain
                }
            })
            .collect();
        let mut dicts: Vec<Interned<'a>> = (0..width).map(|_| Interned::default()).collect();
        for (c, s) in seen.iter_mut().enumerate() {
            if chosen[c] == Kind::Fields {
                for name in s.fields.take().flatten().unwrap_or_default() {
                    dicts[c].id(name);
                }
            }
        }
        drop(seen);
        let mut given: Vec<Option<Given<'a>>> = (0..width).map(|_| None).collect();
        for (c, tap) in taps.iter().enumerate().take(width) {
            let Some(tap) = tap else { continue };
            let starts = match (chosen[c], &tap.lengths) {
                (Kind::Dict, None) if tap.ids.len() == n => None,
                (Kind::Elements, Some(lengths)) if lengths.len() == n => {
                    let mut starts = Vec::with_capacity(n + 1);
                    let mut at = 0usize;
                    starts.push(0);
                    for &l in lengths {
                        at += l as usize;
                        starts.push(at);
                    }
                    if at != tap.ids.len() {
                        return Err(Error::damaged(format!("column {c}: {} element ids for {at} elements", tap.ids.len())));
                    }
                    Some(starts)
                }
                _ => continue,
            };
            let k = tap.offsets.len().saturating_sub(1);
            if tap.offsets.first() != Some(&0) || tap.offsets.last() != Some(&tap.values.len())
                || tap.offsets.windows(2).any(|w| w[0] > w[1]) || tap.ids.iter().any(|&id| id as usize >= k) {
                return Err(Error::damaged(format!("column {c}: a dictionary that does not hold its ids")));
            }
            dicts[c].values = tap.offsets.windows(2).map(|w| &tap.values[w[0]..w[1]]).collect();
            given[c] = Some(Given { ids: &tap.ids, starts });
        }
        let coded: Vec<usize> = (0..width).filter(|&c| chosen[c].coded() && given[c].is_none()).collect();
        if !coded.is_empty() {
            let mut names: Vec<&[u8]> = Vec::new();
            for i in 0..n {
                let record = records.get(i);
                field_spans(record, width, &mut spans)?;
                for &c in &coded {
                    let (a, b) = spans[c];
                    let value = &record[a..b];
                    match chosen[c] {
                        Kind::Dict => {
                            dicts[c].id(value);
                        }
                        Kind::Elements => {
                            if element_spans(value, &mut elems)?.is_some() {
                                for &(x, y) in &elems {
                                    dicts[c].id(&value[x..y]);
                                }
                            }
                        }
                        _ => {
                            // a struct with other fields than the sample's: plain after all
                            if map_spans(value, &mut keys, &mut elems)?.is_some() {
                                names.clear();
                                names.extend(keys.iter().map(|&(x, y)| &value[x..y]));
                                if names != dicts[c].values {
                                    chosen[c] = Kind::Plain;
                                    dicts[c] = Interned::default();
                                }
                            }
                        }
                    }
                }
            }
        }
        for (c, d) in dicts.iter().enumerate() {
            if d.values.len() > u32::MAX as usize - 1 || d.values.iter().map(|v| v.len()).sum::<usize>() > u32::MAX as usize {
                return Err(Error::damaged(format!("column {c}'s dictionary passes 4 GiB")));
            }
        }
        Ok(Coder { kinds: chosen, dicts, width, given })
    }

    /// Column `c`'s dictionary: its values in id order and the bits of an element id.
    pub fn dictionary(&self, c: usize) -> (&[&'a [u8]], u32) {
        (&self.dicts[c].values, self.dicts[c].bits())
    }

    /// Appends the format-2 coding of the canonical `record` (record `i` of those the
    /// coder was built from) to `out`.
    pub fn encode(&self, i: usize, record: &[u8], spans: &mut Vec<(usize, usize)>, elems: &mut Vec<(usize, usize)>,
                  ids: &mut Vec<u32>, out: &mut Vec<u8>) -> Result<()> {
        field_spans(record, self.width, spans)?;
        for (c, &(a, b)) in spans.iter().enumerate() {
            let value = &record[a..b];
            match self.kinds[c] {
                Kind::Key => {}
                Kind::Plain => out.extend_from_slice(value),
                Kind::Dict => {
                    let id = match &self.given[c] {
                        Some(g) => *g.ids.get(i).ok_or_else(|| Error::damaged("a record past its dictionary's ids"))?,
                        None => self.lookup(c, value)?,
                    };
                    write_uint(out, id as u64);
                }
                Kind::Elements => {
                    if element_spans(value, elems)?.is_none() {
                        out.push(NIL);
                        continue;
                    }
                    let given = match &self.given[c] {
                        Some(Given { ids, starts: Some(starts) }) => {
                            let (x, y) = (starts.get(i).copied(), starts.get(i + 1).copied());
                            match (x, y) {
                                (Some(x), Some(y)) if y - x == elems.len() => Some(&ids[x..y]),
                                _ => return Err(Error::damaged("a list of another length than its dictionary's ids")),
                            }
                        }
                        _ => None,
                    };
                    let ids = match given {
                        Some(given) => given,
                        None => {
                            ids.clear();
                            for &(x, y) in elems.iter() {
                                ids.push(self.lookup(c, &value[x..y])?);
                            }
                            &ids[..]
                        }
                    };
                    write_uint(out, ids.len() as u64);
                    pack(ids, self.dicts[c].bits(), out);
                }
                Kind::Fields => {
                    // the coder checked every value's fields: the values alone, in order
                    let mut r = Reader::new(value);
                    match r.token()? {
                        Token::Nil => out.push(NO_STRUCT),
                        Token::Map(n) => {
                            for _ in 0..n {
                                r.skip(MAX_DEPTH)?;
                                let at = r.pos();
                                r.skip(MAX_DEPTH)?;
                                out.extend_from_slice(&value[at..r.pos()]);
                            }
                        }
                        _ => return Err(Error::damaged("a struct column's value is not a map")),
                    }
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn lookup(&self, c: usize, value: &[u8]) -> Result<u32> {
        self.dicts[c].ids.get(value).copied().ok_or_else(|| Error::damaged("a value missing from its dictionary"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::write_str;

    #[test]
    fn packed_ids_round_trip_at_every_width() {
        for bits in 1..=32u32 {
            let ids: Vec<u32> = (0..37u64).map(|i| ((i * 2654435761) & ((1u64 << bits) - 1)) as u32).collect();
            let mut out = vec![0xAA];
            pack(&ids, bits, &mut out);
            assert_eq!(out.len(), 1 + packed_len(ids.len(), bits).unwrap());
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(unpack(&out[1..], i, bits), id as u64, "bits {bits}, id {i}");
            }
        }
    }

    /// Canonical records `[int, str, list of str]` from a small vocabulary.
    fn records(n: usize) -> (Vec<u8>, Vec<i64>, Vec<i64>) {
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        let words = ["alpha", "beta", "gamma", "delta"];
        for i in 0..n {
            let at = heap.len();
            write_array_header(&mut heap, 4);
            write_int(&mut heap, 1000 + i as i64);
            write_str(&mut heap, words[i % 3]);
            if i % 7 == 3 {
                heap.push(NIL);
            } else if i % 7 == 5 {
                write_map_header(&mut heap, 2); // every field null: not a null struct
                write_str(&mut heap, "x");
                heap.push(NIL);
                write_str(&mut heap, "y");
                heap.push(NIL);
            } else {
                write_map_header(&mut heap, 2);
                write_str(&mut heap, "x");
                write_int(&mut heap, i as i64 * 3);
                write_str(&mut heap, "y");
                write_str(&mut heap, words[i % 4]);
            }
            if i % 5 == 4 {
                heap.push(NIL);
            } else {
                write_array_header(&mut heap, i % 9);
                for k in 0..i % 9 {
                    write_str(&mut heap, words[(i * 31 + k * 17 + i / 5) % 4]);
                }
            }
            starts.push(at as i64);
            lengths.push((heap.len() - at) as i64);
        }
        (heap, starts, lengths)
    }

    #[test]
    fn coded_records_rebuild_their_canonical_bytes() {
        let (heap, starts, lengths) = records(200);
        let recs = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
        let coder = Coder::new(&recs, &["int", "str", "struct", "list"], Some(0), &[0]).unwrap();
        assert_eq!(coder.kinds, vec![Kind::Key, Kind::Dict, Kind::Fields, Kind::Elements]);
        round_trip(&recs, &coder);
    }

    /// Codes `recs` with `coder` into a file holding its dictionaries and checks that
    /// every coded record rebuilds its canonical bytes (and that damage is refused).
    fn round_trip(recs: &Records<'_>, coder: &Coder<'_>) {
        // a file holding the dictionaries, then the coded records
        let mut file = Vec::new();
        let mut columns = Vec::new();
        for (c, kind) in coder.kinds.iter().enumerate() {
            if !kind.coded() {
                columns.push(Column { kind: *kind, dict: None });
                continue;
            }
            let (values, bits) = coder.dictionary(c);
            let at = file.len();
            let mut off = 0u32;
            file.extend_from_slice(&off.to_le_bytes());
            for v in values {
                off += v.len() as u32;
                file.extend_from_slice(&off.to_le_bytes());
            }
            let length = off as usize;
            for v in values {
                file.extend_from_slice(v);
            }
            columns.push(Column { kind: *kind, dict: Some(Dictionary::new(file.len(), at, values.len(), length, bits).unwrap()) });
        }
        let codings = Codings { columns };
        let (mut spans, mut elems, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..recs.len() {
            let mut coded = Vec::new();
            coder.encode(i, recs.get(i), &mut spans, &mut elems, &mut ids, &mut coded).unwrap();
            assert!(coded.len() < recs.get(i).len());
            let mut back = Vec::new();
            codings.canonical(&file, 1000 + i as u64, &coded, &mut back).unwrap();
            assert_eq!(back, recs.get(i), "record {i}");
            // damage: a truncated record or an id past the dictionary is an error
            assert!(codings.canonical(&file, 0, &coded[..coded.len() - 1], &mut Vec::new()).is_err());
        }
        let bad = [0x7f, 0x00];
        assert!(codings.canonical(&file, 0, &bad, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_columnar_bodys_dictionaries_code_the_records_without_hashing() {
        // [int key, str from 3 words, list of strs from 4 words (never null), int]
        let words = ["alpha", "beta", "gamma", "delta"];
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        let mut rng = 7u64;
        for i in 0..3000usize {
            let at = heap.len();
            write_array_header(&mut heap, 4);
            write_int(&mut heap, 1000 + i as i64);
            write_str(&mut heap, words[i % 3]);
            write_array_header(&mut heap, 3 + i % 6);
            for _ in 0..3 + i % 6 {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                write_str(&mut heap, words[(rng >> 62) as usize]);
            }
            write_int(&mut heap, (i * 7919 % 1000) as i64);
            starts.push(at as i64);
            lengths.push((heap.len() - at) as i64);
        }
        let recs = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
        let body = crate::columnar::encode(&recs, 4, 3).unwrap();
        let decoded = crate::columnar::decode_tapped(&body, 4, heap.len()).unwrap();
        assert_eq!(decoded.heap, heap);
        let tapped: Vec<bool> = decoded.taps.iter().map(Option::is_some).collect();
        assert_eq!(tapped, vec![false, true, true, false]);
        let back = decoded.records().unwrap();
        let kinds = ["int", "str", "list", "int"];
        let coder = Coder::with_taps(&back, &kinds, Some(0), &[0], &decoded.taps).unwrap();
        assert_eq!(coder.kinds[..3], [Kind::Key, Kind::Dict, Kind::Elements]);
        assert!(coder.given[1].is_some() && coder.given[2].is_some());
        // the dictionaries are the body's (its values, not rebuilt)
        let tap = decoded.taps[2].as_ref().unwrap();
        assert_eq!(coder.dictionary(2).0.len(), tap.offsets.len() - 1);
        round_trip(&back, &coder);
        // taps that do not hold their records' ids are refused
        let mut short = decoded.taps.clone();
        short[2].as_mut().unwrap().ids.pop();
        assert!(Coder::with_taps(&back, &kinds, Some(0), &[0], &short).is_err());
        let mut past = decoded.taps.clone();
        past[1].as_mut().unwrap().ids[0] = 99;
        assert!(Coder::with_taps(&back, &kinds, Some(0), &[0], &past).is_err());
    }

    #[test]
    fn near_unique_columns_stay_plain() {
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..1000 {
            let at = heap.len();
            write_array_header(&mut heap, 2);
            write_int(&mut heap, i);
            write_str(&mut heap, &format!("title {i}"));
            starts.push(at as i64);
            lengths.push((heap.len() - at) as i64);
        }
        let recs = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
        let coder = Coder::new(&recs, &["str", "str"], None, &[]).unwrap();
        assert_eq!(coder.kinds, vec![Kind::Plain, Kind::Plain]);
    }
}
