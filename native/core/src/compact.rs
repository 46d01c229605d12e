//! Writing a format-2 base file (docs/FORMAT.md, 10): entries sorted by mixed key with
//! a bucket directory over them (no empty slots, no power-of-two capacity), records
//! coded against per-column dictionaries ([`crate::codings`]), then the dictionaries
//! and the secondary indexes (format 1's, posting entry numbers).
//!
//! As in [`crate::write`], [`plan_compact`] computes everything the header holds and
//! [`write_compact`] writes prefix, header and body to a temporary file it renames.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::columnar::Tap;
use crate::codings::Coder;
use crate::error::{Error, Result};
use crate::layout::{
    align, body_offset, bucket_of, mix, Home, IndexSections, Prefix, FORMAT_COMPACT, INDEX_ENTRY_SIZE,
    POSTING_SIZE, PREFIX_SIZE, SECTION_ALIGN,
};
use crate::records::Records;
use crate::write::{free_sentinel, index_table, IndexTable, Out, CHUNK, MAX_ENTRIES};

/// Entries per bucket on average: the directory costs `4 / LOAD` bytes a record, and a
/// lookup compares `1 + LOAD / 2` keys on average.
pub const LOAD: usize = 4;

/// One dictionary's section, offsets relative to the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictSection {
    pub column: usize,
    pub at: usize,
    pub values: usize,
    pub length: usize,
    pub bits: u32,
}

/// Everything about a format-2 file but its header.
pub struct CompactPlan<'a> {
    /// The records (indexes into the input) in entry order: ascending mixed key.
    pub order: Vec<u32>,
    /// `buckets + 1` first entries.
    pub directory: Vec<u32>,
    pub max_bucket: usize,
    pub home: Home,
    pub empty: u64,
    /// 12 (u32 record offsets) or 16 bytes.
    pub entry_size: usize,
    /// The coded records in input order (record `i` is `coded[at[i]..at[i + 1]]`),
    /// written to the heap in entry order.
    pub coded: Vec<u8>,
    pub at: Vec<usize>,
    /// Entry `j`'s record offset in the heap (`n + 1` of them: the last is the heap's
    /// length).
    pub offsets: Vec<u64>,
    pub coder: Coder<'a>,
    pub dicts: Vec<DictSection>,
    pub indexes: Vec<IndexTable>,
    pub index_sections: Vec<IndexSections>,
    /// Offsets relative to the body.
    pub buckets_at: usize,
    pub heap_at: usize,
    pub body_length: usize,
}

impl CompactPlan<'_> {
    pub fn count(&self) -> usize {
        self.order.len()
    }

    /// Bytes of coded records.
    pub fn heap_length(&self) -> usize {
        self.offsets[self.order.len()] as usize
    }
}

