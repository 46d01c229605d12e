//! The consumer's delta refresh in one call, the GIL released once for all of it
//! (`feedkit_core::apply`): a thread busy with lookups beside a refresh keeps the GIL
//! for up to the switch interval each time the refreshing thread gives it up, so the
//! refresh's cost beside lookups is its number of releases, not its work.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use feedkit_core::apply::{apply_delta_blob as apply, columnar_overlay, read_columnar, Current, LoadError, Paths, Shape, Target};
use feedkit_core::blob::{decompress, BlobInfo, Failure};
use feedkit_core::layout::{IndexTable, PREFIX_SIZE};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{guard, integrity, to_py};
use crate::files::os_error;
use crate::mapping::{map, Mapping};
use crate::view::{FileArgs, Mapped};

/// The delta blob as the loader has it: its file, then the manifest's key, size,
/// SHA-256 (hex) and decompressed size.
type BlobArgs = (PathBuf, String, u64, String, u64);
/// An index as `StateFile` passes it: absolute value-table offset, entries, empty
/// sentinel, distinct values, absolute postings offset, postings.
type IndexArgs = (usize, usize, u64, usize, usize, usize);
/// The state held: its files (overlay first), the overlay's indexes in `index_fields`
/// order, and the state's record count and digest.
type StateArgs<'py> = (Vec<FileArgs<'py>>, Vec<IndexArgs>, u64, u64);
/// The base's shape: int keys, schema width, key (JSON text), indexed fields.
type ShapeArgs = (bool, usize, String, Vec<String>);
/// The manifest of the new version: feed, version, parent, record count, state digest.
type TargetArgs = (String, u64, u64, u64, u64);

/// Decompresses and checks the delta blob `blob`, merges it into `state` and writes the
/// new overlay file (header fields `fields`, name and JSON text, plus the layout)
/// at `tmp`, verifies it under `part` and renames it to `target`; the blob file is
/// removed. Returns the new file mapped (in the same release). Raises `IntegrityError`
/// for damage (the blob, or the state held) and `OSError` for the cache folder; nothing
/// is then left under `target`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn apply_delta_blob(
    py: Python<'_>,
    blob: BlobArgs,
    state: StateArgs<'_>,
    shape: ShapeArgs,
    target: TargetArgs,
    fields: Vec<(String, String)>,
    tmp: PathBuf,
    part: PathBuf,
    final_path: PathBuf,
) -> PyResult<Mapping> {
    guard(py, || {
        let (path, key, size, sha256, raw_size) = blob;
        let info = BlobInfo::new(&key, size, &sha256, raw_size).map_err(|e| to_py(py, e))?;
        let (files, overlay_indexes, record_count, state_digest) = state;
        if files.is_empty() || files.len() > 2 {
            return Err(integrity(py, format!("a state is 1 or 2 files, not {}", files.len())));
        }
        let mapped = files.into_iter().map(|f| Mapped::new(py, f)).collect::<PyResult<Vec<_>>>()?;
        let (int_keys, width, key_json, index_fields) = shape;
        let key_value = serde_json::from_str(&key_json)
            .map_err(|e| integrity(py, format!("the state's key {key_json:?}: {e}")))?;
        let shape = Shape { int_keys, width, key: key_value, index_fields };
        let overlay_indexes = if mapped.len() == 2 {
            let size = mapped[0].bytes().len();
            overlay_indexes
                .into_iter()
                .map(|(t, n, e, v, p, c)| IndexTable::new(size, t, n, e, v, p, c))
                .collect::<feedkit_core::Result<Vec<_>>>()
                .map_err(|e| to_py(py, e))?
        } else {
            Vec::new()
        };
        if mapped.len() == 2 && overlay_indexes.len() != shape.index_fields.len() {
            return Err(integrity(py, "the overlay's indexes are not the state's"));
        }
        let (feed, version, parent, count, digest) = target;
        let target = Target { feed, version, parent, record_count: count, state_digest: digest };
        let paths = Paths { blob: &path, tmp: &tmp, part: &part, target: &final_path };
        let result = py.detach(|| {
            let current = Current {
                layers: mapped.iter().map(Mapped::layer).collect(),
                overlay_indexes,
                record_count,
                state_digest,
            };
            apply(&info, &current, &shape, &target, &fields, &paths)?;
            map(&final_path).map_err(|e| LoadError::Io(e, final_path.clone()))
        });
        match result {
            Ok(mapped) => Ok(Mapping::new(mapped)),
            Err(LoadError::Damaged(e)) => Err(to_py(py, e)),
            Err(LoadError::Io(e, at)) => Err(os_error(e, &at)),
        }
    })
}

