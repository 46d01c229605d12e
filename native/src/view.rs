//! The state files Python mapped, viewed as bytes for work done with the GIL released.

use feedkit_core::layout::{Home, Table};
use feedkit_core::state::Layer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::buffers::Held;
use crate::errors::to_py;

/// A state file's numbers as `StateFile.table_args()` gives them: the mapping, then
/// slots offset, slot count, bits, home function, empty sentinel (as u64), heap start,
/// heap end and whether the file is an overlay.
pub type FileArgs<'py> = (Bound<'py, PyAny>, usize, usize, u32, String, u64, usize, usize, bool);

/// One mapped file: a read-only buffer exported by its `mmap` and its checked [`Table`].
pub struct Mapped {
    buf: Held<u8>,
    pub table: Table,
}

impl Mapped {
    /// Views `args`'s buffer; its numbers are checked against the buffer's size, so no
    /// header can make a read leave the file.
    pub fn new(py: Python<'_>, args: FileArgs<'_>) -> PyResult<Mapped> {
        let (mm, slots_at, slot_count, bits, home, empty, heap_start, heap_end, overlay) = args;
        let buf = Held::<u8>::get(&mm, "a state file")?;
        if !buf.readonly() {
            return Err(PyTypeError::new_err("a state file's buffer must be read-only"));
        }
        let home = Home::from_name(&home).map_err(|e| to_py(py, e))?;
        let table = Table::new(
            buf.items().len(), slots_at, slot_count, bits, home, empty, heap_start, heap_end, overlay,
        )
        .map_err(|e| to_py(py, e))?;
        Ok(Mapped { buf, table })
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
        Layer { bytes: self.bytes(), table: &self.table }
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
