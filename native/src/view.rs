//! The state files Python mapped, viewed as bytes for work done with the GIL released.

use feedkit_core::codings::Codings;
use feedkit_core::header::parse_own;
use feedkit_core::layout::Table;
use feedkit_core::state::Layer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::buffers::Held;
use crate::errors::to_py;

/// A state file as `StateFile.table_args()` gives it: its read-only mapping.
pub type FileArgs<'py> = Bound<'py, PyAny>;

/// One mapped file: a read-only buffer exported by its `mmap`, its checked [`Table`]
/// and, in format 2, its columns' codings.
pub struct Mapped {
    buf: Held<u8>,
    pub table: Table,
    pub codings: Option<Codings>,
}

impl Mapped {
    /// Views `mm`'s buffer and parses its header (`feedkit_core::header`: every number
    /// checked against the buffer's size, so no header can make a read leave the file).
    pub fn new(py: Python<'_>, mm: FileArgs<'_>) -> PyResult<Mapped> {
        let buf = Held::<u8>::get(&mm, "a state file")?;
        if !buf.readonly() {
            return Err(PyTypeError::new_err("a state file's buffer must be read-only"));
        }
        let parsed = parse_own(buf.items()).map_err(|e| to_py(py, e))?;
        Ok(Mapped { buf, table: parsed.table, codings: parsed.codings })
    }

    /// The file's bytes, for as long as `self` lives; `Send`, so work on them may run
    /// with the GIL released (`py.detach`): the buffer is read-only (checked in `new`),
    /// so no Python code can write through it, with or without the GIL.
    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        self.buf.items()
    }

    /// The file as a layer of a state (`feedkit_core::state`).
    #[inline(always)]
    pub fn layer(&self) -> Layer<'_> {
        Layer { bytes: self.bytes(), table: &self.table, codings: self.codings.as_ref() }
    }
}

/// Runs `f` with the GIL released if `big`, else holding it.
///
/// A release costs the releasing thread more than the work when the work is short:
/// another thread busy in Python (lookups) keeps the GIL for up to the switch interval
/// (`sys.getswitchinterval()`, 5 ms by default) before the releasing thread gets it
/// back. Holding it instead stalls the other threads no longer than the releasing
/// thread's Python code does anyway (the interpreter switches threads at that interval).
/// So work well under the switch interval keeps the GIL; longer work releases it.
pub fn detach_if<T: Send>(py: Python<'_>, big: bool, f: impl FnOnce() -> T + Send) -> T {
    if big {
        py.detach(f)
    } else {
        f()
    }
}

/// Bytes of a file from which its verification releases the GIL (about 3 ms: hashing
/// runs at several GB/s, the slot table at a few ns per slot).
pub const DETACH_BYTES: usize = 16 << 20;
/// Keys to probe from which a merge releases the GIL (about 3 ms: a probe into a large
/// table misses the caches, 0.1-0.3 us each).
pub const DETACH_PROBES: usize = 16 << 10;
