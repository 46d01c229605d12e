//! The byte layout of formats 1 and 2, in one place (docs/FORMAT.md, sections 4 and 10).
//!
//! Every offset and size the crate reads a state file with is defined here; the other
//! modules take a [`Table`] and never compute an offset of their own.

use crate::error::{Error, Result};

/// `FEEDKIT\0`, the first eight bytes of every state file.
pub const MAGIC: &[u8; 8] = b"FEEDKIT\0";
/// The format of overlays, and of bases a feed on format 1 writes.
pub const FORMAT_VERSION: u32 = 1;
/// The compact format of bases (FORMAT.md, 10): sorted entries, buckets, coded records.
pub const FORMAT_COMPACT: u32 = 2;
/// The fixed prefix: magic, format, header length, body offset, file size, xxh3-128.
pub const PREFIX_SIZE: usize = 48;
/// A slot: the slot key (8 bytes) then the absolute offset of its record (8 bytes).
pub const SLOT_SIZE: usize = 16;
/// The first byte of a tombstone (msgpack nil); a record starts with an array header.
pub const TOMBSTONE: u8 = 0xC0;
/// The body starts at a multiple of this.
pub const BODY_ALIGN: usize = 64;

/// Records are msgpack arrays (section 4.6): a fixarray header for fewer than 16
/// columns, else array16 (`DC` + big-endian u16).
pub const FIXARRAY: u8 = 0x90;
pub const ARRAY16: u8 = 0xDC;

/// The header every record of a `width`-column schema starts with, and its length;
/// `None` for widths format 1 cannot hold (array32: more than 65,535 columns).
pub fn record_header(width: usize) -> Option<([u8; 3], usize)> {
    match width {
        0..=15 => Some(([FIXARRAY | width as u8, 0, 0], 1)),
        16..=0xFFFF => Some(([ARRAY16, (width >> 8) as u8, width as u8], 3)),
        _ => None,
    }
}

/// Reads a little-endian u64 at `at`, or `None` past the end of `bytes`.
#[inline(always)]
pub fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(word.try_into().ok()?))
}

/// Reads a little-endian u32 at `at`, or `None` past the end of `bytes`.
#[inline(always)]
pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// The fixed prefix of a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub format: u32,
    pub header_length: usize,
    pub body_offset: usize,
    pub file_size: usize,
    pub digest: [u8; 16],
}

impl Prefix {
    /// Parses and checks the prefix of a file of `bytes.len()` bytes.
    pub fn parse(bytes: &[u8]) -> Result<Prefix> {
        let head = bytes
            .get(..PREFIX_SIZE)
            .ok_or_else(|| Error::damaged("not a feedkit state file (too short)"))?;
        if &head[..8] != MAGIC {
            return Err(Error::damaged("not a feedkit state file (bad magic)"));
        }
        let format = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if format != FORMAT_VERSION && format != FORMAT_COMPACT {
            return Err(Error::damaged(format!(
                "state format {format}, this feedkit reads {FORMAT_VERSION} and {FORMAT_COMPACT}"
            )));
        }
        let header_length = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        let body_offset = u64_at(head, 16).expect("in the prefix");
        let file_size = u64_at(head, 24).expect("in the prefix");
        let size = bytes.len();
        if file_size != size as u64 || body_offset > size as u64 || PREFIX_SIZE + header_length > size {
            return Err(Error::damaged(format!(
                "truncated state file ({size} of {file_size} bytes)"
            )));
        }
        let body_offset = body_offset as usize;
        if body_offset != align(PREFIX_SIZE + header_length, BODY_ALIGN) {
            return Err(Error::damaged(format!(
                "body offset {body_offset} does not follow a {header_length}-byte header"
            )));
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&head[32..48]);
        Ok(Prefix { format, header_length, body_offset, file_size: size, digest })
    }
}

/// Rounds `n` up to a multiple of `to` (a power of two).
pub fn align(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

/// How a slot key picks its home slot (the header's `slots.hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// int keys: the low `bits` bits.
    Low,
    /// int keys: the top `bits` bits of the key times the Fibonacci constant.
    Fib,
    /// hashed keys: the top `bits` bits of the xxh3-64 hash.
    Xxh3,
}

