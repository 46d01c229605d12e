//! Merging on the consumer, without decoding records (docs/FORMAT.md, section 7): what a
//! delta does to the state's record count and digest, and which entries of one file
//! another file shadows (the overlay-over-base rule, for building merged files).

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::layout::IndexTable;
use crate::probe::{record_at, Found};

pub use crate::state::{unshadowed, Layer};
use crate::state::lookup;

/// What applying a delta changes, to be added to the current state's header values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeltaEffect {
    /// Upserts whose key was not live: they add a record.
    pub added: u64,
    /// Tombstones whose key was live: they remove one.
    pub removed: u64,
    /// Sum (mod 2**64) of xxh3-64 over the live records the delta's keys replace or delete.
    pub old_digest: u64,
    /// Sum (mod 2**64) of xxh3-64 over the delta's upserts.
    pub new_digest: u64,
}

impl DeltaEffect {
    /// The new state's record count and digest from the current ones; `None` if the
    /// count leaves `[0, 2**63)` (a delta that does not fit the state).
    pub fn apply(&self, record_count: u64, digest: u64) -> Option<(u64, u64)> {
        let count = record_count.checked_add(self.added)?.checked_sub(self.removed)?;
        let digest = digest.wrapping_sub(self.old_digest).wrapping_add(self.new_digest);
        (count <= i64::MAX as u64).then_some((count, digest))
    }
}

/// Keys probed together: their first reads are issued before any probe waits on one.
const GROUP: usize = 16;

