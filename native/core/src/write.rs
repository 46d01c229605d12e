//! Writing a state file (docs/FORMAT.md, section 4): where each entry goes, the empty
//! sentinel, the secondary indexes, and the file's bytes with their checksum.
//!
//! The writer works in two steps so that its caller can render the JSON header in
//! between: [`plan`] places the entries and builds the index tables (every number the
//! header holds comes from the [`Plan`]), then [`write_file`] writes prefix, header and
//! body to a temporary file and renames it into place. Offsets come from
//! [`crate::layout`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::layout::{
    align, body_offset, capacity_bits, BodyLayout, Home, Prefix, PREFIX_SIZE, SECTION_ALIGN,
};
use crate::records::Records;

/// The most entries a file may hold: slot numbers (postings are u32) stay below 2**32.
pub const MAX_ENTRIES: usize = 1 << 30;

/// Where the entries of one hash table go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub bits: u32,
    pub home: Home,
    /// The entries (indexes into the keys) in slot order: sorted by home, stable.
    pub order: Vec<u32>,
    /// The slot of `order[k]`; ascending.
    pub slots: Vec<u32>,
    /// Slots, overflow tail and terminal slot included.
    pub slot_count: usize,
    /// 1 + the largest distance of an entry from its home (1 for no entries).
    pub max_probe: usize,
    /// Total distance of the entries from their homes.
    pub displacement: u64,
}

/// Tables of more than `2**DIRECT_BITS` slots are counted and sorted one part at a time
/// (`2**PARTITION_BITS` parts by the top bits of the home): each step then touches a
/// cache-sized stretch of the table instead of one random place per key, and nothing
/// the size of the table is allocated.
const DIRECT_BITS: u32 = 15;
const PARTITION_BITS: u32 = 8;

/// The keys' `(home, index)` grouped by part (the top bits of the home), in input order
/// within a part.
struct Homes {
    entries: Vec<(u32, u32)>,
    /// Part `p` is `entries[bounds[p]..bounds[p + 1]]`.
    bounds: Vec<usize>,
    /// Homes per part.
    part_size: usize,
}

impl Homes {
    fn new(keys: &[u64], home: Home, bits: u32, direct_bits: u32) -> Homes {
        let part_bits = if bits <= direct_bits.max(PARTITION_BITS) { 0 } else { PARTITION_BITS };
        let shift = bits - part_bits;
        let mut bounds = vec![0usize; (1 << part_bits) + 1];
        for &k in keys {
            bounds[(home.slot(k, bits) >> shift) + 1] += 1;
        }
        for p in 1..bounds.len() {
            bounds[p] += bounds[p - 1];
        }
        let mut fill = bounds.clone();
        let mut entries = vec![(0u32, 0u32); keys.len()];
        for (i, &k) in keys.iter().enumerate() {
            let h = home.slot(k, bits); // < 2**31: bits <= 31 for MAX_ENTRIES
            let f = &mut fill[h >> shift];
            entries[*f] = (h as u32, i as u32);
            *f += 1;
        }
        Homes { entries, bounds, part_size: 1 << shift }
    }

    /// Calls `each(part start in the sorted order, first home, entries)` per part, with
    /// `counts` holding how many of the part's entries have each of its homes.
    fn by_part(&self, counts: &mut [u32], mut each: impl FnMut(usize, usize, &[(u32, u32)], &mut [u32])) {
        for (p, w) in self.bounds.windows(2).enumerate() {
            let (part, base) = (&self.entries[w[0]..w[1]], p * self.part_size);
            counts.fill(0);
            for &(h, _) in part {
                counts[h as usize - base] += 1;
            }
            each(w[0], base, part, counts);
        }
    }
}

/// Linear probing in home order: each entry takes the first free slot at or after its
/// home, so the entries of one home sit side by side from `max(home, next free slot)`.
#[derive(Default)]
struct Walk {
    /// Total and largest distance of an entry from its home.
    total: u64,
    largest: u64,
    /// The slot after the last entry.
    free: usize,
}

