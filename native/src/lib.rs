//! `feedkit._native`: the Python boundary of the compiled state layer.
//!
//! Small on purpose: a [`reader::Reader`] per served state, built by `feedkit/state.py`
//! from the files it mapped, and the refresh path's functions over mapped files (the
//! GIL released for large work): [`verify::verify_state`] (`StateFile.verify`),
//! [`merge::delta_effect`], [`merge::unshadowed`] and [`merge::posted_hashes`]
//! (`feedkit/merge.py`). The logic lives in `feedkit-core`; this crate turns its
//! results into Python objects and its errors into feedkit's error tree, once, in
//! [`errors`]. No panic crosses into Python: every entry point runs under
//! [`errors::guard`], which raises `IntegrityError` for one.

mod decode;
mod errors;
mod merge;
mod reader;
mod verify;
mod view;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::Reader>()?;
    m.add_function(wrap_pyfunction!(verify::verify_state, m)?)?;
    m.add_function(wrap_pyfunction!(merge::delta_effect, m)?)?;
    m.add_function(wrap_pyfunction!(merge::unshadowed, m)?)?;
    m.add_function(wrap_pyfunction!(merge::posted_hashes, m)?)?;
    m.add("FORMAT_VERSION", feedkit_core::layout::FORMAT_VERSION)?;
    Ok(())
}
