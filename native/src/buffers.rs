//! Arrays handed in by Python (numpy arrays, mmaps), read in place.

use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// A C-contiguous buffer of `T`s, held (so its memory stays put) while Rust reads it.
pub struct Held<T: Element>(PyBuffer<T>);

impl<T: Element> Held<T> {
    /// `obj`'s buffer; `what` names it in the TypeError for a strided or mistyped one.
    pub fn get(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Held<T>> {
        let buf = PyBuffer::<T>::get(obj)
            .map_err(|e| PyTypeError::new_err(format!("{what}: {e}")))?;
        if !buf.is_c_contiguous() {
            return Err(PyTypeError::new_err(format!("{what}: the array must be contiguous")));
        }
        Ok(Held(buf))
    }

    /// The buffer's items, in place.
    pub fn items(&self) -> &[T] {
        let ptr = self.0.as_slice_ptr().expect("checked C-contiguous in Held::get");
        // SAFETY: the export pins the memory until `self.0` drops, which outlives the
        // returned borrow of `self`, and `get` checked it is C-contiguous `T`s. The arrays
        // are a RecordSet's (feedkit/format.py) and the heaps of state files: read-only
        // mmaps of files never written after their rename, and arrays nothing writes
        // while a write or a diff runs (the writer's contract, as with numpy's own
        // GIL-free loops).
        unsafe { ptr.as_ref() }
    }
}
