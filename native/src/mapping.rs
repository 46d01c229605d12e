//! A state file mapped by Rust (memmap2) and shown to Python as a read-only buffer,
//! in place of `mmap.mmap`: the mapping is made where no GIL is held (inside the refresh's
//! one release, or holding the GIL for the microseconds an `mmap` call takes), whereas
//! Python's `mmap.mmap` gives the GIL up around its system call, and beside a thread busy
//! with lookups each release may cost the switch interval (`files.rs`).
//!
//! It offers what `StateFile` uses of a mapping: the buffer protocol (read-only, one
//! dimension of bytes: `numpy.frombuffer`, `memoryview`, `struct.unpack_from`),
//! `len()`, indexing and slicing into `bytes`, and `close()`.

use std::fs::File;
use std::os::raw::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;
use pyo3::exceptions::{PyBufferError, PyIndexError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PySlice};

use crate::files::os_error;

/// Maps the file `path` read-only.
pub fn map(path: &Path) -> std::io::Result<Mmap> {
    let file = File::open(path)?;
    // SAFETY: memmap2's contract is that the file is not changed while mapped. State
    // files are never written after their rename to a final name (FORMAT.md, 4.1; the
    // cache and the producer write a new file and rename it), only deleted, which leaves
    // a mapping valid; this is the same assumption Python's read-only mmap of them makes.
    unsafe { Mmap::map(&file) }
}

/// The mapping and the number of buffers exported from it (it is not unmapped while any is).
struct Inner {
    map: Option<Mmap>,
    exports: usize,
}

#[pyclass(module = "feedkit._native", frozen)]
pub struct Mapping {
    inner: Mutex<Inner>,
}

impl Mapping {
    pub fn new(map: Mmap) -> Mapping {
        Mapping { inner: Mutex::new(Inner { map: Some(map), exports: 0 }) }
    }

    fn with<T>(&self, f: impl FnOnce(&[u8]) -> PyResult<T>) -> PyResult<T> {
        let inner = self.inner.lock().map_err(|_| PyValueError::new_err("mapping poisoned"))?;
        match &inner.map {
            Some(map) => f(map),
            None => Err(PyValueError::new_err("mmap closed or invalid")),
        }
    }
}

#[pymethods]
impl Mapping {
    fn __len__(&self) -> PyResult<usize> {
        self.with(|b| Ok(b.len()))
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.with(|b| {
            if let Ok(slice) = index.cast::<PySlice>() {
                let s = slice.indices(b.len() as isize)?;
                if s.step == 1 {
                    let (start, stop) = (s.start as usize, (s.stop.max(s.start)) as usize);
                    return Ok(PyBytes::new(py, &b[start..stop]).into_any());
                }
                let picked: Vec<u8> = (0..s.slicelength)
                    .map(|i| b[(s.start + i as isize * s.step) as usize])
                    .collect();
                return Ok(PyBytes::new(py, &picked).into_any());
            }
            let i: isize = index.extract()?;
            let j = if i < 0 { i + b.len() as isize } else { i };
            if j < 0 || j as usize >= b.len() {
                return Err(PyIndexError::new_err("mmap index out of range"));
            }
            Ok(b[j as usize].into_pyobject(py)?.into_any())
        })
    }

    /// Unmaps the file; a BufferError while buffers exported from it are alive (as
    /// `mmap.close` raises). Idempotent.
    fn close(&self) -> PyResult<()> {
        let mut inner = self.inner.lock().map_err(|_| PyValueError::new_err("mapping poisoned"))?;
        if inner.exports > 0 {
            return Err(PyBufferError::new_err("cannot close exported pointers exist"));
        }
        inner.map = None;
        Ok(())
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.inner.lock().map_err(|_| PyValueError::new_err("mapping poisoned"))?.map.is_none())
    }

    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let this = slf.get();
        let mut inner = this.inner.lock().map_err(|_| PyBufferError::new_err("mapping poisoned"))?;
        let (ptr, len) = match &inner.map {
            Some(map) => (map.as_ptr(), map.len()),
            None => return Err(PyBufferError::new_err("mmap closed or invalid")),
        };
        // SAFETY: `view` is the buffer CPython asks us to fill. PyBuffer_FillInfo fills a
        // read-only (readonly = 1: it refuses PyBUF_WRITABLE) one-dimensional byte view of
        // `len` bytes at `ptr` and takes a reference to `slf` for the view's lifetime. The
        // bytes stay mapped for as long as the view lives: `close` refuses while
        // `exports` > 0, and the object (holding the map) outlives its views.
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr as *mut c_void, len as ffi::Py_ssize_t, 1, flags)
        };
        if filled != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        inner.exports += 1;
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.exports = inner.exports.saturating_sub(1);
        }
    }
}

/// Maps the state file `path` read-only (holding the GIL: the open and mmap calls take
/// microseconds). OSError as `open` raises it.
#[pyfunction]
pub fn map_file(path: PathBuf) -> PyResult<Mapping> {
    map(&path).map(Mapping::new).map_err(|e| os_error(e, &path))
}