impl Walk {
    /// Places `c` entries of home `h`; returns the first one's slot.
    #[inline(always)]
    fn step(&mut self, h: usize, c: usize) -> usize {
        let start = h.max(self.free);
        if c > 0 {
            let (c64, lead) = (c as u64, (start - h) as u64);
            self.total += c64 * lead + c64 * (c64 - 1) / 2;
            self.largest = self.largest.max(lead + c64 - 1);
            self.free = start + c;
        }
        start
    }
}

/// Total displacement of keys with these homes.
fn displacement(homes: &Homes) -> u64 {
    let mut walk = Walk::default();
    homes.by_part(&mut vec![0u32; homes.part_size], |_, base, _, counts| {
        for (off, &c) in counts.iter().enumerate() {
            walk.step(base + off, c as usize);
        }
    });
    walk.total
}

/// Places `keys` with `home`, given their homes: a counting sort by home, stable (keys
/// of one home keep their input order), one part at a time.
fn place_with(keys: &[u64], home: Home, bits: u32, homes: Homes) -> Placement {
    let n = keys.len();
    let mut order = vec![0u32; n];
    let mut slots = vec![0u32; n];
    let mut walk = Walk::default();
    homes.by_part(&mut vec![0u32; homes.part_size], |first, base, part, counts| {
        // counts become where each home's entries start in `order`
        let mut at = first;
        for (off, c) in counts.iter_mut().enumerate() {
            let count = *c as usize;
            let start = walk.step(base + off, count);
            for (k, slot) in slots[at..at + count].iter_mut().enumerate() {
                *slot = (start + k) as u32;
            }
            *c = at as u32;
            at += count;
        }
        for &(h, i) in part {
            let c = &mut counts[h as usize - base];
            order[*c as usize] = i;
            *c += 1;
        }
    });
    Placement {
        bits,
        home,
        order,
        slots,
        slot_count: walk.free.max(1usize << bits) + 1,
        max_probe: walk.largest as usize + 1,
        displacement: walk.total,
    }
}

fn check_size(n: usize) -> Result<()> {
    if n > MAX_ENTRIES {
        return Err(Error::damaged(format!("{n} entries: a state file holds at most {MAX_ENTRIES}")));
    }
    Ok(())
}

/// Places int keys (their two's complement bits) with whichever home function moves
/// them less in total: `low`, then `fib` unless `low` moved none; `low` on a tie
/// (FORMAT.md, 4.5).
pub fn place_int(keys: &[u64]) -> Result<Placement> {
    place_int_with(keys, DIRECT_BITS)
}

fn place_int_with(keys: &[u64], direct_bits: u32) -> Result<Placement> {
    check_size(keys.len())?;
    let bits = capacity_bits(keys.len());
    let low = Homes::new(keys, Home::Low, bits, direct_bits);
    let low_total = displacement(&low);
    if low_total == 0 {
        return Ok(place_with(keys, Home::Low, bits, low));
    }
    let fib = Homes::new(keys, Home::Fib, bits, direct_bits);
    Ok(if displacement(&fib) < low_total {
        drop(low);
        place_with(keys, Home::Fib, bits, fib)
    } else {
        drop(fib);
        place_with(keys, Home::Low, bits, low)
    })
}

/// Places hashed keys: home = the hash's top bits.
pub fn place_hashed(keys: &[u64]) -> Result<Placement> {
    place_hashed_with(keys, DIRECT_BITS)
}

fn place_hashed_with(keys: &[u64], direct_bits: u32) -> Result<Placement> {
    check_size(keys.len())?;
    let bits = capacity_bits(keys.len());
    let homes = Homes::new(keys, Home::Xxh3, bits, direct_bits);
    Ok(place_with(keys, Home::Xxh3, bits, homes))
}

