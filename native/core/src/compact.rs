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
    let coder = Coder::new(records, kinds, key_field, key_fields)?;
    // Coded in input order (a sequential read of the records: coding them in entry order
    // would stall on a cache miss per record), gathered in entry order when written.
    // Coded records are never longer than their canonical bytes.
    let mut coded = Vec::with_capacity((0..n).map(|i| records.length(i)).sum());
    let mut at = Vec::with_capacity(n + 1);
    let (mut spans, mut elems, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        at.push(coded.len());
        coder.encode(records.get(i), &mut spans, &mut elems, &mut ids, &mut coded)?;
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
        let plan = plan_compact(&keys, true, &records, &[&hashes], &["str", "int", "list"], &[1]).unwrap();
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
}