/// Checks and decompresses the blob file `blob` into `out` (created owner-only),
/// streaming, with the GIL released once: `blobs.decompress_file` in one call (a
/// snapshot's load; `feedkit_core::blob::decompress`). Returns the xxh3-128 of the output
/// past its prefix (the state file's body checksum, for `StateFile.verify`). Raises
/// `IntegrityError` for a damaged blob (`out` may then hold part of it: callers write to
/// a scratch name) and `OSError` for either file.
#[pyfunction]
pub fn decompress_blob<'py>(py: Python<'py>, blob: BlobArgs, out: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    guard(py, || {
        let (path, key, size, sha256, raw_size) = blob;
        let info = BlobInfo::new(&key, size, &sha256, raw_size).map_err(|e| to_py(py, e))?;
        let result = py.detach(|| -> Result<[u8; 16], LoadError> {
            let at = |p: &PathBuf| { let p = p.clone(); move |e| LoadError::Io(e, p) };
            let src = File::open(&path).map_err(at(&path))?;
            let actual = src.metadata().map_err(at(&path))?.len();
            let dst = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600)
                .open(&out).map_err(at(&out))?;
            let mut writer = BufWriter::with_capacity(1 << 20, dst);
            let reader = BufReader::with_capacity(1 << 20, src);
            match decompress(reader, actual, &info, &mut writer, PREFIX_SIZE) {
                Ok(digest) => writer.flush().map(|()| digest).map_err(at(&out)),
                Err(Failure::Damaged(e)) => Err(LoadError::Damaged(e)),
                Err(Failure::Read(e)) => Err(LoadError::Io(e, path.clone())),
                Err(Failure::Write(e)) => Err(LoadError::Io(e, out.clone())),
            }
        });
        match result {
            Ok(digest) => Ok(PyBytes::new(py, &digest)),
            Err(LoadError::Damaged(e)) => Err(to_py(py, e)),
            Err(LoadError::Io(e, at)) => Err(os_error(e, &at)),
        }
    })
}

/// The format-1 overlay file a columnar delta blob (FORMAT.md, 11.5) at `blob` stands
/// for (`feedkit_core::apply::columnar_overlay`: size and SHA-256 checked, upserts and
/// deleted keys decoded, planned and written under `tmp` and `part`, read back), or
/// `None` when the blob is not a columnar delta. `shape`: the base's, as for
/// [`apply_delta_blob`]; `max_deleted`: the state's record count. The loader's Python
/// path (`Loader._apply_py`, the differential tests' oracle) uses it.
#[pyfunction]
pub fn columnar_delta_state<'py>(
    py: Python<'py>,
    blob: BlobArgs,
    shape: ShapeArgs,
    max_deleted: u64,
    tmp: PathBuf,
    part: PathBuf,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    guard(py, || {
        let (path, key, size, sha256, raw_size) = blob;
        let info = BlobInfo::new(&key, size, &sha256, raw_size).map_err(|e| to_py(py, e))?;
        let (int_keys, width, key_json, index_fields) = shape;
        let key_value = serde_json::from_str(&key_json)
            .map_err(|e| integrity(py, format!("the state's key {key_json:?}: {e}")))?;
        let shape = Shape { int_keys, width, key: key_value, index_fields };
        let paths = Paths { blob: &path, tmp: &tmp, part: &part, target: &part };
        let result = py.detach(|| -> Result<Option<Vec<u8>>, LoadError> {
            match read_columnar(&info, &path)? {
                Some(bytes) => columnar_overlay(&bytes, &info, &shape, max_deleted, &paths).map(Some),
                None => Ok(None),
            }
        });
        match result {
            Ok(bytes) => Ok(bytes.map(|b| PyBytes::new(py, &b))),
            Err(LoadError::Damaged(e)) => Err(to_py(py, e)),
            Err(LoadError::Io(e, at)) => Err(os_error(e, &at)),
        }
    })
}