/// The smallest value at or after `start` (wrapping: the order is that of
/// `value - start`) that no key equals: the empty-slot sentinel. Of `n + 1` candidates
/// one is free. Int keys start at `i64::MIN` (as bits), hashes at 0.
pub fn free_sentinel(keys: impl IntoIterator<Item = u64>, n: usize, start: u64) -> u64 {
    let mut taken = vec![0u64; n / 64 + 1];
    for k in keys {
        let d = k.wrapping_sub(start);
        if d <= n as u64 {
            taken[(d / 64) as usize] |= 1 << (d % 64);
        }
    }
    let (word, bits) = taken
        .iter()
        .enumerate()
        .find(|(_, w)| **w != u64::MAX)
        .map(|(i, w)| (i, *w))
        .expect("n + 1 candidates, n keys");
    start.wrapping_add((word * 64) as u64 + (!bits).trailing_zeros() as u64)
}

/// A hasher for value hashes, which xxh3 spread already: a folded multiply.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }
    fn write_u64(&mut self, x: u64) {
        let m = (x as u128).wrapping_mul(crate::layout::FIB as u128);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// One secondary index (FORMAT.md, 4.7): its value table and postings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexTable {
    pub bits: u32,
    pub empty: u64,
    /// Distinct value hashes.
    pub values: usize,
    /// `[value hash, first posting]` per entry, terminal entry included.
    pub entries: Vec<u64>,
    /// Primary slots, grouped by value in table order, ascending within a group.
    pub postings: Vec<u32>,
}

impl IndexTable {
    pub fn slots(&self) -> usize {
        self.entries.len() / 2
    }
}

/// The index over live entries with value hash `hashes[e]` at primary slot `slots[e]`,
/// given in ascending slot order.
pub fn index_table(hashes: &[u64], slots: &[u32]) -> IndexTable {
    assert_eq!(hashes.len(), slots.len(), "a hash per slot");
    // Group the entries by value (typically few values: a small map).
    let mut group_of: HashMap<u64, u32, BuildHasherDefault<Spread>> = HashMap::default();
    let mut distinct: Vec<u64> = Vec::new();
    let groups: Vec<u32> = hashes
        .iter()
        .map(|&h| {
            *group_of.entry(h).or_insert_with(|| {
                distinct.push(h);
                (distinct.len() - 1) as u32
            })
        })
        .collect();
    drop(group_of);
    // Values in ascending order; rank[g] is group g's place among them.
    let mut by_value: Vec<u32> = (0..distinct.len() as u32).collect();
    by_value.sort_unstable_by_key(|&g| distinct[g as usize]);
    let mut rank = vec![0u32; distinct.len()];
    for (r, &g) in by_value.iter().enumerate() {
        rank[g as usize] = r as u32;
    }
    let uniq: Vec<u64> = by_value.iter().map(|&g| distinct[g as usize]).collect();
    let mut counts = vec![0usize; uniq.len()];
    for &g in &groups {
        counts[rank[g as usize] as usize] += 1;
    }
    // The sorted hashes' homes ascend: each takes the first free entry from its home.
    let bits = capacity_bits(uniq.len());
    let mut pos = Vec::with_capacity(uniq.len());
    let mut free = 0usize;
    for &h in &uniq {
        let p = Home::Xxh3.slot(h, bits).max(free);
        pos.push(p);
        free = p + 1;
    }
    let size = free.max(1usize << bits) + 1;
    let empty = free_sentinel(uniq.iter().copied(), uniq.len(), 0);
    let mut entries = vec![empty; 2 * size];
    let mut per_entry = vec![0usize; size];
    for (r, &p) in pos.iter().enumerate() {
        entries[2 * p] = uniq[r];
        per_entry[p] = counts[r];
    }
    let mut first = 0usize;
    for (j, &c) in per_entry.iter().enumerate() {
        entries[2 * j + 1] = first as u64;
        first += c;
    }
    // Postings: a counting sort by value rank, the slots kept in their ascending order.
    let mut cursor: Vec<usize> = pos.iter().map(|&p| entries[2 * p + 1] as usize).collect();
    let mut postings = vec![0u32; slots.len()];
    for (&g, &slot) in groups.iter().zip(slots) {
        let c = &mut cursor[rank[g as usize] as usize];
        postings[*c] = slot;
        *c += 1;
    }
    IndexTable { bits, empty, values: uniq.len(), entries, postings }
}