/// Plans a base file of `records` (canonical msgpack arrays, one column per `kinds`
/// entry) with slot keys `keys` (int keys' bits when `int_keys`, else xxh3 hashes) and
/// an index per entry of `index_hashes`. `key_fields` are the key's columns; a single
/// int key's field is left out of the records (its entry holds it).
pub fn plan_compact<'a>(
    keys: &[u64],
    int_keys: bool,
    records: &Records<'a>,
    index_hashes: &[&[u64]],
    kinds: &[&str],
    key_fields: &[usize],
    taps: &'a [Option<Tap>],
) -> Result<CompactPlan<'a>> {
    let n = keys.len();
    if records.len() != n || index_hashes.iter().any(|h| h.len() != n) {
        return Err(Error::damaged(format!("{n} keys and records or index values of other lengths")));
    }
    if n > MAX_ENTRIES {
        return Err(Error::damaged(format!("{n} entries: a state file holds at most {MAX_ENTRIES}")));
    }
    let home = if int_keys { Home::Fib } else { Home::Xxh3 };
    // Entries: a counting sort by bucket of (mixed key, record) pairs, then each bucket
    // (two entries on average) by mixed key: sequential passes, no indirection.
    let buckets = n.div_ceil(LOAD).max(1);
    let mut directory = vec![0u32; buckets + 1];
    for &k in keys {
        directory[bucket_of(mix(home, k), buckets) + 1] += 1;
    }
    let mut max_bucket = 0usize;
    for b in 1..=buckets {
        max_bucket = max_bucket.max(directory[b] as usize);
        directory[b] += directory[b - 1];
    }
    let mut fill: Vec<u32> = directory[..buckets].to_vec();
    let mut sorted = vec![(0u64, 0u32); n];
    for (i, &k) in keys.iter().enumerate() {
        let m = mix(home, k);
        let f = &mut fill[bucket_of(m, buckets)];
        sorted[*f as usize] = (m, i as u32);
        *f += 1;
    }
    drop(fill);
    for w in directory.windows(2) {
        let bucket = &mut sorted[w[0] as usize..w[1] as usize];
        if bucket.len() > 1 {
            bucket.sort_unstable_by_key(|e| e.0);
        }
    }
    if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Error::damaged("two records with one key"));
    }
    let order: Vec<u32> = sorted.into_iter().map(|(_, i)| i).collect();
    let empty = free_sentinel(keys.iter().copied(), n, if int_keys { i64::MIN as u64 } else { 0 });

    let key_field = match key_fields {
        [f] if int_keys => Some(*f),
        _ => None,
    };
    let coder = Coder::with_taps(records, kinds, key_field, key_fields, taps)?;
    // Coded in input order (a sequential read of the records: coding them in entry order
    // would stall on a cache miss per record), gathered in entry order when written.
    // Coded records are never longer than their canonical bytes.
    let mut coded = Vec::with_capacity((0..n).map(|i| records.length(i)).sum());
    let mut at = Vec::with_capacity(n + 1);
    let (mut spans, mut elems, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        at.push(coded.len());
        coder.encode(i, records.get(i), &mut spans, &mut elems, &mut ids, &mut coded)?;
    }
    at.push(coded.len());
    let mut offsets = Vec::with_capacity(n + 1);
    let mut heap_length = 0u64;
    for &i in &order {
        offsets.push(heap_length);
        heap_length += (at[i as usize + 1] - at[i as usize]) as u64;
    }
    offsets.push(heap_length);
    let heap_length = heap_length as usize;
    let entry_size = if heap_length <= u32::MAX as usize { 12 } else { 16 };

    let mut indexes = Vec::with_capacity(index_hashes.len());
    if !index_hashes.is_empty() {
        let entries: Vec<u32> = (0..n as u32).collect();
        for hashes in index_hashes {
            let in_order: Vec<u64> = order.iter().map(|&i| hashes[i as usize]).collect();
            indexes.push(index_table(&in_order, &entries));
        }
    }

    // The body: entries, directory, heap, dictionaries, indexes; each section 8-aligned.
    let buckets_at = align((n + 1) * entry_size, SECTION_ALIGN);
    let heap_at = align(buckets_at + 4 * (buckets + 1), SECTION_ALIGN);
    let mut offset = align(heap_at + heap_length, SECTION_ALIGN);
    let mut dicts = Vec::new();
    for (column, kind) in coder.kinds.iter().enumerate() {
        if kind.coded() {
            let (values, bits) = coder.dictionary(column);
            let length: usize = values.iter().map(|v| v.len()).sum();
            dicts.push(DictSection { column, at: offset, values: values.len(), length, bits });
            offset = align(offset + 4 * (values.len() + 1) + length, SECTION_ALIGN);
        }
    }
    let mut index_sections = Vec::new();
    for t in &indexes {
        let table = offset;
        let postings = table + t.slots() * INDEX_ENTRY_SIZE;
        offset = postings + align(t.postings.len() * POSTING_SIZE, SECTION_ALIGN);
        index_sections.push(IndexSections { table, slots: t.slots(), postings, count: t.postings.len() });
    }
    Ok(CompactPlan {
        order, directory, max_bucket, home, empty, entry_size, coded, at, offsets, coder, dicts,
        indexes, index_sections, buckets_at, heap_at, body_length: offset,
    })
}

