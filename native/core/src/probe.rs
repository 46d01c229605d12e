//! The slot probe (docs/FORMAT.md, section 4.5): linear probing from the home slot.

use crate::error::{Error, Result};
use crate::layout::{Table, TOMBSTONE};

/// What a probe found for one slot key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The file holds no entry for the key.
    Miss,
    /// A tombstone: the key was deleted (overlays only).
    Deleted,
    /// The key's record: the bytes `[start, end)` of the file, and its slot.
    Record { slot: usize, start: usize, end: usize },
}

/// Finds `slot_key` in `table`.
///
/// Stops at the first empty slot. A walk that reaches the end of the table without one,
/// or a record range outside the heap, is damage.
#[inline]
pub fn probe(bytes: &[u8], table: &Table, slot_key: u64) -> Result<Found> {
    if slot_key == table.empty {
        // The writer picks a sentinel no key uses: such a key is not in the file.
        return Ok(Found::Miss);
    }
    if let Some(b) = &table.buckets {
        // Format 2: scan the key's bucket of sorted entries.
        let (from, to) = table.bucket_range(bytes, b, slot_key);
        for j in from..to {
            if table.slot_key(bytes, j).ok_or_else(outside)? == slot_key {
                return record_at(bytes, table, j);
            }
        }
        return Ok(Found::Miss);
    }
    let mut j = table.home_of(slot_key);
    loop {
        if j >= table.slot_count {
            return Err(Error::damaged("the slot table has no empty terminal slot"));
        }
        let s = table.slot_key(bytes, j).ok_or_else(outside)?;
        if s == slot_key {
            return record_at(bytes, table, j);
        }
        if s == table.empty {
            return Ok(Found::Miss);
        }
        j += 1;
    }
}

/// The record of occupied slot `j`, checked to lie in the heap.
#[inline]
pub fn record_at(bytes: &[u8], table: &Table, j: usize) -> Result<Found> {
    if j + 1 >= table.slot_count {
        return Err(Error::damaged(format!("slot {j} outside the slot table")));
    }
    let start = table.record_offset(bytes, j).ok_or_else(outside)?;
    let end = table.record_offset(bytes, j + 1).ok_or_else(outside)?;
    if start > end || start < table.heap_start as u64 || end > table.heap_end as u64 {
        return Err(Error::damaged(format!(
            "slot {j}'s record [{start}, {end}) lies outside the heap"
        )));
    }
    let (start, end) = (start as usize, end as usize);
    if table.overlay && bytes.get(start) == Some(&TOMBSTONE) {
        return Ok(Found::Deleted);
    }
    Ok(Found::Record { slot: j, start, end })
}

fn outside() -> Error {
    Error::damaged("a slot lies outside the file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Home;

    /// A file of 9 slots at 0 with a 3-record heap at 144, as in FORMAT.md's example.
    fn file(overlay: bool) -> (Vec<u8>, Table) {
        let empty = i64::MIN as u64;
        let slots: [(u64, u64); 9] = [
            (empty, 144), (empty, 144), (42, 144), (50, 147), (3, 150),
            (11, 150), (empty, 153), (empty, 153), (empty, 153),
        ];
        let mut bytes = Vec::new();
        for (k, off) in slots {
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.extend_from_slice(&off.to_le_bytes());
        }
        bytes.extend_from_slice(&[0x91, 0x2A, 0, 0x91, 0x32, 0, 0xC0, 0x0B, 0]);
        let table = Table::new(bytes.len(), 0, 9, 3, Home::Low, empty, 144, 153, overlay).unwrap();
        (bytes, table)
    }

    #[test]
    fn probes_find_walk_and_miss() {
        let (bytes, t) = file(false);
        assert_eq!(probe(&bytes, &t, 42).unwrap(), Found::Record { slot: 2, start: 144, end: 147 });
        assert_eq!(probe(&bytes, &t, 11).unwrap(), Found::Record { slot: 5, start: 150, end: 153 });
        // 3 is empty-length (start == end) in this toy file: still a record range
        assert_eq!(probe(&bytes, &t, 3).unwrap(), Found::Record { slot: 4, start: 150, end: 150 });
        assert_eq!(probe(&bytes, &t, 19).unwrap(), Found::Miss);
        assert_eq!(probe(&bytes, &t, 8).unwrap(), Found::Miss);
        // a walk may end on the terminal slot (the last one)
        let mut bytes = bytes;
        bytes[7 * 16..7 * 16 + 8].copy_from_slice(&15u64.to_le_bytes());
        assert_eq!(probe(&bytes, &t, 23).unwrap(), Found::Miss);
        assert_eq!(probe(&bytes, &t, i64::MIN as u64).unwrap(), Found::Miss);
    }

    #[test]
    fn overlays_see_tombstones() {
        let (mut bytes, t) = file(true);
        bytes[150] = TOMBSTONE;
        assert_eq!(probe(&bytes, &t, 11).unwrap(), Found::Deleted);
    }

    #[test]
    fn damaged_tables_raise_instead_of_walking_off() {
        let (mut bytes, t) = file(false);
        for j in 0..9 {
            bytes[j * 16..j * 16 + 8].copy_from_slice(&7u64.to_le_bytes());
        }
        assert!(probe(&bytes, &t, 5).is_err());
        let (mut bytes, t) = file(false);
        bytes[2 * 16 + 8..2 * 16 + 16].copy_from_slice(&10_000u64.to_le_bytes());
        assert!(probe(&bytes, &t, 42).is_err());
    }
}