impl Home {
    /// The home slot of `slot_key` in a table of `2**bits` slots (`bits <= 62`).
    #[inline(always)]
    pub fn slot(self, slot_key: u64, bits: u32) -> usize {
        let shift = 64 - bits; // bits <= 62: no overflow
        let home = match self {
            Home::Low => slot_key & ((1u64 << bits) - 1),
            Home::Fib => slot_key.wrapping_mul(FIB).checked_shr(shift).unwrap_or(0),
            Home::Xxh3 => slot_key.checked_shr(shift).unwrap_or(0),
        };
        home as usize
    }

    /// The header's name for it (`slots.hash`).
    pub fn name(self) -> &'static str {
        match self {
            Home::Low => "low",
            Home::Fib => "fib",
            Home::Xxh3 => "xxh3",
        }
    }

    pub fn from_name(name: &str) -> Result<Home> {
        match name {
            "low" => Ok(Home::Low),
            "fib" => Ok(Home::Fib),
            "xxh3" => Ok(Home::Xxh3),
            other => Err(Error::damaged(format!("unknown slot hash {other:?}"))),
        }
    }
}

/// The multiplier of the `fib` home function.
pub const FIB: u64 = 0x9E37_79B9_7F4A_7C15;

/// Where one file's slot table and heap lie, checked against the file's size.
///
/// Built from the header's numbers; whatever they say, every read through a `Table`
/// stays inside the file (reads are bounds-checked, never indexed blindly).
#[derive(Debug, Clone)]
pub struct Table {
    /// Absolute offset of slot 0.
    pub slots_at: usize,
    /// Slots, overflow tail and terminal slot included.
    pub slot_count: usize,
    /// The capacity is `2**bits`.
    pub bits: u32,
    pub home: Home,
    /// The empty-slot sentinel, as the slot's 64 bits.
    pub empty: u64,
    /// Absolute offsets of the heap: `[heap_start, heap_end)`.
    pub heap_start: usize,
    pub heap_end: usize,
    /// An overlay: its records may be tombstones.
    pub overlay: bool,
    /// Bytes per slot (format 1: [`SLOT_SIZE`]) or entry (format 2: 12 or 16).
    pub entry_size: usize,
    /// Bytes of a slot's or entry's record offset after its key: 8, or 4 in a format-2
    /// file whose heap is under 4 GiB.
    pub offset_bytes: usize,
    /// What record offsets are relative to: 0 (format 1: absolute) or the heap start.
    pub offset_base: u64,
    /// Format 2: the bucket directory over the sorted entries (None: linear probing).
    pub buckets: Option<Buckets>,
}

/// Format 2's bucket directory (FORMAT.md, 10.3): `count + 1` u32 entry numbers at
/// `at`; the entries of bucket `b` are `[dir[b], dir[b + 1])`, at most `max` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub at: usize,
    pub count: usize,
    pub max: usize,
}

/// Format 2's bucket of a mixed key among `count` buckets: the high word of
/// `mixed * count`, so buckets ascend with the mixed key.
#[inline(always)]
pub fn bucket_of(mixed: u64, count: usize) -> usize {
    ((mixed as u128 * count as u128) >> 64) as usize
}

/// Format 2's mixed key: int keys times the Fibonacci constant (a bijection), hashes
/// as they are.
#[inline(always)]
pub fn mix(home: Home, slot_key: u64) -> u64 {
    match home {
        Home::Xxh3 => slot_key,
        _ => slot_key.wrapping_mul(FIB),
    }
}

