//! The consumer's merge arithmetic (FORMAT.md, 7) with the GIL released (unless the
//! work is small); see `feedkit_core::merge`.

use feedkit_core::layout::IndexTable;
use feedkit_core::probe::{record_at, Found};
use feedkit_core::merge::{
    delta_effect as effect, posted_hashes as hashes_of, unshadowed as survivors, Layer,
};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{guard, integrity, to_py};
use crate::view::{detach_if, FileArgs, Mapped, DETACH_PROBES};

/// What `delta` does to the state `current` (`[overlay, base]` or `[base]`):
/// `(added, removed, old_digest, new_digest)`, see `feedkit_core::merge::DeltaEffect`.
#[pyfunction]
pub fn delta_effect(
    py: Python<'_>,
    current: Vec<FileArgs<'_>>,
    delta: FileArgs<'_>,
) -> PyResult<(u64, u64, u64, u64)> {
    guard(py, || {
        let current = current.into_iter().map(|f| Mapped::new(py, f)).collect::<PyResult<Vec<_>>>()?;
        let delta = Mapped::new(py, delta)?;
        let layers: Vec<Layer<'_>> =
            current.iter().map(|m| m.layer()).collect();
        let d = delta.layer();
        // a table is half full at most: slot_count / 2 bounds the keys to probe
        let big = delta.table.slot_count / 2 >= DETACH_PROBES;
        let e = detach_if(py, big, || effect(&layers, &d)).map_err(|e| to_py(py, e))?;
        Ok((e.added, e.removed, e.old_digest, e.new_digest))
    })
}

/// Slots of `under`'s entries whose keys `over` does not hold, ascending, as the bytes
/// of an int64 array (`numpy.frombuffer(..., dtype=numpy.int64)`).
#[pyfunction]
pub fn unshadowed<'py>(
    py: Python<'py>,
    over: FileArgs<'py>,
    under: FileArgs<'py>,
) -> PyResult<Bound<'py, PyBytes>> {
    guard(py, || {
        let (over, under) = (Mapped::new(py, over)?, Mapped::new(py, under)?);
        let o = over.layer();
        let u = under.layer();
        let big = under.table.slot_count / 2 >= DETACH_PROBES;
        let slots = detach_if(py, big, || survivors(&o, &u)).map_err(|e| to_py(py, e))?;
        let slots: Vec<u64> = slots.into_iter().map(|j| j as u64).collect();
        le_bytes(py, &slots)
    })
}

/// An index as `StateFile` passes it: absolute value-table offset, entries, empty
/// sentinel, distinct values, absolute postings offset, postings.
type IndexArgs = (usize, usize, u64, usize, usize, usize);

/// The little-endian bytes of `words` (for `numpy.frombuffer`), written straight into
/// the new bytes object.
fn le_bytes<'py>(py: Python<'py>, words: &[u64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, 8 * words.len(), |out| {
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        Ok(())
    })
}

/// The value hashes each index of `indexes` posts the entries of `file` at `slots` (an
/// int64 buffer) under, one bytes object (a uint64 array) per index. See
/// `feedkit_core::merge::posted_hashes`.
#[pyfunction]
pub fn posted_hashes<'py>(
    py: Python<'py>,
    file: FileArgs<'py>,
    slots: PyBuffer<i64>,
    indexes: Vec<IndexArgs>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    guard(py, || {
        let mapped = Mapped::new(py, file)?;
        let bytes = mapped.bytes();
        let slot_count = mapped.table.slot_count;
        let slots = slots
            .to_vec(py)?
            .into_iter()
            .map(|j| usize::try_from(j).map_err(|_| integrity(py, format!("slot {j}"))))
            .collect::<PyResult<Vec<usize>>>()?;
        let mut out = Vec::with_capacity(indexes.len());
        for (table_at, n, empty, values, postings_at, count) in indexes {
            let index = IndexTable::new(bytes.len(), table_at, n, empty, values, postings_at, count)
                .map_err(|e| to_py(py, e))?;
            let big = slot_count / 2 >= DETACH_PROBES;
            let hashes = detach_if(py, big, || hashes_of(bytes, slot_count, &index, &slots))
                .map_err(|e| to_py(py, e))?;
            out.push(le_bytes(py, &hashes)?);
        }
        Ok(out)
    })
}

/// The canonical bytes (FORMAT.md, 6) of the records of `slots` of `file` (live
/// entries: a tombstone or an empty slot is damage), concatenated, and their lengths as
/// int64 bytes: the records of a format-2 file rebuilt, for a compaction or a diff that
/// copies or compares records.
#[pyfunction]
pub fn canonical_records<'py>(
    py: Python<'py>,
    file: FileArgs<'py>,
    slots: PyBuffer<i64>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    guard(py, || {
        let file = Mapped::new(py, file)?;
        let slots = slots.to_vec(py)?;
        let layer = file.layer();
        let big = slots.len() >= DETACH_PROBES;
        let (heap, lengths) = detach_if(py, big, || {
            let (mut heap, mut lengths, mut buf) = (Vec::new(), Vec::with_capacity(slots.len()), Vec::new());
            for &j in &slots {
                let j = usize::try_from(j).map_err(|_| feedkit_core::Error::damaged(format!("slot {j}")))?;
                let Found::Record { start, end, .. } = record_at(layer.bytes, layer.table, j)? else {
                    return Err(feedkit_core::Error::damaged(format!("slot {j} holds no record")));
                };
                let key = layer.table.slot_key(layer.bytes, j).unwrap_or(0);
                let record = layer.canonical(key, start, end, &mut buf)?;
                heap.extend_from_slice(record);
                lengths.push(record.len() as u64);
            }
            Ok((heap, lengths))
        })
        .map_err(|e| to_py(py, e))?;
        Ok((PyBytes::new(py, &heap), le_bytes(py, &lengths)?))
    })
}
