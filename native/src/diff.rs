//! The producer's diff against the state it published last, with the GIL released
//! (feedkit/merge.py's `diff` and `present`).

use feedkit_core::diff::{diff as diff_layers, present as present_in, Differ as Batches, Layer};
use feedkit_core::records::Records;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::buffers::Held;
use crate::errors::{guard, to_py};
use crate::view::{FileArgs, Mapped};
use crate::write::RecordArgs;

/// The state `[overlay, base]` or `[base]` as `feedkit/merge.py` passes it.
fn files(py: Python<'_>, files: Vec<FileArgs<'_>>) -> PyResult<Vec<Mapped>> {
    if files.is_empty() || files.len() > 2 {
        return Err(PyTypeError::new_err("a state is [overlay, base] or [base]"));
    }
    files.into_iter().map(|args| Mapped::new(py, args)).collect()
}

fn layers(files: &[Mapped]) -> Vec<Layer<'_>> {
    files.iter().map(Mapped::layer).collect()
}

/// Little-endian int64s, for `numpy.frombuffer`.
fn int64s<'py>(py: Python<'py>, items: &[usize]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, items.len() * 8, |out| {
        for (chunk, &v) in out.chunks_exact_mut(8).zip(items) {
            chunk.copy_from_slice(&(v as i64).to_le_bytes());
        }
        Ok(())
    })
}

/// The diff of the new records (`keys`: uint64 slot keys; a RecordSet's starts, lengths,
/// sources and source) against the state `files`: (upserts, deleted per file,
/// changed_old per file, removed digest, added digest), the index arrays as int64 bytes.
#[pyfunction]
#[allow(clippy::type_complexity)]
#[pyo3(signature = (files, keys, starts, lengths, sources, source))]
pub fn diff<'py>(
    py: Python<'py>,
    files: Vec<FileArgs<'py>>,
    keys: &Bound<'py, PyAny>,
    starts: &Bound<'py, PyAny>,
    lengths: &Bound<'py, PyAny>,
    sources: &Bound<'py, PyAny>,
    source: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyList>, Bound<'py, PyList>, u64, u64)> {
    guard(py, || {
        let files = self::files(py, files)?;
        let keys = Held::<u64>::get(keys, "keys")?;
        let args = RecordArgs::get(starts, lengths, sources, source)?;
        let d = py
            .detach(|| diff_layers(&layers(&files), keys.items(), &args.records()?))
            .map_err(|e| to_py(py, e))?;
        let per_file = |lists: &[Vec<usize>]| {
            PyList::new(py, lists.iter().map(|s| int64s(py, s)).collect::<PyResult<Vec<_>>>()?)
        };
        Ok((int64s(py, &d.upserts)?, per_file(&d.deleted)?, per_file(&d.changed_old)?,
            d.removed_digest, d.added_digest))
    })
}

/// Per key (uint64 slot keys): is it a live record of the state `files`? As uint8 bytes.
#[pyfunction]
pub fn present<'py>(py: Python<'py>, files: Vec<FileArgs<'py>>, keys: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    guard(py, || {
        let files = self::files(py, files)?;
        let keys = Held::<u64>::get(keys, "keys")?;
        let found = py
            .detach(|| present_in(&layers(&files), keys.items()))
            .map_err(|e| to_py(py, e))?;
        PyBytes::new_with(py, found.len(), |out| {
            for (o, &f) in out.iter_mut().zip(&found) {
                *o = f as u8;
            }
            Ok(())
        })
    })
}

/// A diff against the state `files`, batch by batch as the producer encodes a table
/// (`producer/producer.py`): the new records need not all be kept, only the changed ones.
#[pyclass(module = "feedkit._native")]
pub struct Differ {
    files: Vec<Mapped>,
    state: Option<Batches>,
}

#[pymethods]
impl Differ {
    #[new]
    fn new(py: Python<'_>, files: Vec<FileArgs<'_>>) -> PyResult<Differ> {
        guard(py, || {
            let files = self::files(py, files)?;
            let state = Batches::new(&layers(&files));
            Ok(Differ { files, state: Some(state) })
        })
    }

    /// One batch of new records (`keys`: uint64 slot keys; the records are
    /// `data[starts[i]:starts[i] + lengths[i]]`): its upserts, as int64 row numbers.
    fn batch<'py>(
        &mut self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        data: &Bound<'py, PyAny>,
        starts: &Bound<'py, PyAny>,
        lengths: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guard(py, || {
            let keys = Held::<u64>::get(keys, "keys")?;
            let data = Held::<u8>::get(data, "records")?;
            let starts = Held::<i64>::get(starts, "starts")?;
            let lengths = Held::<i64>::get(lengths, "lengths")?;
            let (files, state) = (&self.files, &mut self.state);
            let state = state
                .as_mut()
                .ok_or_else(|| PyTypeError::new_err("the diff is finished"))?;
            let upserts = py
                .detach(|| {
                    let records =
                        Records::new(vec![data.items()], None, starts.items(), lengths.items())?;
                    state.batch(&layers(files), keys.items(), &records)
                })
                .map_err(|e| to_py(py, e))?;
            int64s(py, &upserts)
        })
    }

    /// After the batches: delete the keys `keys` (uint64 slot keys) that are live and
    /// matched by no new record (the others are nothing to do). For a change that names
    /// its deletes: `finish(named=True)`.
    fn delete<'py>(&mut self, py: Python<'py>, keys: &Bound<'py, PyAny>) -> PyResult<()> {
        guard(py, || {
            let keys = Held::<u64>::get(keys, "keys")?;
            let (files, state) = (&self.files, &mut self.state);
            let state = state
                .as_mut()
                .ok_or_else(|| PyTypeError::new_err("the diff is finished"))?;
            py.detach(|| state.delete(&layers(files), keys.items()))
                .map_err(|e| to_py(py, e))
        })
    }

    /// The end of the diff: (deleted per file, changed_old per file, removed digest,
    /// added digest), as `diff` gives them. `named`: the deleted records are those
    /// `delete` named, the others stay (a change, not a whole new state).
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (named = false))]
    fn finish<'py>(
        &mut self,
        py: Python<'py>,
        named: bool,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, u64, u64)> {
        guard(py, || {
            let state = self
                .state
                .take()
                .ok_or_else(|| PyTypeError::new_err("the diff is finished"))?;
            let files = &self.files;
            let d = py
                .detach(|| if named { state.finish_named(&layers(files)) } else { state.finish(&layers(files)) })
                .map_err(|e| to_py(py, e))?;
            let per_file = |lists: &[Vec<usize>]| {
                PyList::new(py, lists.iter().map(|s| int64s(py, s)).collect::<PyResult<Vec<_>>>()?)
            };
            Ok((per_file(&d.deleted)?, per_file(&d.changed_old)?, d.removed_digest, d.added_digest))
        })
    }
}