impl Table {
    /// Checks that the sections lie inside a file of `file_size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        file_size: usize,
        slots_at: usize,
        slot_count: usize,
        bits: u32,
        home: Home,
        empty: u64,
        heap_start: usize,
        heap_end: usize,
        overlay: bool,
    ) -> Result<Table> {
        if bits > 62 {
            return Err(Error::damaged(format!("slot table of 2**{bits} slots")));
        }
        let slots_end = slot_count
            .checked_mul(SLOT_SIZE)
            .and_then(|n| n.checked_add(slots_at))
            .ok_or_else(|| Error::damaged("slot table size overflows"))?;
        if slot_count < (1usize << bits) + 1 || slots_end > file_size {
            return Err(Error::damaged(format!(
                "slot table of {slot_count} slots (2**{bits} + 1 at least) does not fit the file"
            )));
        }
        if heap_start > heap_end || heap_end > file_size {
            return Err(Error::damaged("heap outside the file"));
        }
        Ok(Table {
            slots_at, slot_count, bits, home, empty, heap_start, heap_end, overlay,
            entry_size: SLOT_SIZE, offset_bytes: 8, offset_base: 0, buckets: None,
        })
    }

    /// A format-2 base's entries (`entry_count` = records + the terminal entry, of
    /// `entry_size` bytes: 12 or 16) and bucket directory, checked against the file's
    /// size. `home` is the mix: `Fib` (int keys) or `Xxh3` (hashed keys).
    #[allow(clippy::too_many_arguments)]
    pub fn sorted(
        file_size: usize,
        entries_at: usize,
        entry_count: usize,
        entry_size: usize,
        home: Home,
        empty: u64,
        buckets: Buckets,
        heap_start: usize,
        heap_end: usize,
    ) -> Result<Table> {
        if entry_size != 12 && entry_size != 16 {
            return Err(Error::damaged(format!("entries of {entry_size} bytes")));
        }
        if home == Home::Low {
            return Err(Error::damaged("format 2 mixes int keys with fib, not low"));
        }
        let fits = |at: usize, n: usize, size: usize| {
            n.checked_mul(size).and_then(|b| b.checked_add(at)).is_some_and(|end| end <= file_size)
        };
        if entry_count == 0 || !fits(entries_at, entry_count, entry_size) {
            return Err(Error::damaged("the entries do not fit the file"));
        }
        if buckets.count == 0 || !buckets.count.checked_add(1).is_some_and(|n| fits(buckets.at, n, 4)) {
            return Err(Error::damaged("the bucket directory does not fit the file"));
        }
        if heap_start > heap_end || heap_end > file_size {
            return Err(Error::damaged("heap outside the file"));
        }
        Ok(Table {
            slots_at: entries_at, slot_count: entry_count, bits: 0, home, empty, heap_start,
            heap_end, overlay: false, entry_size, offset_bytes: entry_size - 8,
            offset_base: heap_start as u64, buckets: Some(buckets),
        })
    }

    /// Format 2: entries `[from, to)` of the bucket `slot_key` falls in, clipped into the
    /// entries and to `max` of them (so a damaged directory costs a bounded scan).
    #[inline(always)]
    pub fn bucket_range(&self, bytes: &[u8], b: &Buckets, slot_key: u64) -> (usize, usize) {
        let k = bucket_of(mix(self.home, slot_key), b.count);
        let dir = |i: usize| u32_at(bytes, b.at + 4 * i).unwrap_or(0) as usize;
        let last = self.slot_count - 1; // the terminal entry holds no record
        let to = dir(k + 1).min(last);
        let from = dir(k).min(to);
        (from, to.min(from + b.max))
    }

    /// The slot or entry a lookup of `slot_key` reads first (for reading ahead).
    #[inline(always)]
    pub fn first_of(&self, bytes: &[u8], slot_key: u64) -> usize {
        match &self.buckets {
            None => self.home_of(slot_key),
            Some(b) => self.bucket_range(bytes, b, slot_key).0,
        }
    }

    /// The home slot of `slot_key`.
    #[inline(always)]
    pub fn home_of(&self, slot_key: u64) -> usize {
        self.home.slot(slot_key, self.bits)
    }

    /// The slot key of slot `j`.
    #[inline(always)]
    pub fn slot_key(&self, bytes: &[u8], j: usize) -> Option<u64> {
        u64_at(bytes, self.slots_at + j * self.entry_size)
    }

    /// The absolute offset of slot `j`'s record (its end is slot `j + 1`'s offset).
    #[inline(always)]
    pub fn record_offset(&self, bytes: &[u8], j: usize) -> Option<u64> {
        let at = self.slots_at + j * self.entry_size + 8;
        let rel = if self.offset_bytes == 4 { u64::from(u32_at(bytes, at)?) } else { u64_at(bytes, at)? };
        rel.checked_add(self.offset_base)
    }
}