/// Everything about a file but its header: every number the header holds.
#[derive(Debug, Clone)]
pub struct Plan {
    pub placement: Placement,
    /// The slot table's empty sentinel (int keys: signed; hashed keys: unsigned).
    pub empty: u64,
    pub tombstones: usize,
    pub indexes: Vec<IndexTable>,
    pub layout: BodyLayout,
}

/// Plans a file of `records` with slot keys `keys` (int keys as their bits when
/// `int_keys`, else xxh3 hashes), tombstones where `tombstone[i] != 0`, and an index per
/// entry of `index_hashes` (a value hash per record; tombstones' are ignored).
pub fn plan(
    keys: &[u64],
    int_keys: bool,
    records: &Records<'_>,
    tombstone: Option<&[u8]>,
    index_hashes: &[&[u64]],
) -> Result<Plan> {
    let n = keys.len();
    if records.len() != n
        || tombstone.is_some_and(|t| t.len() != n)
        || index_hashes.iter().any(|h| h.len() != n)
    {
        return Err(Error::damaged(format!(
            "{n} keys and records, tombstones or index values of other lengths"
        )));
    }
    let placement = if int_keys { place_int(keys)? } else { place_hashed(keys)? };
    let empty = free_sentinel(keys.iter().copied(), n, if int_keys { i64::MIN as u64 } else { 0 });
    let heap_length: usize = (0..n).map(|i| records.length(i)).sum();
    let live = |i: u32| tombstone.is_none_or(|t| t[i as usize] == 0);
    let tombstones = tombstone.map_or(0, |t| t.iter().filter(|&&b| b != 0).count());
    let mut indexes = Vec::with_capacity(index_hashes.len());
    if !index_hashes.is_empty() {
        let (live_slots, live_entries): (Vec<u32>, Vec<u32>) = placement
            .order
            .iter()
            .zip(&placement.slots)
            .filter(|(&i, _)| live(i))
            .map(|(&i, &s)| (s, i))
            .unzip();
        for hashes in index_hashes {
            let of_live: Vec<u64> = live_entries.iter().map(|&i| hashes[i as usize]).collect();
            indexes.push(index_table(&of_live, &live_slots));
        }
    }
    let sections: Vec<(usize, usize)> = indexes.iter().map(|t| (t.slots(), t.postings.len())).collect();
    let layout = BodyLayout::new(placement.slot_count, heap_length, &sections);
    Ok(Plan { placement, empty, tombstones, indexes, layout })
}

/// Bytes gathered before each write (and checksum update).
pub(crate) const CHUNK: usize = 4 << 20;

/// The body's bytes, checksummed as they go to the file in large writes.
pub(crate) struct Out {
    pub(crate) file: File,
    pub(crate) buf: Vec<u8>,
    pub(crate) hasher: Xxh3,
}

