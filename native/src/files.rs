//! Small file operations done without releasing the GIL.
//!
//! Python releases the GIL around every blocking system call (open, read, stat,
//! scandir, flock, close...). Beside a thread busy with lookups, each release can cost
//! the releasing thread up to the switch interval (5 ms by default) before it gets the
//! GIL back, far more than the microseconds these calls take on a local disk: so the
//! refresh path's small reads, listings and locks are done here, holding the GIL.
//! Only small work is: a large copy releases it (`copy_file`), and a lock that is taken
//! falls back to Python's blocking wait (`FileLock::try_new` returns None).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The OSError Python's `open` would raise for `err` on `path` (FileNotFoundError...).
pub fn os_error(err: io::Error, path: &Path) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => {
            let text = err.to_string();
            let strerror = text.split(" (os error").next().unwrap_or(&text).to_string();
            PyOSError::new_err((errno, strerror, path.to_path_buf()))
        }
        None => PyOSError::new_err(format!("{}: {err}", path.display())),
    }
}

/// Bytes copied from which `copy_file` releases the GIL (about a millisecond of work).
const DETACH_COPY: u64 = 4 << 20;

/// The bytes of the file `path`, at most `limit` + 1 of them (so a caller can tell a
/// file past its limit). Raises OSError as `open` would.
#[pyfunction]
pub fn read_small<'py>(py: Python<'py>, path: PathBuf, limit: u64) -> PyResult<Bound<'py, PyBytes>> {
    let mut data = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut data))
        .map_err(|e| os_error(e, &path))?;
    Ok(PyBytes::new(py, &data))
}

/// The names in the folder `path` (no `.` and `..`); OSError as `os.scandir`.
#[pyfunction]
pub fn list_dir(path: PathBuf) -> PyResult<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(&path).map_err(|e| os_error(e, &path))? {
        let entry = entry.map_err(|e| os_error(e, &path))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Removes the file `path`; False when it could not be (missing, permissions).
#[pyfunction]
pub fn remove_file(path: PathBuf) -> bool {
    fs::remove_file(path).is_ok()
}

/// Copies `src` to `dst` (created owner-only, or truncated) and returns the bytes
/// copied; the GIL is released for a large file only. OSError names the file at fault.
#[pyfunction]
pub fn copy_file(py: Python<'_>, src: PathBuf, dst: PathBuf) -> PyResult<u64> {
    let mut from = File::open(&src).map_err(|e| os_error(e, &src))?;
    let size = from.metadata().map_err(|e| os_error(e, &src))?.len();
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&dst)
        .map_err(|e| os_error(e, &dst))?;
    let mut copy = move || io::copy(&mut from, &mut to);
    let copied = if size >= DETACH_COPY { py.detach(copy) } else { copy() };
    // io::copy cannot say which side failed: a write errno (ENOSPC...) is the caller's
    // file, the rest is reported on the source, as shutil.copyfile does.
    copied.map_err(|e| match e.raw_os_error() {
        Some(28 | 122 | 30 | 27) => os_error(e, &dst), // ENOSPC, EDQUOT, EROFS, EFBIG
        _ => os_error(e, &src),
    })
}

/// An exclusive `flock` on a lock file, held until `close()` (or the object's end).
#[pyclass(module = "feedkit._native")]
pub struct FileLock {
    file: Option<File>,
}

#[pymethods]
impl FileLock {
    /// Opens (creating, owner-only) `path` and takes its lock without waiting; None when
    /// another open file holds it. Raises OSError when the file cannot be opened.
    #[staticmethod]
    fn try_new(path: PathBuf) -> PyResult<Option<FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| os_error(e, &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file: Some(file) })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(os_error(e, &path)),
        }
    }

    /// The descriptor (for a forked child, which closes its copy).
    fn fileno(&self) -> Option<i32> {
        self.file.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Closes the file, which lets go of the lock. Idempotent.
    fn close(&mut self) {
        self.file = None;
    }
}