/// `n` items of `size` bytes at `at`, or `None` if they do not all lie in `bytes`.
fn section(bytes: &[u8], at: usize, n: usize, size: usize) -> Option<&[u8]> {
    bytes.get(at..n.checked_mul(size)?.checked_add(at)?)
}

impl Table {
    /// The slot table as `(slot key, absolute record offset)` pairs, slot 0 first.
    pub fn slots<'a>(&self, bytes: &'a [u8]) -> Result<impl ExactSizeIterator<Item = (u64, u64)> + 'a> {
        let table = section(bytes, self.slots_at, self.slot_count, self.entry_size)
            .ok_or_else(|| Error::damaged("the slot table lies outside the file"))?;
        let base = self.offset_base;
        Ok(table.chunks_exact(self.entry_size).map(move |slot| {
            let (key, offset) = slot.split_at(8);
            let rel = match offset.len() {
                4 => u64::from(u32::from_le_bytes(offset.try_into().expect("4 bytes"))),
                _ => u64::from_le_bytes(offset.try_into().expect("8 bytes")),
            };
            (u64::from_le_bytes(key.try_into().expect("8 bytes")), rel.saturating_add(base))
        }))
    }
}

/// Where one secondary index's value table and postings lie (section 4.7), checked
/// against the file's size.
#[derive(Debug, Clone)]
pub struct IndexTable {
    /// Absolute offset of entry 0 of the value table.
    pub table_at: usize,
    /// Entries, overflow tail and terminal entry included.
    pub slots: usize,
    /// The empty-entry sentinel.
    pub empty: u64,
    /// Distinct value hashes: the entries that are not empty.
    pub values: usize,
    /// Absolute offset of the first posting.
    pub postings_at: usize,
    /// Postings.
    pub count: usize,
}

impl IndexTable {
    pub fn new(
        file_size: usize,
        table_at: usize,
        slots: usize,
        empty: u64,
        values: usize,
        postings_at: usize,
        count: usize,
    ) -> Result<IndexTable> {
        let fits = |at: usize, n: usize, size: usize| {
            n.checked_mul(size).and_then(|b| b.checked_add(at)).is_some_and(|end| end <= file_size)
        };
        if slots == 0 || !fits(table_at, slots, INDEX_ENTRY_SIZE)
            || !fits(postings_at, count, POSTING_SIZE)
        {
            return Err(Error::damaged("an index table does not fit the file"));
        }
        Ok(IndexTable { table_at, slots, empty, values, postings_at, count })
    }

