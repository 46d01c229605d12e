//! `feedkit._native`: the Python boundary of the compiled state layer.
//!
//! Small on purpose: a [`reader::Reader`] per served state, built by `feedkit/state.py`
//! from the files it mapped; the producer's [`encode::encode_batch`], [`diff::diff`] and
//! [`write::write_state`]; and the refresh path's functions over mapped files
//! ([`verify::verify_state`], [`merge::delta_effect`], [`merge::unshadowed`],
//! [`merge::posted_hashes`]). The logic lives in `feedkit-core`; this crate turns its
//! results into Python objects and its errors into feedkit's error tree, once, in
//! [`errors`]. No panic crosses into Python: every entry point runs under
//! [`errors::guard`], which raises `IntegrityError` for one.

mod arrow;
mod buffers;
mod decode;
mod diff;
mod encode;
mod errors;
mod files;
mod load;
mod mapping;
mod merge;
mod reader;
mod snapshot;
mod verify;
mod view;
mod write;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_class::<diff::Differ>()?;
    m.add_function(wrap_pyfunction!(write::write_state, m)?)?;
    m.add_function(wrap_pyfunction!(write::write_compact_state, m)?)?;
    m.add_function(wrap_pyfunction!(write::record_digest, m)?)?;
    m.add_function(wrap_pyfunction!(diff::diff, m)?)?;
    m.add_function(wrap_pyfunction!(diff::present, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_array, m)?)?;
    m.add_function(wrap_pyfunction!(encode::has_duplicate_keys, m)?)?;
    m.add_function(wrap_pyfunction!(verify::verify_state, m)?)?;
    m.add_function(wrap_pyfunction!(verify::check_header, m)?)?;
    m.add_function(wrap_pyfunction!(merge::delta_effect, m)?)?;
    m.add_function(wrap_pyfunction!(merge::unshadowed, m)?)?;
    m.add_function(wrap_pyfunction!(merge::posted_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(merge::canonical_records, m)?)?;
    m.add_function(wrap_pyfunction!(load::apply_delta_blob, m)?)?;
    m.add_function(wrap_pyfunction!(load::decompress_blob, m)?)?;
    m.add_function(wrap_pyfunction!(load::columnar_delta_state, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot::write_delta_blob, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot::write_snapshot_blob, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot::snapshot_blob_header, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot::build_snapshot, m)?)?;
    m.add_function(wrap_pyfunction!(files::read_small, m)?)?;
    m.add_function(wrap_pyfunction!(files::list_dir, m)?)?;
    m.add_function(wrap_pyfunction!(files::remove_file, m)?)?;
    m.add_function(wrap_pyfunction!(files::copy_file, m)?)?;
    m.add_function(wrap_pyfunction!(mapping::map_file, m)?)?;
    m.add_class::<mapping::Mapping>()?;
    m.add_class::<files::FileLock>()?;
    m.add("FORMAT_VERSION", feedkit_core::layout::FORMAT_VERSION)?;
    Ok(())
}
