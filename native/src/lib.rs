//! `feedkit._native`: the Python boundary of the compiled state layer.
//!
//! Small on purpose: a [`reader::Reader`] per served state, built by `feedkit/state.py`
//! from the files it mapped; [`encode::encode_batch`], the producer's encode. The logic lives in `feedkit-core`; this crate turns its
//! results into Python objects and its errors into feedkit's error tree, once, in
//! [`errors`]. No panic crosses into Python: every entry point runs under
//! [`errors::guard`], which raises `IntegrityError` for one.

mod arrow;
mod buffers;
mod decode;
mod diff;
mod encode;
mod errors;
mod reader;
mod write;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_function(wrap_pyfunction!(write::write_state, m)?)?;
    m.add_function(wrap_pyfunction!(write::record_digest, m)?)?;
    m.add_function(wrap_pyfunction!(diff::diff, m)?)?;
    m.add_function(wrap_pyfunction!(diff::present, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_array, m)?)?;
    m.add("FORMAT_VERSION", feedkit_core::layout::FORMAT_VERSION)?;
    Ok(())
}
