//! The producer's encode (`producer/encode.py`): an Arrow batch to records, slot keys,
//! index hashes and null-key rows, compiled (`feedkit_core::encode`), with the GIL
//! released while it runs. Results go back as `bytes` that `encode.py` views with numpy.

use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use feedkit_core::encode::{encode_values, has_duplicates, prepare_batch, Column, KeyKind, Plan};
use feedkit_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::arrow::import;
use crate::buffers::Held;
use crate::errors::{guard, to_py};

/// `values` as native-endian bytes (what `numpy.frombuffer(..., dtype=uint64)` reads).
fn words<'py>(py: Python<'py>, values: &[u64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * 8, |buf| {
        for (chunk, v) in buf.chunks_exact_mut(8).zip(values) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })
}

/// `values` as native-endian bytes (what `numpy.frombuffer(..., dtype=int64)` reads).
fn signed_words<'py>(py: Python<'py>, values: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * 8, |buf| {
        for (chunk, v) in buf.chunks_exact_mut(8).zip(values) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })
}

/// Encodes `batch` (a pyarrow RecordBatch, or anything with `__arrow_c_array__` giving a
/// struct array) for feed `feed`: a record per row of the columns `names` (in that
/// order), the slot keys of the key columns `key` (`key_kind`: "int", "raw" for one str
/// or bytes column, "composite"), and an index hash per row for each of `index`.
///
/// Returns `(data, offsets, slot_keys, [index hashes...], null_key_rows)`: bytes of the
/// records, int64 offsets (n + 1), int64 keys or uint64 hashes, uint64 hashes, int64
/// rows.
///
/// Raises:
///     ValidationError: a missing column, a type or value feedkit cannot carry, uint64
///         keys past 2**63 - 1 (naming the feed and the column).
#[pyfunction]
#[pyo3(signature = (batch, *, feed, names, key, key_kind, index))]
pub fn encode_batch<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    feed: &str,
    names: Vec<String>,
    key: Vec<String>,
    key_kind: &str,
    index: Vec<String>,
) -> PyResult<Bound<'py, PyTuple>> {
    guard(py, || {
        let invalid = |message: String| to_py(py, Error::invalid(message));
        let (field, array) = import(batch, &format!("feed '{feed}': the batch"))?;
        let DataType::Struct(fields) = field.data_type() else {
            return Err(invalid(format!(
                "feed '{feed}': a batch must be a struct array"
            )));
        };
        let columns = array.as_struct().columns();
        let position = |name: &str| fields.iter().position(|f| f.name() == name);
        let mut cols = Vec::with_capacity(names.len());
        for name in &names {
            let j = position(name)
                .ok_or_else(|| invalid(format!("feed '{feed}': column '{name}' is missing")))?;
            cols.push(Column {
                name,
                array: columns[j].as_ref(),
                field: fields[j].as_ref(),
            });
        }
        let record_position = |name: &String| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                invalid(format!(
                    "feed '{feed}': column '{name}' is not among the columns"
                ))
            })
        };
        let key_kind = match key_kind {
            "int" => KeyKind::Int,
            "raw" => KeyKind::Raw,
            "composite" => KeyKind::Composite,
            other => return Err(invalid(format!("unknown key kind {other:?}"))),
        };
        let plan = Plan {
            feed,
            key: key.iter().map(record_position).collect::<PyResult<_>>()?,
            key_kind,
            index: index.iter().map(record_position).collect::<PyResult<_>>()?,
        };
        let prepared = py
            .detach(|| prepare_batch(&cols, &plan))
            .map_err(|e| to_py(py, e))?;
        // The records go straight into the bytes object Python gets, written with the GIL
        // released: nothing else can reach the object before it is returned.
        let mut rows = None;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let data = PyBytes::new_with(py, prepared.len(), |buf| {
            rows = Some(py.detach(|| prepared.write(buf, &plan, &names)));
            Ok(())
        })?;
        let encoded = rows
            .expect("new_with ran its closure")
            .map_err(|e| to_py(py, e))?;
        let hashes = PyList::empty(py);
        for h in &encoded.index_hashes {
            hashes.append(words(py, h)?)?;
        }
        PyTuple::new(
            py,
            [
                data.into_any(),
                signed_words(py, &encoded.offsets)?.into_any(),
                words(py, &encoded.slot_keys)?.into_any(),
                hashes.into_any(),
                signed_words(py, &encoded.null_key_rows)?.into_any(),
            ],
        )
    })
}

/// The canonical msgpack bytes of each value of `array` (a pyarrow Array): `(data,
/// offsets)`, the values back to back and int64 offsets (n + 1).
///
/// Raises:
///     ValidationError: a type or value feedkit cannot carry.
#[pyfunction]
pub fn encode_array<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    guard(py, || {
        let (field, array) = import(array, "the array")?;
        let (data, offsets) = py
            .detach(|| encode_values(array.as_ref(), &field))
            .map_err(|e| to_py(py, Error::invalid(format!("the array {}", e.message()))))?;
        Ok((PyBytes::new(py, &data), signed_words(py, &offsets)?))
    })
}

/// Whether a slot key occurs twice in `keys` (a numpy int64 array of keys when `signed`,
/// else uint64 key hashes), with the GIL released (`feedkit_core::encode::has_duplicates`).
#[pyfunction]
pub fn has_duplicate_keys(py: Python<'_>, keys: &Bound<'_, PyAny>, signed: bool) -> PyResult<bool> {
    guard(py, || {
        if signed {
            let keys = Held::<i64>::get(keys, "keys")?;
            Ok(py.detach(|| has_duplicates(keys.items())))
        } else {
            let keys = Held::<u64>::get(keys, "keys")?;
            Ok(py.detach(|| has_duplicates(keys.items())))
        }
    })
}
