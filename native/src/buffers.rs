//! Arrays handed in by Python (numpy arrays, mmaps), read in place.

use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// A C-contiguous buffer of `T`s, held (so its memory stays put) while Rust reads it.
///
/// Where its items are is taken once, when it is got (an address, not a pointer, so
/// that a `Held` stays Send and Sync without an unsafe impl): a lookup reads a state
/// file's mapping through one of these, and asking the buffer again would cost a call
/// into CPython per lookup.
pub struct Held<T: Element> {
    buf: PyBuffer<T>,
    addr: usize,
    len: usize,
}

impl<T: Element> Held<T> {
    /// `obj`'s buffer; `what` names it in the TypeError for a strided or mistyped one.
    pub fn get(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Held<T>> {
        let buf = PyBuffer::<T>::get(obj)
            .map_err(|e| PyTypeError::new_err(format!("{what}: {e}")))?;
        let ptr = buf
            .as_slice_ptr()
            .ok_or_else(|| PyTypeError::new_err(format!("{what}: the array must be contiguous")))?;
        let (addr, len) = (ptr.as_ptr().cast::<T>() as usize, ptr.len());
        Ok(Held { buf, addr, len })
    }

    /// Whether the exporter promised no writes through the buffer (a `mmap.ACCESS_READ`
    /// mapping, bytes).
    pub fn readonly(&self) -> bool {
        self.buf.readonly()
    }

    /// The buffer's items, in place.
    #[inline(always)]
    pub fn items(&self) -> &[T] {
        let _pinned = &self.buf;
        // SAFETY: `addr` and `len` describe the C-contiguous `T`s of `self.buf` (checked in
        // `get`), whose export pins the memory until `self.buf` drops, which outlives the
        // returned borrow of `self`. The arrays
        // are a RecordSet's (feedkit/format.py) and the heaps of state files: read-only
        // mmaps of files never written after their rename, and arrays nothing writes
        // while a write or a diff runs (the writer's contract, as with numpy's own
        // GIL-free loops).
        unsafe { std::slice::from_raw_parts(self.addr as *const T, self.len) }
    }
}