/// Reads the home slot of every key in every layer, and drops what it read: a probe
/// into a large table misses the caches, and misses of independent reads overlap, so
/// the probes that follow find their first slots cached (a software prefetch, without
/// the `unsafe` of the prefetch intrinsics).
#[inline]
fn warm(layers: &[Layer<'_>], keys: impl Iterator<Item = u64>) {
    let mut sink = 0u64;
    for key in keys {
        for layer in layers {
            sink ^= layer.table.slot_key(layer.bytes, layer.table.first_of(layer.bytes, key)).unwrap_or(0);
        }
    }
    std::hint::black_box(sink);
}

/// Probes every key of `delta` in `current` (`[overlay, base]` or `[base]`, overlay
/// first: a hit there, record or tombstone, ends the probe) and sums what changes.
pub fn delta_effect(current: &[Layer<'_>], delta: &Layer<'_>) -> Result<DeltaEffect> {
    let mut effect = DeltaEffect::default();
    let entries: Vec<(usize, u64)> = delta
        .table
        .slots(delta.bytes)?
        .enumerate()
        .filter(|&(j, (key, _))| key != delta.table.empty && j + 1 < delta.table.slot_count)
        .map(|(j, (key, _))| (j, key))
        .collect();
    let mut old: Vec<(usize, u64, usize, usize)> = Vec::with_capacity(GROUP); // (layer, key, start, end)
    let mut buf = Vec::new();
    for group in entries.chunks(GROUP) {
        warm(current, group.iter().map(|&(_, key)| key));
        old.clear();
        for &(j, key) in group {
            let upsert = match record_at(delta.bytes, delta.table, j)? {
                Found::Record { start, end, .. } => {
                    effect.new_digest =
                        effect.new_digest.wrapping_add(xxh3_64(&delta.bytes[start..end]));
                    true
                }
                Found::Deleted => false,
                Found::Miss => return Err(Error::damaged(format!("delta slot {j} holds no entry"))),
            };
            let was_live = match lookup(current, key)? {
                Some(live) => {
                    old.push((live.file, key, live.start, live.end));
                    true
                }
                None => false,
            };
            match (upsert, was_live) {
                (true, false) => effect.added += 1,
                (false, true) => effect.removed += 1,
                _ => {}
            }
        }
        // The replaced records, hashed once all of the group's probes were issued.
        for &(i, key, start, end) in &old {
            let record = current[i].canonical(key, start, end, &mut buf)?;
            effect.old_digest = effect.old_digest.wrapping_add(xxh3_64(record));
        }
    }
    Ok(effect)
}

/// The value hash `index` posts each of `slots` under (0 where none): an index's
/// column of the records a merged file takes from this one.
///
/// Posting bounds are clipped into `[0, count]` and made ascending, and postings past
/// the slot table ignored, so a damaged index gives wrong hashes, never an error; a
/// slot outside the table is an error.
pub fn posted_hashes(
    bytes: &[u8],
    slot_count: usize,
    index: &IndexTable,
    slots: &[usize],
) -> Result<Vec<u64>> {
    let postings: Vec<u32> = index.postings(bytes)?.collect();
    let mut by_slot = vec![0u64; slot_count];
    let mut entries = index.entries(bytes)?;
    if let Some((mut hash, first)) = entries.next() {
        let mut from = (first as usize).min(postings.len());
        for (next_hash, next_first) in entries {
            let to = (next_first as usize).clamp(from, postings.len());
            for &slot in &postings[from..to] {
                if let Some(h) = by_slot.get_mut(slot as usize) {
                    *h = hash;
                }
            }
            (hash, from) = (next_hash, to);
        }
    }
    slots
        .iter()
        .map(|&j| by_slot.get(j).copied().ok_or_else(|| Error::damaged(format!("slot {j} outside the slot table"))))
        .collect()
}

/// Sum (mod 2**64) of xxh3-64 over the records `bytes[start..start + length]`: the state
/// digest of a set of records (FORMAT.md, 7).
pub fn digest_ranges(bytes: &[u8], ranges: impl IntoIterator<Item = (usize, usize)>) -> Result<u64> {
    let mut total = 0u64;
    for (start, length) in ranges {
        let record = start
            .checked_add(length)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| Error::damaged(format!("record [{start}, +{length}) outside its source")))?;
        total = total.wrapping_add(xxh3_64(record));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::build;

    fn digest<R: AsRef<[u8]>>(records: &[R]) -> u64 {
        records.iter().fold(0u64, |t, r| t.wrapping_add(xxh3_64(r.as_ref())))
    }

    fn record(key: i64, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        crate::msgpack::write_array_header(&mut out, 2);
        crate::msgpack::write_int(&mut out, key);
        crate::msgpack::write_str(&mut out, name);
        out
    }

    #[test]
    fn a_delta_over_a_base_counts_and_digests_its_changes() {
        let base = build(&[(1, "a", false), (2, "b", false), (3, "c", false)], 2, false, false);
        // 1 changed, 2 deleted, 4 added, 9 deleted but never there
        let delta = build(
            &[(1, "A", false), (2, "", true), (4, "d", false), (9, "", true)],
            2, true, false,
        );
        let layers = [Layer { bytes: &base.bytes, table: &base.table, codings: None }];
        let d = Layer { bytes: &delta.bytes, table: &delta.table, codings: None };
        let effect = delta_effect(&layers, &d).unwrap();
        assert_eq!(effect.added, 1);
        assert_eq!(effect.removed, 1);
        assert_eq!(effect.old_digest, digest(&[record(1, "a"), record(2, "b")]));
        assert_eq!(effect.new_digest, digest(&[record(1, "A"), record(4, "d")]));
        let before = digest(&[record(1, "a"), record(2, "b"), record(3, "c")]);
        let after = digest(&[record(1, "A"), record(3, "c"), record(4, "d")]);
        assert_eq!(effect.apply(3, before), Some((3, after)));
        assert_eq!(DeltaEffect { removed: 5, ..effect }.apply(3, before), None);
    }

    #[test]
    fn the_overlay_hides_the_base() {
        let base = build(&[(1, "a", false), (2, "b", false), (3, "c", false)], 2, false, false);
        // the overlay changed 1 and deleted 3
        let overlay = build(&[(1, "x", false), (3, "", true)], 2, true, false);
        let delta = build(&[(1, "y", false), (3, "z", false), (2, "", true)], 2, true, false);
        let layers = [
            Layer { bytes: &overlay.bytes, table: &overlay.table, codings: None },
            Layer { bytes: &base.bytes, table: &base.table, codings: None },
        ];
        let d = Layer { bytes: &delta.bytes, table: &delta.table, codings: None };
        let effect = delta_effect(&layers, &d).unwrap();
        assert_eq!((effect.added, effect.removed), (1, 1)); // 3 comes back, 2 goes
        assert_eq!(effect.old_digest, digest(&[record(1, "x"), record(2, "b")]));
        // what survives of the overlay under the delta: nothing (1 and 3 are in it)
        assert!(unshadowed(&d, &layers[0]).unwrap().is_empty());
        // of the base under the overlay: key 2 only
        let kept = unshadowed(&layers[0], &layers[1]).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(base.table.slot_key(&base.bytes, kept[0]), Some(2));
        assert_eq!(layers[1].occupied().unwrap().len(), 3);
    }

    #[test]
    fn damage_in_the_current_files_is_an_error() {
        let mut base = build(&[(1, "a", false), (2, "b", false)], 2, false, false);
        let delta = build(&[(1, "A", false)], 2, true, false);
        // key 1's record offset points past the heap
        let at = base.slot_at(1) + 8;
        base.word(at, u64::MAX);
        let layers = [Layer { bytes: &base.bytes, table: &base.table, codings: None }];
        let d = Layer { bytes: &delta.bytes, table: &delta.table, codings: None };
        assert!(delta_effect(&layers, &d).is_err());
        // a table with no empty slot to stop a probe
        let mut base = build(&[(1, "a", false)], 2, false, false);
        for j in 0..base.table.slot_count {
            let at = base.slot_at(j);
            base.word(at, 5);
        }
        let layers = [Layer { bytes: &base.bytes, table: &base.table, codings: None }];
        assert!(delta_effect(&layers, &d).is_err());
        assert!(unshadowed(&layers[0], &d).is_err());
    }

    #[test]
    fn posted_hashes_follow_the_postings() {
        let rows = [(1, "a", false), (2, "bb", false), (7, "", true), (4, "dddd", false)];
        let over = build(&rows, 2, true, true);
        let layer = Layer { bytes: &over.bytes, table: &over.table, codings: None };
        let slots = layer.occupied().unwrap();
        let index = &over.expected.indexes[0].1;
        let hashes = posted_hashes(&over.bytes, over.table.slot_count, index, &slots).unwrap();
        for (&j, &h) in slots.iter().zip(&hashes) {
            let start = over.table.record_offset(&over.bytes, j).unwrap();
            let end = over.table.record_offset(&over.bytes, j + 1).unwrap();
            // the test index posts each live record under (its length % 7 + 1)
            let tomb = over.table.slot_key(&over.bytes, j) == Some(7);
            assert_eq!(h, if tomb { 0 } else { (end - start) % 7 + 1 });
        }
        assert!(posted_hashes(&over.bytes, over.table.slot_count, index, &[usize::MAX]).is_err());
        // first postings past the count are clipped: no error, no posting read twice
        let mut d = build(&rows, 2, true, true);
        let at = d.expected.indexes[0].1.table_at + 16 * 3 + 8;
        d.word(at, u64::MAX);
        let index = &d.expected.indexes[0].1;
        assert!(posted_hashes(&d.bytes, d.table.slot_count, index, &slots).is_ok());
    }

    #[test]
    fn digest_ranges_sums_and_stays_inside() {
        let bytes = [1u8, 2, 3, 4, 5, crate::layout::TOMBSTONE];
        assert_eq!(digest_ranges(&bytes, [(0, 2), (2, 3)]).unwrap(), digest(&[vec![1u8, 2], vec![3, 4, 5]]));
        assert_eq!(digest_ranges(&bytes, []).unwrap(), 0);
        assert!(digest_ranges(&bytes, [(5, 2)]).is_err());
        assert!(digest_ranges(&bytes, [(usize::MAX, 2)]).is_err());
    }
}
