//! The producer's diff (feedkit/merge.py): a new state's records against the state it
//! published last (`[overlay, base]` or `[base]`), by slot key and record bytes, and the
//! state digest's terms (FORMAT.md, 7) gathered on the way.

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::records::Records;

pub use crate::state::Layer;
use crate::state::{live_at, lookup, Live};

/// Per key: is it a live record of the state `layers`?
pub fn present(layers: &[Layer<'_>], keys: &[u64]) -> Result<Vec<bool>> {
    keys.iter().map(|&k| Ok(lookup(layers, k)?.is_some())).collect()
}

/// Sum (mod 2**64) of xxh3-64 over the records.
pub fn record_digest<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    records.into_iter().fold(0u64, |sum, r| sum.wrapping_add(xxh3_64(r)))
}

/// How a new state differs from the old one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    /// New records (indexes into the new ones, ascending) that are added or changed.
    pub upserts: Vec<usize>,
    /// Per old file: slots of live records whose keys the new state lacks, ascending.
    pub deleted: Vec<Vec<usize>>,
    /// Per old file: slots of live records an upsert replaces, in upsert order.
    pub changed_old: Vec<Vec<usize>>,
    /// Digest of the old records that go: the changed ones and the deleted ones.
    pub removed_digest: u64,
    /// Digest of the upserts' records.
    pub added_digest: u64,
}

/// A word per 64 slots: which slots a new key matched.
#[derive(Debug)]
struct Marks(Vec<u64>);

impl Marks {
    fn new(n: usize) -> Marks {
        Marks(vec![0; n / 64 + 1])
    }
    fn set(&mut self, j: usize) {
        self.0[j / 64] |= 1 << (j % 64);
    }
    fn get(&self, j: usize) -> bool {
        self.0[j / 64] & (1 << (j % 64)) != 0
    }
}

/// A diff taken batch by batch, as the producer encodes a table: [`Differ::batch`] per
/// batch of new records (a probe per key, a byte comparison per match), then
/// [`Differ::finish`] (a pass over each file's slots for the keys that are gone). Every
/// call gets the same `layers`.
#[derive(Debug)]
pub struct Differ {
    slot_counts: Vec<usize>,
    matched: Vec<Marks>,
    changed_old: Vec<Vec<usize>>,
    deleted: Vec<Vec<usize>>, // named deletes (Differ::delete)
    removed_digest: u64,
    added_digest: u64,
}

