//! Errors cross into Python here, once: core errors and panics become feedkit's own.

use std::panic::{catch_unwind, AssertUnwindSafe};

use feedkit_core::error::{Error, Kind};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static INTEGRITY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static VALIDATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `feedkit.errors.IntegrityError`, imported once.
fn integrity_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    INTEGRITY_ERROR
        .get_or_try_init(py, || {
            let cls = py.import("feedkit.errors")?.getattr("IntegrityError")?;
            Ok::<_, PyErr>(cls.cast_into::<PyType>()?.unbind())
        })
        .map(|cls| cls.bind(py))
}

/// `feedkit.errors.ValidationError`, imported once.
fn validation_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    VALIDATION_ERROR
        .get_or_try_init(py, || {
            let cls = py.import("feedkit.errors")?.getattr("ValidationError")?;
            Ok::<_, PyErr>(cls.cast_into::<PyType>()?.unbind())
        })
        .map(|cls| cls.bind(py))
}

/// A `ValidationError` saying `message`: input feedkit refuses.
pub fn validation(py: Python<'_>, message: impl Into<String>) -> PyErr {
    match validation_error(py) {
        Ok(cls) => PyErr::from_type(cls.clone(), message.into()),
        Err(err) => err,
    }
}

/// An `IntegrityError` saying `message`.
pub fn integrity(py: Python<'_>, message: impl Into<String>) -> PyErr {
    match integrity_error(py) {
        Ok(cls) => PyErr::from_type(cls.clone(), message.into()),
        Err(err) => err,
    }
}

/// `err` as an `IntegrityError` (caused by it), unless it already is one: a record whose
/// bytes Python refuses (bad UTF-8, an unhashable map key) is damage.
pub fn as_damage(py: Python<'_>, err: PyErr) -> PyErr {
    match integrity_error(py) {
        Ok(cls) if err.is_instance(py, cls) => err,
        Ok(_) => {
            let out = integrity(py, err.to_string());
            out.set_cause(py, Some(err));
            out
        }
        Err(e) => e,
    }
}

/// The Python error for a core error.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    match err.kind() {
        Kind::Damaged => integrity(py, err.message()),
        Kind::Invalid => validation(py, err.message()),
    }
}

/// Runs `f`, turning a panic into an `IntegrityError` so that only feedkit's errors
/// reach Python (PyO3 would raise its `PanicException`, a `BaseException`).
#[inline(always)]
pub fn guard<'py, T>(py: Python<'py>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(integrity(py, format!("internal error in feedkit's state layer: {what}")))
        }
    }
}