/// Writes the planned file with `header` at `tmp`, then renames it to `target`; on
/// failure removes `tmp`. Returns the file's size.
pub fn write_compact(plan: &CompactPlan<'_>, keys: &[u64], header: &[u8], tmp: &Path, target: &Path) -> io::Result<u64> {
    let result = write_tmp(plan, keys, header, tmp).and_then(|size| {
        fs::rename(tmp, target)?;
        Ok(size)
    });
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn write_tmp(plan: &CompactPlan<'_>, keys: &[u64], header: &[u8], tmp: &Path) -> io::Result<u64> {
    let header_length = u32::try_from(header.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "state header over 4 GiB"))?;
    let body = body_offset(header.len());
    let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(tmp)?;
    let mut out = Out { file, buf: Vec::with_capacity(CHUNK), hasher: Xxh3::new() };
    out.file.write_all(&[0u8; PREFIX_SIZE])?;
    out.put(header)?;
    out.zeros(body - PREFIX_SIZE - header.len())?;
    let put_entry = |out: &mut Out, key: u64, offset: u64| -> io::Result<()> {
        out.word(key)?;
        if plan.entry_size == 12 {
            out.put(&(offset as u32).to_le_bytes())
        } else {
            out.word(offset)
        }
    };
    for (j, &i) in plan.order.iter().enumerate() {
        put_entry(&mut out, keys[i as usize], plan.offsets[j])?;
    }
    put_entry(&mut out, plan.empty, plan.heap_length() as u64)?;
    let mut at = (plan.order.len() + 1) * plan.entry_size;
    out.zeros(plan.buckets_at - at)?;
    for &d in &plan.directory {
        out.put(&d.to_le_bytes())?;
    }
    at = plan.buckets_at + 4 * plan.directory.len();
    out.zeros(plan.heap_at - at)?;
    for &i in &plan.order {
        out.put(&plan.coded[plan.at[i as usize]..plan.at[i as usize + 1]])?;
    }
    at = plan.heap_at + plan.heap_length();
    for d in &plan.dicts {
        out.zeros(d.at - at)?;
        let (values, _) = plan.coder.dictionary(d.column);
        let mut off = 0u32;
        out.put(&off.to_le_bytes())?;
        for v in values {
            off += v.len() as u32; // the coder refused dictionaries past 4 GiB
            out.put(&off.to_le_bytes())?;
        }
        for v in values {
            out.put(v)?;
        }
        at = d.at + 4 * (values.len() + 1) + d.length;
    }
    for (t, s) in plan.indexes.iter().zip(&plan.index_sections) {
        out.zeros(s.table - at)?;
        for &w in &t.entries {
            out.word(w)?;
        }
        for &p in &t.postings {
            out.put(&p.to_le_bytes())?;
        }
        at = s.postings + t.postings.len() * POSTING_SIZE;
    }
    out.zeros(plan.body_length - at)?;
    out.flush()?;
    let size = (body + plan.body_length) as u64;
    let digest = out.hasher.digest128().to_be_bytes();
    out.file.seek(SeekFrom::Start(0))?;
    out.file.write_all(&Prefix::encode_format(FORMAT_COMPACT, header_length, body as u64, size, &digest))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codings::{Codings, Column, Dictionary, Kind};
    use crate::layout::{Buckets, Table};
    use crate::msgpack::{write_array_header, write_int, write_str};
    use crate::probe::{probe, Found};

    #[test]
    fn a_compact_file_is_found_by_the_probe_and_rebuilds_its_records() {
        let dir = std::env::temp_dir().join(format!("feedkit-compact-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let n = 3000usize;
        let keys: Vec<u64> = (0..n as i64).map(|i| (i * 7 - 5000) as u64).collect();
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        let countries = ["DE", "FR", "US", "NL"];
        for (i, &k) in keys.iter().enumerate() {
            let at = heap.len();
            write_array_header(&mut heap, 3);
            write_str(&mut heap, countries[i % 4]);
            write_int(&mut heap, k as i64);
            write_array_header(&mut heap, i % 7);
            for e in 0..i % 7 {
                write_str(&mut heap, countries[(i >> (2 * e)) % 4]); // i's base-4 digits
            }
            starts.push(at as i64);
            lengths.push((heap.len() - at) as i64);
        }
        let records = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
        let hashes: Vec<u64> = (0..n as u64).map(|i| i % 4 + 1).collect();
        let plan = plan_compact(&keys, true, &records, &[&hashes], &["str", "int", "list"], &[1], &[]).unwrap();
        assert_eq!(plan.coder.kinds, vec![Kind::Dict, Kind::Key, Kind::Elements]);
        assert!(plan.max_bucket >= 1 && plan.directory[plan.directory.len() - 1] as usize == n);
        let (tmp, target) = (dir.join(".c.tmp"), dir.join("c.state"));
        let size = write_compact(&plan, &keys, b"{}", &tmp, &target).unwrap();
        let bytes = fs::read(&target).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let body = Prefix::parse(&bytes).unwrap().body_offset;
        let buckets = Buckets { at: body + plan.buckets_at, count: plan.directory.len() - 1, max: plan.max_bucket };
        let heap_start = body + plan.heap_at;
        let table = Table::sorted(bytes.len(), body, n + 1, plan.entry_size, plan.home, plan.empty, buckets,
                                  heap_start, heap_start + plan.heap_length()).unwrap();
        let columns = plan.coder.kinds.iter().enumerate().map(|(c, &kind)| Column {
            kind,
            dict: plan.dicts.iter().find(|d| d.column == c)
                .map(|d| Dictionary::new(bytes.len(), body + d.at, d.values, d.length, d.bits).unwrap()),
        }).collect();
        let codings = Codings { columns };
        for (i, &k) in keys.iter().enumerate() {
            let Found::Record { start, end, .. } = probe(&bytes, &table, k).unwrap() else { panic!("{k}") };
            let mut canon = Vec::new();
            codings.canonical(&bytes, k, &bytes[start..end], &mut canon).unwrap();
            assert_eq!(canon, records.get(i));
        }
        for absent in [1u64, 2, 3, (-4999i64) as u64, plan.empty] {
            assert_eq!(probe(&bytes, &table, absent).unwrap(), Found::Miss);
        }
        // the index posts entry numbers grouped by value
        assert_eq!(plan.indexes[0].postings.len(), n);
        fs::remove_dir_all(&dir).unwrap();
    }

    // -- damage: a real file (header rendered as the Python writer renders it), damaged
    // and re-sealed, so that only verify's structural checks can refuse it --------------

    use crate::header::{parse_own, Parsed};
    use crate::verify::{body_digest, verify};
    use serde_json::json;

    /// A format-2 file of `n` records `[word (dict), id (key), tags (elements), title
    /// (plain)]`, int keys `3 * i - 50`, an index on the word; `entry_size` 12 or 16.
    struct File {
        bytes: Vec<u8>,
        plan_heap_at: usize,
        body: usize,
    }

    const WORDS: [&str; 3] = ["alpha", "beta", "gamma"];

    fn file(n: usize, entry_size: usize) -> File {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("feedkit-compact-damage-{}-{nth}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let keys: Vec<u64> = (0..n as i64).map(|i| (3 * i - 50) as u64).collect();
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &k) in keys.iter().enumerate() {
            let at = heap.len();
            write_array_header(&mut heap, 4);
            write_str(&mut heap, WORDS[i % 3]);
            write_int(&mut heap, k as i64);
            write_array_header(&mut heap, 1 + i % 5);
            for e in 0..1 + i % 5 {
                write_str(&mut heap, WORDS[(i / 3usize.pow(e as u32)) % 3]); // i's base-3 digits
            }
            write_str(&mut heap, &format!("title {i}"));
            starts.push(at as i64);
            lengths.push((heap.len() - at) as i64);
        }
        let records = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
        let hashes: Vec<u64> = (0..n as u64).map(|i| i % 3 + 1).collect();
        let mut plan = plan_compact(&keys, true, &records, &[&hashes], &["str", "int", "list", "str"], &[1], &[]).unwrap();
        assert_eq!(plan.coder.kinds, vec![Kind::Dict, Kind::Key, Kind::Elements, Kind::Plain]);
        plan.entry_size = entry_size;
        plan.buckets_at = align((n + 1) * entry_size, SECTION_ALIGN);
        let shift = align(plan.buckets_at + 4 * plan.directory.len(), SECTION_ALIGN) - plan.heap_at;
        plan.heap_at += shift;
        for d in &mut plan.dicts {
            d.at += shift;
        }
        for s in &mut plan.index_sections {
            s.table += shift;
            s.postings += shift;
        }
        plan.body_length += shift;
        let columns: Vec<serde_json::Value> = plan.coder.kinds.iter().enumerate().map(|(c, kind)| {
            match plan.dicts.iter().find(|d| d.column == c) {
                Some(d) => json!({"coding": kind.name(), "offset": d.at, "values": d.values, "length": d.length, "bits": d.bits}),
                None => json!({"coding": kind.name()}),
            }
        }).collect();
        let (t, s) = (&plan.indexes[0], &plan.index_sections[0]);
        let column = |name: &str, kind: &str| json!({"name": name, "kind": kind, "type": "", "nullable": true});
        let header = json!({
            "feed": "damage", "version": 3, "kind": "base", "format": 2, "record_count": n,
            "count": n, "tombstones": 0, "use_list": false,
            "schema": [column("word", "str"), column("id", "int"), column("tags", "list"), column("title", "str")],
            "key": {"columns": ["id"], "parts": ["int"]},
            "index_fields": ["word"],
            "indexes": {"word": {"slots": t.slots(), "bits": t.bits, "empty": t.empty, "values": t.values,
                                 "table": s.table, "postings": s.postings, "count": s.count}},
            "entries": {"offset": 0, "count": n + 1, "size": entry_size, "hash": "fib", "empty": plan.empty as i64},
            "buckets": {"offset": plan.buckets_at, "count": plan.directory.len() - 1, "max": plan.max_bucket},
            "heap": {"offset": plan.heap_at, "length": plan.heap_length()},
            "columns": columns,
            "body_length": plan.body_length,
        });
        let header = serde_json::to_vec(&header).unwrap();
        let (tmp, target) = (dir.join(".d.tmp"), dir.join("d.state"));
        write_compact(&plan, &keys, &header, &tmp, &target).unwrap();
        let bytes = fs::read(&target).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let body = Prefix::parse(&bytes).unwrap().body_offset;
        File { bytes, plan_heap_at: plan.heap_at, body }
    }

    impl File {
        fn parsed(&self) -> Parsed {
            parse_own(&self.bytes).unwrap()
        }

        /// verify, with `records` or not, of the file as it now is (re-sealed first).
        fn verify(&mut self, records: bool) -> Result<()> {
            let digest = body_digest(&self.bytes);
            self.bytes[32..48].copy_from_slice(&digest);
            let parsed = parse_own(&self.bytes)?;
            let mut expected = parsed.expected.clone();
            expected.records = records;
            verify(&self.bytes, &parsed.table, &expected, None)
        }

        fn refused(&mut self, records: bool, says: &str) {
            let err = self.verify(records).expect_err(says);
            assert!(err.message().contains(says), "{:?} does not say {says:?}", err.message());
        }

        fn u32_at(&self, at: usize) -> u32 {
            crate::layout::u32_at(&self.bytes, at).unwrap()
        }

        fn put_u32(&mut self, at: usize, v: u32) {
            self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }

        fn put_u64(&mut self, at: usize, v: u64) {
            self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }

        /// Absolute offsets of entry `j` and of the directory.
        fn entry(&self, j: usize) -> usize {
            self.body + j * self.parsed().table.entry_size
        }

        fn directory(&self) -> Buckets {
            self.parsed().table.buckets.unwrap()
        }

        fn dictionary(&self, c: usize) -> Dictionary {
            self.parsed().codings.unwrap().columns[c].dict.unwrap()
        }

        /// The coded record of entry `j`: its absolute start and end.
        fn record(&self, j: usize) -> (usize, usize) {
            let p = self.parsed();
            (p.table.record_offset(&self.bytes, j).unwrap() as usize, p.table.record_offset(&self.bytes, j + 1).unwrap() as usize)
        }
    }

    #[test]
    fn a_written_file_parses_verifies_and_answers_in_both_entry_sizes() {
        for size in [12, 16] {
            let mut f = file(200, size);
            f.verify(true).unwrap();
            let p = f.parsed();
            assert_eq!((p.table.entry_size, p.table.heap_start), (size, f.body + f.plan_heap_at));
            let codings = p.codings.unwrap();
            for i in 0..200i64 {
                let key = (3 * i - 50) as u64;
                let Found::Record { start, end, .. } = probe(&f.bytes, &p.table, key).unwrap() else { panic!("{key}") };
                let mut canon = Vec::new();
                codings.canonical(&f.bytes, key, &f.bytes[start..end], &mut canon).unwrap();
                assert_eq!(canon[0], 0x94);
            }
            assert_eq!(probe(&f.bytes, &p.table, 2).unwrap(), Found::Miss); // keys are 1 mod 3
        }
    }

    #[test]
    fn damaged_dictionaries_are_refused() {
        let d = file(60, 12).dictionary(0); // the words: 3 values
        // offsets out of order
        let mut f = file(60, 12);
        let (a, b) = (f.u32_at(d.at + 4), f.u32_at(d.at + 8));
        f.put_u32(d.at + 4, b);
        f.put_u32(d.at + 8, a);
        f.refused(false, "the dictionary of column 0: offsets decrease");
        // an offset past its length: the last one, or one in the middle
        let mut f = file(60, 12);
        f.put_u32(d.at + 4 * d.values, d.length as u32 + 1);
        f.refused(false, "the dictionary of column 0: offsets do not span its values");
        for records in [false, true] {
            // (with records, the values before it were read with the offset: it panicked)
            let mut f = file(60, 12);
            f.put_u32(d.at + 4, d.length as u32 + 9);
            f.refused(records, &format!("the dictionary of column 0: offset 1 is past its {} bytes", d.length));
        }
        // a value that is not one msgpack value (a longer string; two values; none)
        for (at, byte) in [(0, 0xA6), (0, 0x01), (0, 0xC1)] {
            let mut f = file(60, 12);
            f.bytes[d.bytes_at() + at] = byte;
            f.verify(false).unwrap(); // the offsets alone are right
            f.refused(true, "the dictionary of column 0: value 0 is not one msgpack value");
        }
        let mut f = file(60, 12);
        f.put_u32(d.at + 4, 0); // an empty value
        f.refused(true, "value 0 is not one msgpack value");
    }

    #[test]
    fn ids_past_their_dictionary_are_refused() {
        let mut f = file(60, 12);
        let (start, _) = f.record(7);
        assert!(f.bytes[start] < 3); // the word's id, a fixint
        f.bytes[start] = 3;
        f.verify(false).unwrap();
        f.refused(true, "the record of entry 7 does not decode: a dictionary id past its dictionary");
        // an element id past its dictionary: the words' element dictionary has 3 values
        // at 2 bits, so id 3 fits the bits but not the dictionary
        let mut f = file(60, 12);
        let j = (0..60).find(|&j| { let (s, _) = f.record(j); f.bytes[s + 1] == 1 }).unwrap(); // one element
        let (start, _) = f.record(j);
        f.bytes[start + 2] |= 0x03;
        f.refused(true, &format!("the record of entry {j} does not decode: an element id past its dictionary"));
    }

    #[test]
    fn an_elements_count_longer_than_its_record_is_refused() {
        let mut f = file(60, 12);
        let (start, end) = f.record(9);
        f.bytes[start + 1] = 0x7F; // 127 ids of 2 bits: 32 bytes, in a record of a few
        assert!(end - start < 32);
        f.refused(true, "the record of entry 9 does not decode: an elements field is longer than its record");
        // a count whose ids fit no record at all (u64::MAX: no overflow, no allocation)
        let mut f = file(60, 12);
        let (start, _) = f.record(9);
        f.bytes[start + 1] = 0xCF;
        f.refused(true, "does not decode");
    }

    #[test]
    fn a_damaged_directory_is_refused() {
        let b = file(60, 12).directory();
        // a directory that does not end at the entry count (or start at 0)
        let mut f = file(60, 12);
        f.put_u32(b.at + 4 * b.count, 59);
        f.refused(false, "the bucket directory does not match the entries: it runs from 0 to 59, not from 0 to the 60 entries");
        let mut f = file(60, 12);
        f.put_u32(b.at, 1);
        f.refused(false, "it runs from 1 to 60");
        // a boundary moved: an entry in the wrong bucket
        let mut f = file(60, 12);
        let i = (1..b.count).find(|&i| f.u32_at(b.at + 4 * i) < f.u32_at(b.at + 4 * (i + 1))).unwrap();
        let first = f.u32_at(b.at + 4 * i);
        f.put_u32(b.at + 4 * i, first + 1);
        f.refused(false, &format!("entry {first} lies in bucket {}, its key's is {i}", i - 1));
        // a boundary past the next one
        let mut f = file(60, 12);
        f.put_u32(b.at + 4 * 3, 60);
        f.refused(false, "the bucket directory does not match the entries");
    }

    #[test]
    fn a_bucket_over_the_headers_max_is_refused() {
        let f = file(60, 12);
        let max = f.directory().max;
        assert!(max >= 2);
        // the header's max lowered (re-sealed): the directory is right, the max is not
        let text = String::from_utf8(f.bytes[PREFIX_SIZE..f.body].to_vec()).unwrap();
        let text = text.trim_end_matches('\0');
        let mut header: serde_json::Value = serde_json::from_str(text).unwrap();
        header["buckets"]["max"] = json!(max - 1);
        let mut head = serde_json::to_vec(&header).unwrap();
        head.resize(text.len(), b' '); // the same length: the body stays in place
        let mut g = File { bytes: f.bytes.clone(), ..f };
        g.bytes[PREFIX_SIZE..PREFIX_SIZE + head.len()].copy_from_slice(&head);
        g.refused(false, &format!("entries, over the header's max {}", max - 1));
    }

    #[test]
    fn damaged_entries_are_refused() {
        // two neighbours in one bucket swapped: out of key order
        let good = file(60, 12);
        let (p, buckets) = (good.parsed(), good.directory());
        let bucket = |j: usize| bucket_of(mix(p.table.home, p.table.slot_key(&good.bytes, j).unwrap()), buckets.count);
        let mut f = file(60, 12);
        let j = (0..59).find(|&j| bucket(j) == bucket(j + 1)).unwrap();
        let (a, b) = (f.entry(j), f.entry(j + 1));
        let (ka, kb) = (u64::from_le_bytes(f.bytes[a..a + 8].try_into().unwrap()), u64::from_le_bytes(f.bytes[b..b + 8].try_into().unwrap()));
        f.put_u64(a, kb);
        f.put_u64(b, ka);
        f.refused(false, "entries out of key order");
        // a key moved to the next bucket, order kept: the last entry of a bucket given a
        // key mixing just below the next entry's
        let mut f = file(60, 12);
        let j = (0..59).find(|&j| bucket(j) != bucket(j + 1)).unwrap();
        let next = mix(p.table.home, p.table.slot_key(&good.bytes, j + 1).unwrap());
        assert_eq!(bucket_of(next - 1, buckets.count), bucket(j + 1));
        let key = (next - 1).wrapping_mul(0xF1DE_83E1_9937_733D); // FIB's inverse mod 2**64
        assert_eq!(mix(p.table.home, key), next - 1);
        f.put_u64(f.entry(j), key);
        f.refused(false, &format!("entry {j} lies in bucket {}, its key's is {}", bucket(j), bucket(j + 1)));
        // the empty key in an entry; a terminal entry that is not empty
        let mut f = file(60, 12);
        let empty = f.parsed().table.empty;
        f.put_u64(f.entry(5), empty);
        f.refused(false, "entry 5 holds the empty key");
        let mut f = file(60, 12);
        f.put_u64(f.entry(60), 12345);
        f.refused(false, "the terminal entry is not empty");
        // record offsets: decreasing, past the heap, not starting at 0
        for (j, value) in [(3, 1), (4, u32::MAX), (0, 1), (60, 0)] {
            let mut f = file(60, 12);
            f.put_u32(f.entry(j) + 8, value);
            f.refused(false, "record offsets do not match the slot table");
        }
    }

    #[test]
    fn overlapping_sections_are_refused_on_open() {
        // the element dictionary given the word dictionary's numbers: two columns sharing one
        let f = file(60, 12);
        let text = String::from_utf8(f.bytes[PREFIX_SIZE..f.body].to_vec()).unwrap();
        let mut header: serde_json::Value = serde_json::from_str(text.trim_end_matches('\0')).unwrap();
        let word = header["columns"][0].clone();
        for (key, value) in word.as_object().unwrap() {
            if key != "coding" {
                header["columns"][2][key] = value.clone();
            }
        }
        let mut head = serde_json::to_vec(&header).unwrap();
        assert!(head.len() <= f.body - PREFIX_SIZE);
        head.resize(f.body - PREFIX_SIZE, b' ');
        let mut bytes = f.bytes.clone();
        bytes[PREFIX_SIZE..f.body].copy_from_slice(&head);
        let err = parse_own(&bytes).unwrap_err();
        assert!(err.message().contains("sections overlap"), "{}", err.message());
    }
}