impl Differ {
    pub fn new(layers: &[Layer<'_>]) -> Differ {
        Differ {
            slot_counts: layers.iter().map(|l| l.table.slot_count).collect(),
            matched: layers.iter().map(|l| Marks::new(l.table.slot_count)).collect(),
            changed_old: vec![Vec::new(); layers.len()],
            deleted: vec![Vec::new(); layers.len()],
            removed_digest: 0,
            added_digest: 0,
        }
    }

    fn check(&self, layers: &[Layer<'_>]) -> Result<()> {
        if layers.iter().map(|l| l.table.slot_count).ne(self.slot_counts.iter().copied()) {
            return Err(Error::damaged("a diff continued over other state files"));
        }
        Ok(())
    }

    /// Compares one batch of new records (slot keys `keys`) with the state; returns the
    /// batch's upserts (added or changed records), ascending.
    pub fn batch(&mut self, layers: &[Layer<'_>], keys: &[u64], records: &Records<'_>) -> Result<Vec<usize>> {
        self.check(layers)?;
        if records.len() != keys.len() {
            return Err(Error::damaged(format!("{} keys, {} records", keys.len(), records.len())));
        }
        let mut upserts = Vec::new();
        let mut buf = Vec::new();
        for (i, &key) in keys.iter().enumerate() {
            let new = records.get(i);
            if let Some(Live { file: f, slot, start, end }) = lookup(layers, key)? {
                self.matched[f].set(slot);
                let old = layers[f].canonical(key, start, end, &mut buf)?;
                if old == new {
                    continue;
                }
                self.changed_old[f].push(slot);
                self.removed_digest = self.removed_digest.wrapping_add(xxh3_64(old));
            }
            upserts.push(i);
            self.added_digest = self.added_digest.wrapping_add(xxh3_64(new));
        }
        Ok(upserts)
    }

    /// Deletes the keys `keys` (slot keys), after every batch: each that is live in the
    /// state and matched by no new record goes, the others are nothing to do (absent,
    /// already deleted, or upserted: an upsert of the same key wins). For a change that
    /// names its deletes ([`Differ::finish_named`]) instead of a whole new state.
    pub fn delete(&mut self, layers: &[Layer<'_>], keys: &[u64]) -> Result<()> {
        self.check(layers)?;
        let mut buf = Vec::new();
        for &key in keys {
            if let Some(Live { file: f, slot, start, end }) = lookup(layers, key)? {
                if self.matched[f].get(slot) {
                    continue;
                }
                self.matched[f].set(slot);
                self.deleted[f].push(slot);
                let record = layers[f].canonical(key, start, end, &mut buf)?;
                self.removed_digest = self.removed_digest.wrapping_add(xxh3_64(record));
            }
        }
        Ok(())
    }

    /// The end of a change whose deletes were named ([`Differ::delete`]): the records no
    /// new key matched stay. `upserts` is left empty (each batch returned its own).
    pub fn finish_named(self, layers: &[Layer<'_>]) -> Result<Diff> {
        self.check(layers)?;
        let mut deleted = self.deleted;
        for slots in &mut deleted {
            slots.sort_unstable();
        }
        Ok(Diff {
            upserts: Vec::new(),
            deleted,
            changed_old: self.changed_old,
            removed_digest: self.removed_digest,
            added_digest: self.added_digest,
        })
    }

    /// The deleted records (live, unmatched by any new key) and the digests; `upserts`
    /// is left empty (each batch returned its own).
    pub fn finish(self, layers: &[Layer<'_>]) -> Result<Diff> {
        self.check(layers)?;
        let mut out = Diff {
            upserts: Vec::new(),
            deleted: vec![Vec::new(); layers.len()],
            changed_old: self.changed_old,
            removed_digest: self.removed_digest,
            added_digest: self.added_digest,
        };
        let mut buf = Vec::new();
        for (f, layer) in layers.iter().enumerate() {
            let t = &layer.table;
            // The terminal slot is empty in every valid file: it is no entry.
            for j in 0..t.slot_count.saturating_sub(1) {
                let key = t.slot_key(layer.bytes, j).ok_or_else(|| Error::damaged("a slot lies outside the file"))?;
                if key == t.empty || self.matched[f].get(j) {
                    continue;
                }
                // Not a tombstone, nor a base record the overlay replaced or deleted.
                let Some(Live { start, end, .. }) = live_at(layers, f, j, key)? else { continue };
                out.deleted[f].push(j);
                let record = layer.canonical(key, start, end, &mut buf)?;
                out.removed_digest = out.removed_digest.wrapping_add(xxh3_64(record));
            }
        }
        Ok(out)
    }
}

/// Compares the new records `records` with slot keys `keys` against the state `layers`
/// (overlay first): one probe per new key, one byte comparison per matched pair, then
/// one pass over each file's slots for the keys that are gone.
pub fn diff(layers: &[Layer<'_>], keys: &[u64], records: &Records<'_>) -> Result<Diff> {
    let mut differ = Differ::new(layers);
    let upserts = differ.batch(layers, keys, records)?;
    let mut out = differ.finish(layers)?;
    out.upserts = upserts;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Home, Table};
    use crate::probe::{probe, Found};
    use crate::write::{place_int, free_sentinel};

    /// A state file's slot table and heap in memory (body at 0, no header): enough for
    /// probes, built with the writer's placement.
    fn file(entries: &[(i64, &[u8])], overlay: bool) -> (Vec<u8>, Table) {
        let keys: Vec<u64> = entries.iter().map(|&(k, _)| k as u64).collect();
        let p = place_int(&keys).unwrap();
        let empty = free_sentinel(keys.iter().copied(), keys.len(), i64::MIN as u64);
        let heap_start = p.slot_count * 16;
        let mut slots = vec![(empty, 0u64); p.slot_count];
        let mut heap = Vec::new();
        let mut next = p.slots.iter().zip(&p.order).peekable();
        for (j, slot) in slots.iter_mut().enumerate() {
            let at = (heap_start + heap.len()) as u64;
            *slot = (empty, at);
            if let Some(&(&s, &i)) = next.peek() {
                if s as usize == j {
                    *slot = (keys[i as usize], at);
                    heap.extend_from_slice(entries[i as usize].1);
                    next.next();
                }
            }
        }
        let mut bytes = Vec::new();
        for (k, at) in slots {
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.extend_from_slice(&at.to_le_bytes());
        }
        let heap_end = heap_start + heap.len();
        bytes.extend_from_slice(&heap);
        let table = Table::new(bytes.len(), 0, p.slot_count, p.bits, p.home, empty, heap_start,
                               heap_end, overlay).unwrap();
        (bytes, table)
    }

    fn slot_of(layer: &Layer<'_>, key: i64) -> usize {
        match probe(layer.bytes, layer.table, key as u64).unwrap() {
            Found::Record { slot, .. } => slot,
            _ => panic!("{key} is not a record"),
        }
    }

    #[test]
    fn diff_sees_added_changed_deleted_and_shadowed_records() {
        let (base, bt) = file(&[(1, b"\x91\x01"), (2, b"\x91\x02"), (3, b"\x91\x03"), (4, b"\x91\x04")], false);
        // the overlay changed 2, deleted 3 and added 5
        let (over, ot) = file(&[(2, b"\x91\x12"), (3, b"\xc0"), (5, b"\x91\x05")], true);
        assert_eq!(bt.home, Home::Low);
        let layers = [Layer { bytes: &over, table: &ot, codings: None }, Layer { bytes: &base, table: &bt, codings: None }];
        // new state: 1 same, 2 same as the overlay's, 3 back, 4 changed, 5 gone, 6 new
        let heap: &[u8] = b"\x91\x01\x91\x12\x91\x03\x91\x44\x91\x06";
        let keys: Vec<u64> = [1i64, 2, 3, 4, 6].iter().map(|&k| k as u64).collect();
        let records = Records::new(vec![heap], None, &[0, 2, 4, 6, 8], &[2; 5]).unwrap();
        let d = diff(&layers, &keys, &records).unwrap();
        assert_eq!(d.upserts, vec![2, 3, 4]);
        assert_eq!(d.changed_old, vec![vec![], vec![slot_of(&layers[1], 4)]]);
        assert_eq!(d.deleted, vec![vec![slot_of(&layers[0], 5)], vec![]]);
        let h = |b: &[u8]| xxh3_64(b);
        assert_eq!(d.added_digest, h(b"\x91\x03").wrapping_add(h(b"\x91\x44")).wrapping_add(h(b"\x91\x06")));
        assert_eq!(d.removed_digest, h(b"\x91\x04").wrapping_add(h(b"\x91\x05")));
        assert_eq!(present(&layers, &[1, 2, 3, 5, 6, 7]).unwrap(), vec![true, true, false, true, false, false]);
        // nothing new: every live record is deleted, base records under tombstones aside
        let none = Records::new(vec![], None, &[], &[]).unwrap();
        let d = diff(&layers, &[], &none).unwrap();
        assert_eq!(d.upserts, Vec::<usize>::new());
        let mut base_gone = vec![slot_of(&layers[1], 1), slot_of(&layers[1], 4)];
        base_gone.sort();
        assert_eq!(d.deleted[1], base_gone);
        assert_eq!(d.deleted[0].len(), 2);
        assert_eq!(record_digest([&b"a"[..], b"b"]), h(b"a").wrapping_add(h(b"b")));
    }

    #[test]
    fn a_diff_in_batches_is_the_whole_diff() {
        let (base, bt) = file(&[(1, b"\x91\x01"), (2, b"\x91\x02"), (3, b"\x91\x03"), (4, b"\x91\x04")], false);
        let (over, ot) = file(&[(2, b"\x91\x12"), (3, b"\xc0"), (5, b"\x91\x05")], true);
        let layers = [Layer { bytes: &over, table: &ot, codings: None }, Layer { bytes: &base, table: &bt, codings: None }];
        let heap: &[u8] = b"\x91\x01\x91\x12\x91\x03\x91\x44\x91\x06";
        let keys: Vec<u64> = [1i64, 2, 3, 4, 6].iter().map(|&k| k as u64).collect();
        let all = Records::new(vec![heap], None, &[0, 2, 4, 6, 8], &[2; 5]).unwrap();
        let whole = diff(&layers, &keys, &all).unwrap();
        let mut differ = Differ::new(&layers);
        let first = Records::new(vec![heap], None, &[0, 2], &[2; 2]).unwrap();
        let second = Records::new(vec![heap], None, &[4, 6, 8], &[2; 3]).unwrap();
        assert_eq!(differ.batch(&layers, &keys[..2], &first).unwrap(), Vec::<usize>::new());
        assert_eq!(differ.batch(&layers, &keys[2..], &second).unwrap(), vec![0, 1, 2]);
        let parts = differ.finish(&layers).unwrap();
        assert_eq!(Diff { upserts: whole.upserts.clone(), ..parts }, whole);
        // Other files than the ones the diff began with are refused, not indexed blindly.
        let mut differ = Differ::new(&layers);
        assert!(differ.batch(&layers[1..], &keys[..2], &first).is_err());
    }
    #[test]
    fn named_deletes_remove_only_live_unmatched_keys() {
        let (base, bt) = file(&[(1, b"\x91\x01"), (2, b"\x91\x02"), (3, b"\x91\x03"), (4, b"\x91\x04")], false);
        // the overlay changed 2, deleted 3 and added 5
        let (over, ot) = file(&[(2, b"\x91\x12"), (3, b"\xc0"), (5, b"\x91\x05")], true);
        let layers = [Layer { bytes: &over, table: &ot, codings: None }, Layer { bytes: &base, table: &bt, codings: None }];
        // upserts: 4 changed, 6 new, 1 the same; deletes: 1 (upserted: stays), 2 (the
        // overlay's), 3 (a tombstone: nothing), 4 (upserted: changed, not deleted), 5, 5
        // again, 7 (absent)
        let heap: &[u8] = b"\x91\x01\x91\x44\x91\x06";
        let keys: Vec<u64> = [1i64, 4, 6].iter().map(|&k| k as u64).collect();
        let records = Records::new(vec![heap], None, &[0, 2, 4], &[2; 3]).unwrap();
        let mut differ = Differ::new(&layers);
        assert_eq!(differ.batch(&layers, &keys, &records).unwrap(), vec![1, 2]);
        let gone: Vec<u64> = [1i64, 2, 3, 4, 5, 5, 7].iter().map(|&k| k as u64).collect();
        differ.delete(&layers, &gone).unwrap();
        let d = differ.finish_named(&layers).unwrap();
        let mut over_gone = vec![slot_of(&layers[0], 2), slot_of(&layers[0], 5)];
        over_gone.sort();
        assert_eq!(d.deleted, vec![over_gone, Vec::<usize>::new()]);
        assert_eq!(d.changed_old, vec![vec![], vec![slot_of(&layers[1], 4)]]);
        let h = |b: &[u8]| xxh3_64(b);
        assert_eq!(d.added_digest, h(b"\x91\x44").wrapping_add(h(b"\x91\x06")));
        assert_eq!(d.removed_digest,
                   h(b"\x91\x04").wrapping_add(h(b"\x91\x12")).wrapping_add(h(b"\x91\x05")));
        // base record 3 under its tombstone, and 1, stay: no walk over the slots
        let mut differ = Differ::new(&layers);
        differ.delete(&layers, &[]).unwrap();
        assert_eq!(differ.finish_named(&layers).unwrap().deleted, vec![Vec::<usize>::new(); 2]);
    }
}
