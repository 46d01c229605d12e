//! The overlay-over-base rule, in one place (docs/FORMAT.md, 4.5): a state is
//! `[overlay, base]` or `[base]`, and the first file holding a key decides what the key
//! is; a tombstone there means the key lives nowhere. Lookups, iteration, the producer's
//! diff and the consumer's merges all go through these functions.

use crate::codings::Codings;
use crate::error::Result;
use crate::layout::Table;
use crate::probe::{probe, record_at, Found};

/// One file of a state: its bytes and where its slot table and heap lie.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    pub bytes: &'a [u8],
    pub table: &'a Table,
    /// Format 2: how records are coded (None: canonical msgpack arrays).
    pub codings: Option<&'a Codings>,
}

impl Layer<'_> {
    /// The canonical bytes (FORMAT.md, 6) of the record `[start, end)` of the entry
    /// holding `slot_key`: the bytes themselves in format 1, rebuilt into `buf` in
    /// format 2.
    #[inline]
    pub fn canonical<'b>(&'b self, slot_key: u64, start: usize, end: usize, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        let record = &self.bytes[start..end];
        match self.codings {
            None => Ok(record),
            Some(c) => {
                buf.clear();
                c.canonical(self.bytes, slot_key, record, buf)?;
                Ok(&buf[..])
            }
        }
    }

    /// Slots of every entry (record or tombstone), ascending; the terminal slot is never
    /// one, even on a damaged file.
    pub fn occupied(&self) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for (j, (key, _)) in self.table.slots(self.bytes)?.enumerate() {
            if key != self.table.empty && j + 1 < self.table.slot_count {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// What this file alone holds for `slot_key`.
    #[inline]
    pub fn probe(&self, slot_key: u64) -> Result<Found> {
        probe(self.bytes, self.table, slot_key)
    }
}

/// A live record of a state: which file holds it, its slot and its bytes' range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub file: usize,
    pub slot: usize,
    pub start: usize,
    pub end: usize,
}

/// Where `slot_key` lives in the state `layers` (overlay first), or None.
#[inline]
pub fn lookup(layers: &[Layer<'_>], slot_key: u64) -> Result<Option<Live>> {
    for (file, layer) in layers.iter().enumerate() {
        match layer.probe(slot_key)? {
            Found::Miss => continue,
            Found::Deleted => return Ok(None),
            Found::Record { slot, start, end } => return Ok(Some(Live { file, slot, start, end })),
        }
    }
    Ok(None)
}

/// Whether slot `slot` of file `file`, holding `slot_key`, is a live record of the
/// state: a record, not a tombstone, and no earlier file holds its key.
#[inline]
pub fn live_at(layers: &[Layer<'_>], file: usize, slot: usize, slot_key: u64) -> Result<Option<Live>> {
    let Found::Record { start, end, .. } = record_at(layers[file].bytes, layers[file].table, slot)? else {
        return Ok(None);
    };
    for earlier in &layers[..file] {
        if earlier.probe(slot_key)? != Found::Miss {
            return Ok(None);
        }
    }
    Ok(Some(Live { file, slot, start, end }))
}

/// Slots of `under`'s entries (records and tombstones) whose keys `over` does not hold,
/// ascending: what survives of `under` beneath `over`.
pub fn unshadowed(over: &Layer<'_>, under: &Layer<'_>) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (j, (key, _)) in under.table.slots(under.bytes)?.enumerate() {
        if key == under.table.empty || j + 1 >= under.table.slot_count {
            continue;
        }
        if over.probe(key)? == Found::Miss {
            out.push(j);
        }
    }
    Ok(out)
}
