//! Columnar snapshot blobs (`feedkit_core::snapshot`, FORMAT.md 11): the producer
//! encodes one, the consumer checks one and rebuilds its format-2 state file, each
//! with the GIL released except for the header, which Python renders.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use feedkit_core::compact::{plan_compact, write_compact};
use feedkit_core::error::Error;
use feedkit_core::snapshot::{self, Expected, Key, Part, MAGIC, MAX_HEADER};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sha2::{Digest, Sha256};

use crate::buffers::Held;
use crate::errors::{guard, to_py};
use crate::files::os_error;
use crate::write::{compact_layout, RecordArgs};

/// The blob as the loader has it: its file, then the manifest's key, size, SHA-256
/// (hex) and raw size (bytes of the canonical records).
type BlobArgs = (PathBuf, String, u64, String, u64);
/// The state's shape: schema width, the key's record fields and part kinds, the
/// indexed fields' record positions, the schema's column kinds.
type ShapeArgs = (usize, Vec<usize>, Vec<String>, Vec<usize>, Vec<String>);

fn parts(py: Python<'_>, names: &[String]) -> PyResult<Vec<Part>> {
    names.iter().map(|p| Part::parse(p)).collect::<Result<_, _>>().map_err(|e| to_py(py, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the snapshot blob of a RecordSet's records (any order; FORMAT.md 11) with
/// the descriptive `header` (JSON) to `dst`. Returns its size, SHA-256 (hex) and raw
/// size.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (dst, header, starts, lengths, sources, source, width, key_fields, key_parts, level))]
pub fn write_snapshot_blob(
    py: Python<'_>,
    dst: PathBuf,
    header: &[u8],
    starts: &Bound<'_, PyAny>,
    lengths: &Bound<'_, PyAny>,
    sources: &Bound<'_, PyAny>,
    source: Option<&Bound<'_, PyAny>>,
    width: usize,
    key_fields: Vec<usize>,
    key_parts: Vec<String>,
    level: i32,
) -> PyResult<(u64, String, u64)> {
    guard(py, || {
        let args = RecordArgs::get(starts, lengths, sources, source)?;
        let parts = parts(py, &key_parts)?;
        let records = args.records().map_err(|e| to_py(py, e))?;
        let raw_size: u64 = (0..records.len()).map(|i| records.length(i) as u64).sum();
        let key = Key { fields: &key_fields, parts: &parts };
        let blob = py
            .detach(|| snapshot::encode(&records, width, &key, header, level))
            .map_err(|e| to_py(py, e))?;
        write_blob(py, &dst, &blob, raw_size)
    })
}

/// Writes the columnar delta blob (FORMAT.md 11.5) of a delta RecordSet's upserts
/// (records, any order) and `deleted` slot keys with the overlay's descriptive `header`
/// (JSON) to `dst`. Returns its size, SHA-256 (hex) and raw size (the upserts' bytes).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (dst, header, starts, lengths, sources, source, deleted, width, key_fields, key_parts, level))]
pub fn write_delta_blob(
    py: Python<'_>,
    dst: PathBuf,
    header: &[u8],
    starts: &Bound<'_, PyAny>,
    lengths: &Bound<'_, PyAny>,
    sources: &Bound<'_, PyAny>,
    source: Option<&Bound<'_, PyAny>>,
    deleted: &Bound<'_, PyAny>,
    width: usize,
    key_fields: Vec<usize>,
    key_parts: Vec<String>,
    level: i32,
) -> PyResult<(u64, String, u64)> {
    guard(py, || {
        let args = RecordArgs::get(starts, lengths, sources, source)?;
        let deleted: Held<u64> = Held::get(deleted, "deleted")?;
        let parts = parts(py, &key_parts)?;
        let records = args.records().map_err(|e| to_py(py, e))?;
        let raw_size: u64 = (0..records.len()).map(|i| records.length(i) as u64).sum();
        let key = Key { fields: &key_fields, parts: &parts };
        let blob = py
            .detach(|| snapshot::encode_delta(&records, deleted.items(), width, &key, header, level))
            .map_err(|e| to_py(py, e))?;
        write_blob(py, &dst, &blob, raw_size)
    })
}

fn write_blob(py: Python<'_>, dst: &PathBuf, blob: &[u8], raw_size: u64) -> PyResult<(u64, String, u64)> {
    py.detach(|| -> std::io::Result<(u64, String, u64)> {
        let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dst)?;
        out.write_all(blob)?;
        Ok((blob.len() as u64, hex(&Sha256::digest(blob)), raw_size))
    })
    .map_err(|e| os_error(e, dst))
}

/// The header bytes of the snapshot blob at `path` (untrusted: read before its
/// SHA-256 is checked, so that Python can parse it; [`build_snapshot`] checks that the
/// authenticated blob holds the same bytes).
#[pyfunction]
pub fn snapshot_blob_header<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    guard(py, || {
        let read = py.detach(|| -> std::io::Result<Result<Vec<u8>, Error>> {
            let mut file = File::open(&path)?;
            let mut head = [0u8; 12];
            let got = read_up_to(&mut file, &mut head)?;
            if got < head.len() || head[..MAGIC.len()] != MAGIC {
                return Ok(Err(Error::damaged("not a columnar snapshot blob (no FEEDKITC magic)")));
            }
            let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
            if len > MAX_HEADER {
                return Ok(Err(Error::damaged(format!("a header of {len} bytes"))));
            }
            let mut header = vec![0u8; len];
            if read_up_to(&mut file, &mut header)? < len {
                return Ok(Err(Error::damaged(format!("the blob ends inside its {len}-byte header"))));
            }
            Ok(Ok(header))
        });
        let header = read.map_err(|e| os_error(e, &path))?.map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &header))
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Checks the snapshot blob `blob` (its size and SHA-256 against the manifest's, its
/// header against `header`, its records' size, count and digest against the
/// manifest's `expect`: record count, state digest) and writes the format-2 state file
/// it holds at `tmp`, renamed to `target`; `render` turns the layout into the file's
/// JSON header. Raises `IntegrityError` for damage and `OSError` for the files.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn build_snapshot(
    py: Python<'_>,
    blob: BlobArgs,
    header: &[u8],
    shape: ShapeArgs,
    expect: (u64, u64),
    tmp: PathBuf,
    target: PathBuf,
    render: &Bound<'_, PyAny>,
) -> PyResult<()> {
    guard(py, || {
        let (path, key, size, sha256, raw_size) = blob;
        let (width, key_fields, key_parts, index, kinds) = shape;
        let parts = parts(py, &key_parts)?;
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        // The size first, so that a blob longer than its manifest says is never read.
        let actual = fs::metadata(&path).map_err(|e| os_error(e, &path))?.len();
        if actual != size {
            return Err(to_py(py, Error::damaged(format!(
                "snapshot blob {key}: {actual} bytes, the manifest says {size}"))));
        }
        let bytes = py.detach(|| fs::read(&path)).map_err(|e| os_error(e, &path))?;
        let expected = Expected {
            width,
            key: Key { fields: &key_fields, parts: &parts },
            index: &index,
            raw_size,
            record_count: expect.0,
            state_digest: expect.1,
        };
        let built = py.detach(|| {
            if bytes.len() as u64 != size {
                return Err(Error::damaged(format!("snapshot blob {key}: {} bytes, the manifest says {size}", bytes.len())));
            }
            if hex(&Sha256::digest(&bytes)) != sha256 {
                return Err(Error::damaged(format!("snapshot blob {key}: SHA-256 mismatch (corrupt or replaced blob)")));
            }
            if snapshot::header(&bytes)? != header {
                return Err(Error::damaged(format!("snapshot blob {key}: its header changed while it was read")));
            }
            let rebuilt = snapshot::decode(&bytes, &expected)
                .map_err(|e| Error::damaged(format!("snapshot blob {key}: {}", e.message())))?;
            Ok(rebuilt)
        })
        .map_err(|e| to_py(py, e))?;
        let records = built.records.records().map_err(|e| to_py(py, e))?;
        let hashes: Vec<&[u64]> = built.derived.index_hashes.iter().map(Vec::as_slice).collect();
        let keys = &built.derived.keys;
        let int_keys = expected.key.int_slots();
        let plan = py
            .detach(|| plan_compact(keys, int_keys, &records, &hashes, &kinds, &key_fields, &built.records.taps))
            .map_err(|e| to_py(py, Error::damaged(format!("snapshot blob {key}: {}", e.message()))))?;
        let rendered = render.call1((compact_layout(py, &plan, int_keys)?,))?;
        let rendered = rendered.cast::<PyBytes>()?.as_bytes();
        py.detach(|| write_compact(&plan, keys, rendered, &tmp, &target)).map_err(|e| os_error(e, &tmp))?;
        Ok(())
    })
}