impl Out {
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.hasher.update(&self.buf);
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > CHUNK {
            self.flush()?;
            if bytes.len() > CHUNK {
                self.hasher.update(bytes);
                return self.file.write_all(bytes);
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn word(&mut self, w: u64) -> io::Result<()> {
        self.put(&w.to_le_bytes())
    }

    pub(crate) fn zeros(&mut self, n: usize) -> io::Result<()> {
        self.put(&vec![0u8; n])
    }
}

/// Writes the planned file with `header` (the JSON header's bytes) at `tmp`, then
/// renames it to `target`; on failure removes `tmp`. `keys` and `records` are the ones
/// the plan was made from. Returns the file's size.
pub fn write_file(
    plan: &Plan,
    keys: &[u64],
    records: &Records<'_>,
    header: &[u8],
    tmp: &Path,
    target: &Path,
) -> io::Result<u64> {
    let result = write_tmp(plan, keys, records, header, tmp).and_then(|size| {
        fs::rename(tmp, target)?;
        Ok(size)
    });
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn write_tmp(plan: &Plan, keys: &[u64], records: &Records<'_>, header: &[u8], tmp: &Path) -> io::Result<u64> {
    let header_length = u32::try_from(header.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "state header over 4 GiB"))?;
    let body = body_offset(header.len());
    let (p, layout) = (&plan.placement, &plan.layout);
    // Owner-only, as every file feedkit creates (blobs.owner_only).
    let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(tmp)?;
    let mut out = Out { file, buf: Vec::with_capacity(CHUNK), hasher: Xxh3::new() };
    out.file.write_all(&[0u8; PREFIX_SIZE])?; // written last, once the checksum is known
    out.put(header)?;
    out.zeros(body - PREFIX_SIZE - header.len())?;
    // Slot table: records in slot order, each slot's offset where its record starts.
    let mut at = (body + layout.heap) as u64;
    let mut next = p.slots.iter().zip(&p.order).peekable();
    for j in 0..p.slot_count {
        match next.peek() {
            Some(&(&slot, &i)) if slot as usize == j => {
                out.word(keys[i as usize])?;
                out.word(at)?;
                at += records.length(i as usize) as u64;
                next.next();
            }
            _ => {
                out.word(plan.empty)?;
                out.word(at)?;
            }
        }
    }
    for &i in &p.order {
        out.put(records.get(i as usize))?;
    }
    out.zeros(align(layout.heap_length, SECTION_ALIGN) - layout.heap_length)?;
    for index in &plan.indexes {
        for &w in &index.entries {
            out.word(w)?;
        }
        for &s in &index.postings {
            out.put(&s.to_le_bytes())?;
        }
        let bytes = index.postings.len() * 4;
        out.zeros(align(bytes, SECTION_ALIGN) - bytes)?;
    }
    out.flush()?;
    let size = (body + layout.body_length) as u64;
    let digest = out.hasher.digest128().to_be_bytes();
    out.file.seek(SeekFrom::Start(0))?;
    out.file.write_all(&Prefix::encode(header_length, body as u64, size, &digest))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Table, SLOT_SIZE};
    use crate::probe::{probe, Found};

    /// Inserting the entries one by one in (home, input) order, as FORMAT.md says.
    fn reference(keys: &[u64], home: Home, bits: u32) -> (Vec<u32>, Vec<u32>) {
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_by_key(|&i| home.slot(keys[i as usize], bits)); // stable
        let mut used = vec![false; (1 << bits) + keys.len() + 1];
        let slots = order
            .iter()
            .map(|&i| {
                let mut j = home.slot(keys[i as usize], bits);
                while used[j] {
                    j += 1;
                }
                used[j] = true;
                j as u32
            })
            .collect();
        (order, slots)
    }

    /// A small deterministic generator (splitmix64).
    fn keys(seed: u64, n: usize, spread: u64) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                let z = z ^ (z >> 31);
                if spread == 0 { z } else { z % spread }
            })
            .collect()
    }

    #[test]
    fn placement_is_stable_linear_probing_without_wrap() {
        // direct_bits 8: tables past 2**8 slots take the partitioned path
        for (seed, n, direct_bits) in [(1, 0, 15), (2, 1, 15), (3, 7, 15), (4, 100, 15), (5, 1000, 15),
                                       (6, 1000, 8), (7, 5000, 8), (8, 5000, 3)] {
            let hashed = keys(seed, n, 0);
            let p = place_hashed_with(&hashed, direct_bits).unwrap();
            assert_eq!((p.order.clone(), p.slots.clone()), reference(&hashed, Home::Xxh3, p.bits));
            assert_eq!(p.bits, capacity_bits(n));
            let last = p.slots.last().map_or(0, |&s| s as usize + 1);
            assert_eq!(p.slot_count, last.max(1 << p.bits) + 1);
            let dist: Vec<u64> = p.order.iter().zip(&p.slots)
                .map(|(&i, &s)| s as u64 - Home::Xxh3.slot(hashed[i as usize], p.bits) as u64)
                .collect();
            assert_eq!(p.displacement, dist.iter().sum::<u64>());
            assert_eq!(p.max_probe as u64, dist.iter().max().map_or(1, |d| d + 1));
        }
    }

    #[test]
    fn ties_keep_the_input_order() {
        // four hashes with one home: they take slots 0..4 in input order
        let p = place_hashed(&[5, 3, 5, 1]).unwrap();
        assert_eq!((p.order, p.slots), (vec![0, 1, 2, 3], vec![0, 1, 2, 3]));
        // multiples of 8 share low home 0 (and fib spreads them): the order follows the input
        let keys = [16, 8, 0, 24, 40, 32, 48, 56, 64];
        let p = place_int(&keys).unwrap();
        assert_eq!((p.order.clone(), p.slots.clone()), reference(&keys, p.home, p.bits));
        let low = place_with(&keys, Home::Low, 3, Homes::new(&keys, Home::Low, 3, 15));
        assert_eq!(low.order, (0..9).collect::<Vec<u32>>());
        assert_eq!(low.slots, (0..9).collect::<Vec<u32>>());
        assert_eq!((low.slot_count, low.max_probe, low.displacement), (10, 9, 36));
        // with 32 slots, homes 0, 8, 16, 24 take three or two keys each, in input order
        let low = place_with(&keys, Home::Low, 5, Homes::new(&keys, Home::Low, 5, 15));
        assert_eq!(low.order, vec![2, 5, 8, 1, 4, 0, 6, 3, 7]);
        assert_eq!(low.slots, vec![0, 1, 2, 8, 9, 16, 17, 24, 25]);
    }

    #[test]
    fn int_keys_take_the_home_function_that_moves_them_less() {
        // consecutive keys: `low` places them all at home
        let seq: Vec<u64> = (0..1000u64).map(|k| k.wrapping_sub(500)).collect();
        let p = place_int(&seq).unwrap();
        assert_eq!((p.home, p.displacement, p.max_probe), (Home::Low, 0, 1));
        // multiples of the capacity all share a low home: `fib` spreads them
        let strided: Vec<u64> = (0..1000u64).map(|k| k << 11).collect();
        for direct_bits in [15, 4] {
            let p = place_int_with(&strided, direct_bits).unwrap();
            assert_eq!(p.home, Home::Fib);
            assert_eq!((p.order.clone(), p.slots.clone()), reference(&strided, Home::Fib, p.bits));
        }
        // random keys with the partitioned path: the same placement as the direct one
        let random = keys(9, 3000, 0);
        assert_eq!(place_int_with(&random, 4).unwrap(), place_int_with(&random, 15).unwrap());
        // a tie goes to `low`: two keys, both placements move one of them by one slot
        let mut tie = None;
        for a in 0..64u64 {
            for b in 0..64u64 {
                let (ka, kb) = (a, b * 8 + (a % 8));
                if ka == kb {
                    continue;
                }
                if displacement(&Homes::new(&[ka, kb], Home::Fib, 3, 15)) == 1 {
                    tie = Some([ka, kb]);
                }
            }
        }
        let tie = tie.expect("a pair colliding under both");
        assert_eq!(place_int(&tie).unwrap().home, Home::Low);
        // the empty input: no entries, a table of 9 slots
        let p = place_int(&[]).unwrap();
        assert_eq!((p.bits, p.slot_count, p.max_probe, p.home), (3, 9, 1, Home::Low));
    }

    #[test]
    fn sentinels_are_the_first_free_value() {
        let min = i64::MIN as u64;
        assert_eq!(free_sentinel([], 0, min), min);
        assert_eq!(free_sentinel([5, 7], 2, min), min);
        assert_eq!(free_sentinel([min, min + 1, 3], 3, min), min + 2);
        assert_eq!(free_sentinel([min + 1, min], 2, min), min + 2);
        assert_eq!(free_sentinel([0, 1, 2, 3], 4, 0), 4);
        assert_eq!(free_sentinel([1, 0, u64::MAX], 3, 0), 2);
        // 64 taken values spill into the next word of the bitmap
        assert_eq!(free_sentinel(0..64, 64, 0), 64);
        assert_eq!(free_sentinel((0..130).filter(|&k| k != 100), 129, 0), 100);
    }

    #[test]
    fn index_tables_group_postings_by_value() {
        // values by slot: slot 1 -> 30, 2 -> 10, 4 -> 30, 7 -> 20, 9 -> 10
        let t = index_table(&[30, 10, 30, 20, 10], &[1, 2, 4, 7, 9]);
        assert_eq!((t.bits, t.values, t.empty, t.slots()), (3, 3, 0, 9));
        // homes are the top 3 bits: all 0 -> entries 0, 1, 2 in ascending value order
        let firsts: Vec<u64> = t.entries.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(&t.entries[..6], &[10, 0, 20, 2, 30, 3]);
        assert_eq!(firsts, vec![0, 2, 3, 5, 5, 5, 5, 5, 5]);
        assert_eq!(t.postings, vec![2, 9, 7, 1, 4]);
        // a value equal to 0 moves the sentinel; top-bit homes spread the values
        let top = u64::MAX;
        let t = index_table(&[0, top, 0], &[3, 5, 6]);
        assert_eq!((t.empty, t.values), (1, 2));
        assert_eq!((t.entries[0], t.entries[14], t.entries[16]), (0, top, 1));
        assert_eq!(t.postings, vec![3, 6, 5]);
        let none = index_table(&[], &[]);
        assert_eq!((none.values, none.slots(), none.postings.len()), (0, 9, 0));
        assert!(none.entries.iter().all(|&w| w == 0));
    }

    #[test]
    fn a_written_file_is_found_by_the_probe() {
        let dir = std::env::temp_dir().join(format!("feedkit-write-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let keys: Vec<u64> = vec![42, (-7i64) as u64, 3, 11, i64::MIN as u64];
        let heap: &[u8] = b"\x91\x2a\x91\xf9\xc0\x91\x0b\x91\xd3";
        let starts = [0i64, 2, 4, 5, 7];
        let lengths = [2i64, 2, 1, 2, 2];
        let tomb = [0u8, 0, 1, 0, 0];
        let records = Records::new(vec![heap], None, &starts, &lengths).unwrap();
        let hashes: Vec<u64> = vec![9, 9, 0, 8, 9];
        let plan = plan(&keys, true, &records, Some(&tomb), &[&hashes]).unwrap();
        assert_eq!((plan.tombstones, plan.empty), (1, i64::MIN as u64 + 1));
        assert_eq!(plan.indexes[0].postings.len(), 4);
        let header = b"{}";
        let (tmp, target) = (dir.join(".t.tmp"), dir.join("t.state"));
        let size = write_file(&plan, &keys, &records, header, &tmp, &target).unwrap();
        assert!(!tmp.exists());
        let bytes = fs::read(&target).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let prefix = Prefix::parse(&bytes).unwrap();
        let mut hasher = Xxh3::new();
        hasher.update(&bytes[PREFIX_SIZE..]);
        assert_eq!(prefix.digest, hasher.digest128().to_be_bytes());
        assert_eq!(&bytes[PREFIX_SIZE..PREFIX_SIZE + 2], header);
        let p = &plan.placement;
        let slots_at = prefix.body_offset;
        let heap_start = slots_at + p.slot_count * SLOT_SIZE;
        let table = Table::new(bytes.len(), slots_at, p.slot_count, p.bits, p.home, plan.empty,
                               heap_start, heap_start + 9, true).unwrap();
        for (i, &k) in keys.iter().enumerate() {
            let found = probe(&bytes, &table, k).unwrap();
            if tomb[i] == 1 {
                assert_eq!(found, Found::Deleted);
            } else {
                let Found::Record { start, end, .. } = found else { panic!("{k} not found") };
                assert_eq!(&bytes[start..end], records.get(i));
            }
        }
        assert_eq!(probe(&bytes, &table, 5).unwrap(), Found::Miss);
        fs::remove_dir_all(&dir).unwrap();
    }
}
