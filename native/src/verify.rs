//! `verify_state`: `StateFile.verify`'s checks (FORMAT.md, 4.8), run with the GIL
//! released (unless the file is small); see `feedkit_core::verify`.

use feedkit_core::header::parse_own;
use feedkit_core::layout::IndexTable;
use feedkit_core::verify::{verify, Expected};
use pyo3::prelude::*;

use crate::buffers::Held;
use crate::errors::{guard, to_py};
use crate::view::{detach_if, FileArgs, Mapped, DETACH_BYTES};

/// An index as `StateFile` passes it: field name, absolute value-table offset, entries,
/// empty sentinel, distinct values, absolute postings offset, postings.
type IndexArgs = (String, usize, usize, u64, usize, usize, usize);

/// Checks the mapped state file `file` against its checksum (or `body_digest`, the
/// digest computed while it was written) and the header's counts; raises
/// `IntegrityError` saying what is wrong (without the file's name: the caller adds it).
#[pyfunction]
#[pyo3(signature = (file, count, tombstones, width, indexes, body_digest=None, records=false))]
#[allow(clippy::too_many_arguments)]
pub fn verify_state(
    py: Python<'_>,
    file: FileArgs<'_>,
    count: usize,
    tombstones: usize,
    width: usize,
    indexes: Vec<IndexArgs>,
    body_digest: Option<Vec<u8>>,
    records: bool,
) -> PyResult<()> {
    guard(py, || {
        let mapped = Mapped::new(py, file)?;
        let bytes = mapped.bytes();
        let indexes = indexes
            .into_iter()
            .map(|(name, table_at, slots, empty, values, postings_at, n)| {
                IndexTable::new(bytes.len(), table_at, slots, empty, values, postings_at, n)
                    .map(|index| (name, index))
            })
            .collect::<feedkit_core::Result<Vec<_>>>()
            .map_err(|e| to_py(py, e))?;
        let expected = Expected { count, tombstones, width, indexes, records, codings: mapped.codings.clone() };
        let table = &mapped.table;
        let big = bytes.len() >= DETACH_BYTES;
        detach_if(py, big, || verify(bytes, table, &expected, body_digest.as_deref()))
            .map_err(|e| to_py(py, e))
    })
}

/// Checks the prefix and header of the state file `file` (a read-only buffer): every
/// field a reader uses, its type and range, and the sections inside the file
/// (`feedkit_core::header`). Raises `IntegrityError` saying what is wrong, without the
/// file's name (the caller adds it).
#[pyfunction]
pub fn check_header(py: Python<'_>, file: Bound<'_, PyAny>) -> PyResult<()> {
    guard(py, || {
        let buf = Held::<u8>::get(&file, "a state file")?;
        parse_own(buf.items()).map(|_| ()).map_err(|e| to_py(py, e))
    })
}