    /// The value table as `(value hash, first posting)` pairs, entry 0 first.
    pub fn entries<'a>(&self, bytes: &'a [u8]) -> Result<impl ExactSizeIterator<Item = (u64, u64)> + 'a> {
        let table = section(bytes, self.table_at, self.slots, INDEX_ENTRY_SIZE)
            .ok_or_else(|| Error::damaged("an index table lies outside the file"))?;
        Ok(table.chunks_exact(INDEX_ENTRY_SIZE).map(|entry| {
            let (hash, first) = entry.split_at(8);
            (
                u64::from_le_bytes(hash.try_into().expect("8 bytes")),
                u64::from_le_bytes(first.try_into().expect("8 bytes")),
            )
        }))
    }

    /// The postings of the values hashing to `vhash` (section 4.7): the value table is
    /// walked from entry `vhash >> (64 - bits)` to the entry holding `vhash` (none when
    /// an empty entry or the terminal one comes first); its postings run to the next
    /// entry's first posting. The bounds are clipped into the postings, so a damaged
    /// table yields wrong slots at worst (the caller checks each against its slot table),
    /// never a read outside them.
    pub fn postings_of(&self, bytes: &[u8], bits: u32, vhash: u64) -> Result<Vec<u32>> {
        if !(1..64).contains(&bits) {
            return Err(Error::damaged(format!("an index table of {bits} bits")));
        }
        let entry = |i: usize, word: usize| {
            u64_at(bytes, self.table_at + i * INDEX_ENTRY_SIZE + 8 * word)
                .ok_or_else(|| Error::damaged("an index table lies outside the file"))
        };
        let last = self.slots - 1; // the terminal entry, empty in a valid table
        let mut i = (vhash >> (64 - bits)) as usize;
        while i < last {
            let hash = entry(i, 0)?;
            if hash == self.empty {
                break;
            }
            if hash == vhash {
                let clip = |v: u64, low: usize| (v.min(self.count as u64) as usize).max(low);
                let from = clip(entry(i, 1)?, 0);
                let to = clip(entry(i + 1, 1)?, from);
                return Ok(self.postings(bytes)?.skip(from).take(to - from).collect());
            }
            i += 1;
        }
        Ok(Vec::new())
    }

    /// The postings (primary slot numbers), in file order.
    pub fn postings<'a>(&self, bytes: &'a [u8]) -> Result<impl ExactSizeIterator<Item = u32> + 'a> {
        let postings = section(bytes, self.postings_at, self.count, POSTING_SIZE)
            .ok_or_else(|| Error::damaged("postings lie outside the file"))?;
        Ok(postings
            .chunks_exact(POSTING_SIZE)
            .map(|p| u32::from_le_bytes(p.try_into().expect("4 bytes"))))
    }
}


impl Prefix {
    /// The 48 prefix bytes the writer puts before a `header_length`-byte header.
    pub fn encode(header_length: u32, body_offset: u64, file_size: u64, digest: &[u8; 16]) -> [u8; PREFIX_SIZE] {
        Prefix::encode_format(FORMAT_VERSION, header_length, body_offset, file_size, digest)
    }

    /// [`Prefix::encode`] for a file of format `format`.
    pub fn encode_format(format: u32, header_length: u32, body_offset: u64, file_size: u64, digest: &[u8; 16]) -> [u8; PREFIX_SIZE] {
        let mut out = [0u8; PREFIX_SIZE];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&format.to_le_bytes());
        out[12..16].copy_from_slice(&header_length.to_le_bytes());
        out[16..24].copy_from_slice(&body_offset.to_le_bytes());
        out[24..32].copy_from_slice(&file_size.to_le_bytes());
        out[32..48].copy_from_slice(digest);
        out
    }
}

/// Where the body starts after a `header_length`-byte header.
pub fn body_offset(header_length: usize) -> usize {
    align(PREFIX_SIZE + header_length, BODY_ALIGN)
}

/// Every section of the body starts at a multiple of this.
pub const SECTION_ALIGN: usize = 8;
/// An entry of a secondary index's value table: the value hash, then its first posting.
pub const INDEX_ENTRY_SIZE: usize = 16;
/// A posting: a u32 slot number of the primary slot table.
pub const POSTING_SIZE: usize = 4;
/// The writer's smallest table is `2**MIN_BITS` slots.
pub const MIN_BITS: u32 = 3;

/// `b` for a hash table of `n` entries: `2**b` is the smallest power of two `>= 2n`
/// (load factor at most 0.5), at least `2**MIN_BITS` (FORMAT.md, 4.4).
pub fn capacity_bits(n: usize) -> u32 {
    if n == 0 {
        return MIN_BITS;
    }
    let bits = usize::BITS - (2 * n - 1).leading_zeros();
    bits.max(MIN_BITS)
}

/// One secondary index's sections, offsets relative to the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSections {
    /// The value table: `slots` entries of [`INDEX_ENTRY_SIZE`] bytes.
    pub table: usize,
    pub slots: usize,
    /// The postings: `count` u32s, then zeros to [`SECTION_ALIGN`].
    pub postings: usize,
    pub count: usize,
}

