//! The consumer's merge arithmetic (FORMAT.md, 7) with the GIL released (unless the
//! work is small); see `feedkit_core::merge`.

use feedkit_core::merge::{delta_effect as effect, unshadowed as survivors, Layer};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{guard, to_py};
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
            current.iter().map(|m| Layer { bytes: m.bytes(), table: &m.table }).collect();
        let d = Layer { bytes: delta.bytes(), table: &delta.table };
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
        let o = Layer { bytes: over.bytes(), table: &over.table };
        let u = Layer { bytes: under.bytes(), table: &under.table };
        let big = under.table.slot_count / 2 >= DETACH_PROBES;
        let out = detach_if(py, big, || {
            survivors(&o, &u).map(|slots| {
                slots.iter().flat_map(|&j| (j as i64).to_le_bytes()).collect::<Vec<u8>>()
            })
        })
        .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &out))
    })
}