/// The body of a state file: slot table, heap, then each index's table and postings
/// (FORMAT.md, 4.3). Offsets are relative to the body's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLayout {
    pub slot_count: usize,
    /// The heap starts right after the slot table.
    pub heap: usize,
    pub heap_length: usize,
    pub indexes: Vec<IndexSections>,
    /// Bytes from the body's start to the end of the file.
    pub body_length: usize,
}

impl BodyLayout {
    /// The layout of a body with `slot_count` slots, `heap_length` bytes of records and
    /// indexes of `(table slots, postings)` each.
    pub fn new(slot_count: usize, heap_length: usize, indexes: &[(usize, usize)]) -> BodyLayout {
        let heap = slot_count * SLOT_SIZE;
        let mut offset = heap + align(heap_length, SECTION_ALIGN);
        let indexes = indexes
            .iter()
            .map(|&(slots, count)| {
                let table = offset;
                let postings = table + slots * INDEX_ENTRY_SIZE;
                offset = postings + align(count * POSTING_SIZE, SECTION_ALIGN);
                IndexSections { table, slots, postings, count }
            })
            .collect();
        BodyLayout { slot_count, heap, heap_length, indexes, body_length: offset }
    }
}

#[cfg(test)]
mod tests {

    /// A value table of 2**2 homes plus overflow and terminal entries: hashes whose top
    /// two bits are 1 (home 1), two of them (the second walks to entry 2), then empty.
    fn index_file() -> (Vec<u8>, IndexTable) {
        let h = |top: u64, low: u64| (top << 62) | low;
        let entries = [(0u64, 0u64), (h(1, 5), 0), (h(1, 9), 2), (0, 3), (0, 3), (0, 3)];
        let mut bytes = Vec::new();
        for (hash, first) in entries {
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&first.to_le_bytes());
        }
        let postings_at = bytes.len();
        for p in [4u32, 7, 1] {
            bytes.extend_from_slice(&p.to_le_bytes());
        }
        let index = IndexTable::new(bytes.len(), 0, entries.len(), 0, 2, postings_at, 3).unwrap();
        (bytes, index)
    }

    #[test]
    fn postings_of_walks_from_the_home_entry() {
        let (bytes, index) = index_file();
        let h = |top: u64, low: u64| (top << 62) | low;
        assert_eq!(index.postings_of(&bytes, 2, h(1, 5)).unwrap(), vec![4, 7]);
        assert_eq!(index.postings_of(&bytes, 2, h(1, 9)).unwrap(), vec![1]);
        assert!(index.postings_of(&bytes, 2, h(1, 6)).unwrap().is_empty()); // walks to an empty entry
        assert!(index.postings_of(&bytes, 2, h(2, 5)).unwrap().is_empty()); // its home is empty
        assert!(index.postings_of(&bytes, 0, h(1, 5)).is_err());
        assert!(index.postings_of(&bytes, 64, h(1, 5)).is_err());
    }

    #[test]
    fn postings_of_clips_damaged_bounds() {
        let (mut bytes, index) = index_file();
        bytes[2 * INDEX_ENTRY_SIZE + 8..3 * INDEX_ENTRY_SIZE].copy_from_slice(&u64::MAX.to_le_bytes());
        let h = |top: u64, low: u64| (top << 62) | low;
        assert_eq!(index.postings_of(&bytes, 2, h(1, 5)).unwrap(), vec![4, 7, 1]); // clipped to the count
        assert!(index.postings_of(&bytes, 2, h(1, 9)).unwrap().is_empty()); // from past the count
        // a walk that runs to the terminal entry without meeting an empty one ends there
        let full = [(1u64 << 62) | 5; 6];
        let mut walked = Vec::new();
        for hash in full {
            walked.extend_from_slice(&hash.to_le_bytes());
            walked.extend_from_slice(&0u64.to_le_bytes());
        }
        let index = IndexTable::new(walked.len(), 0, 6, 0, 1, walked.len(), 0).unwrap();
        assert!(index.postings_of(&walked, 2, (1u64 << 62) | 6).unwrap().is_empty());
    }
    use super::*;

    fn prefix(format: u32, header: u32, body: u64, size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&header.to_le_bytes());
        out.extend_from_slice(&body.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&[7u8; 16]);
        out.resize(size as usize, 0);
        out
    }

    #[test]
    fn a_good_prefix_parses() {
        let p = Prefix::parse(&prefix(1, 10, 64, 128)).unwrap();
        assert_eq!((p.header_length, p.body_offset, p.file_size), (10, 64, 128));
        assert_eq!(p.digest, [7u8; 16]);
    }

    #[test]
    fn damaged_prefixes_are_refused() {
        assert!(Prefix::parse(b"FEEDKIT").is_err());
        let mut bad_magic = prefix(1, 10, 64, 128);
        bad_magic[0] = b'X';
        assert!(Prefix::parse(&bad_magic).is_err());
        assert!(Prefix::parse(&prefix(3, 10, 64, 128)).is_err());
        // a size that is not the file's, a body past the end, a misaligned body
        let mut wrong_size = prefix(1, 10, 64, 128);
        wrong_size[24] = 200;
        assert!(Prefix::parse(&wrong_size).is_err());
        assert!(Prefix::parse(&prefix(1, 10, 192, 128)).is_err());
        assert!(Prefix::parse(&prefix(1, 10, 72, 128)).is_err());
        assert!(Prefix::parse(&prefix(1, u32::MAX, 64, 128)).is_err());
    }

    #[test]
    fn tables_must_fit_their_file() {
        assert!(Table::new(1000, 64, 9, 3, Home::Low, 0, 208, 300, false).is_ok());
        assert!(Table::new(1000, 64, 8, 3, Home::Low, 0, 208, 300, false).is_err());
        assert!(Table::new(100, 64, 9, 3, Home::Low, 0, 208, 300, false).is_err());
        assert!(Table::new(1000, 64, 9, 3, Home::Low, 0, 300, 208, false).is_err());
        assert!(Table::new(1000, 64, usize::MAX, 3, Home::Low, 0, 208, 300, false).is_err());
        assert!(Table::new(1000, 64, 9, 63, Home::Low, 0, 208, 300, false).is_err());
    }

    #[test]
    fn the_writer_prefix_parses_back() {
        let mut bytes = Prefix::encode(10, 64, 128, &[9u8; 16]).to_vec();
        bytes.resize(128, 0);
        let p = Prefix::parse(&bytes).unwrap();
        assert_eq!((p.header_length, p.body_offset, p.file_size, p.digest), (10, 64, 128, [9u8; 16]));
        assert_eq!(body_offset(16), 64);
        assert_eq!(body_offset(17), 128);
    }

    #[test]
    fn capacities_hold_twice_the_entries() {
        // Python's max(3, (2n - 1).bit_length())
        let expected = [(0, 3), (1, 3), (4, 3), (5, 4), (8, 4), (9, 5), (1 << 20, 21), ((1 << 20) + 1, 22)];
        for (n, bits) in expected {
            assert_eq!(capacity_bits(n), bits, "n = {n}");
        }
    }

    #[test]
    fn body_sections_follow_each_other_aligned() {
        let b = BodyLayout::new(9, 13, &[(9, 3), (17, 2)]);
        assert_eq!((b.heap, b.heap_length), (144, 13));
        assert_eq!(b.indexes[0], IndexSections { table: 160, slots: 9, postings: 304, count: 3 });
        assert_eq!(b.indexes[1], IndexSections { table: 320, slots: 17, postings: 592, count: 2 });
        assert_eq!(b.body_length, 600);
        assert_eq!(BodyLayout::new(9, 0, &[]).body_length, 144);
    }

    #[test]
    fn homes_follow_the_format() {
        let t = Table::new(1000, 64, 9, 3, Home::Low, 0, 208, 300, false).unwrap();
        assert_eq!(t.home_of(11), 3);
        assert_eq!(t.home_of((-1i64) as u64), 7);
        let f = Table { home: Home::Fib, ..t.clone() };
        assert_eq!(f.home_of(1), (FIB >> 61) as usize);
        let x = Table { home: Home::Xxh3, ..t };
        assert_eq!(x.home_of(u64::MAX), 7);
    }
}
