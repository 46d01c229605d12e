//! Writing state files and the record digest, with the GIL released
//! (feedkit/format.py's `write_state`, feedkit/merge.py's `record_digest`).

use std::path::PathBuf;

use feedkit_core::codings::Kind;
use feedkit_core::compact::{plan_compact, write_compact, CompactPlan};
use feedkit_core::records::Records;
use feedkit_core::layout::IndexSections;
use feedkit_core::write::{plan, write_file, IndexTable, Plan};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::buffers::Held;
use crate::errors::{guard, to_py};
use crate::files::os_error;

/// A RecordSet's arrays, as `feedkit/format.py` passes them.
pub struct RecordArgs {
    pub starts: Held<i64>,
    pub lengths: Held<i64>,
    pub sources: Vec<Held<u8>>,
    pub source: Option<Held<u8>>,
}

impl RecordArgs {
    pub fn get(
        starts: &Bound<'_, PyAny>,
        lengths: &Bound<'_, PyAny>,
        sources: &Bound<'_, PyAny>,
        source: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<RecordArgs> {
        Ok(RecordArgs {
            starts: Held::get(starts, "starts")?,
            lengths: Held::get(lengths, "lengths")?,
            sources: sources
                .try_iter()?
                .map(|s| Held::get(&s?, "a record source"))
                .collect::<PyResult<_>>()?,
            source: source.map(|s| Held::get(s, "source")).transpose()?,
        })
    }

    pub fn records(&self) -> feedkit_core::Result<Records<'_>> {
        Records::new(
            self.sources.iter().map(Held::items).collect(),
            self.source.as_ref().map(Held::items),
            self.starts.items(),
            self.lengths.items(),
        )
    }
}


/// The header's `indexes` (FORMAT.md, 4.2; the same in both formats), as a list.
fn index_metas<'py>(py: Python<'py>, tables: &[IndexTable], sections: &[IndexSections]) -> PyResult<Bound<'py, PyList>> {
    let indexes = PyList::empty(py);
    for (t, s) in tables.iter().zip(sections) {
        let meta = PyDict::new(py);
        meta.set_item("slots", t.slots())?;
        meta.set_item("bits", t.bits)?;
        meta.set_item("empty", t.empty)?;
        meta.set_item("values", t.values)?;
        meta.set_item("table", s.table)?;
        meta.set_item("postings", s.postings)?;
        meta.set_item("count", s.count)?;
        indexes.append(meta)?;
    }
    Ok(indexes)
}

/// The numbers the header holds, for `render` (feedkit/format.py renders the JSON).
fn layout<'py>(py: Python<'py>, p: &Plan, int_keys: bool) -> PyResult<Bound<'py, PyDict>> {
    let pl = &p.placement;
    let slots = PyDict::new(py);
    slots.set_item("offset", 0)?;
    slots.set_item("count", pl.slot_count)?;
    slots.set_item("bits", pl.bits)?;
    slots.set_item("hash", pl.home.name())?;
    if int_keys {
        slots.set_item("empty", p.empty as i64)?;
    } else {
        slots.set_item("empty", p.empty)?;
    }
    slots.set_item("max_probe", pl.max_probe)?;
    let heap = PyDict::new(py);
    heap.set_item("offset", p.layout.heap)?;
    heap.set_item("length", p.layout.heap_length)?;
    let indexes = index_metas(py, &p.indexes, &p.layout.indexes)?;
    let out = PyDict::new(py);
    out.set_item("count", pl.order.len())?;
    out.set_item("tombstones", p.tombstones)?;
    out.set_item("slots", slots)?;
    out.set_item("heap", heap)?;
    out.set_item("indexes", indexes)?;
    out.set_item("body_length", p.layout.body_length)?;
    Ok(out)
}

/// Writes a state file at `tmp` and renames it to `target` (FORMAT.md, 4).
///
/// `keys` are uint64 slot keys: int64 keys' bits (`int_keys`) or xxh3 hashes;
/// `tombstone` a uint8 per record (nonzero: a tombstone) or None; `index_hashes` a
/// uint64 array per index field, in `index_fields` order. Between placing the entries and
/// writing them, `render(layout)` returns the JSON header's bytes: `layout` holds the
/// writer's numbers (count, tombstones, slots, heap, indexes as a list, body_length).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tmp, target, keys, int_keys, starts, lengths, sources, source, tombstone, index_hashes, render))]
pub fn write_state(
    py: Python<'_>,
    tmp: PathBuf,
    target: PathBuf,
    keys: &Bound<'_, PyAny>,
    int_keys: bool,
    starts: &Bound<'_, PyAny>,
    lengths: &Bound<'_, PyAny>,
    sources: &Bound<'_, PyAny>,
    source: Option<&Bound<'_, PyAny>>,
    tombstone: Option<&Bound<'_, PyAny>>,
    index_hashes: Vec<Bound<'_, PyAny>>,
    render: &Bound<'_, PyAny>,
) -> PyResult<()> {
    guard(py, || {
        let keys = Held::<u64>::get(keys, "keys")?;
        let args = RecordArgs::get(starts, lengths, sources, source)?;
        let tombstone = tombstone.map(|t| Held::<u8>::get(t, "tombstone")).transpose()?;
        let index_hashes = index_hashes
            .iter()
            .map(|h| Held::<u64>::get(h, "index hashes"))
            .collect::<PyResult<Vec<_>>>()?;
        let hashes: Vec<&[u64]> = index_hashes.iter().map(Held::items).collect();
        let tomb = tombstone.as_ref().map(Held::items);
        let (records, p) = py
            .detach(|| {
                let records = args.records()?;
                let p = plan(keys.items(), int_keys, &records, tomb, &hashes)?;
                Ok((records, p))
            })
            .map_err(|e| to_py(py, e))?;
        let header = render.call1((layout(py, &p, int_keys)?,))?;
        let header = header.cast::<PyBytes>()?.as_bytes();
        py.detach(|| write_file(&p, keys.items(), &records, header, &tmp, &target))
            .map_err(|e| os_error(e, &tmp))?;
        Ok(())
    })
}

/// The numbers a format-2 header holds, for `render` (FORMAT.md, 10.2).
pub fn compact_layout<'py>(py: Python<'py>, p: &CompactPlan<'_>, int_keys: bool) -> PyResult<Bound<'py, PyDict>> {
    let entries = PyDict::new(py);
    entries.set_item("offset", 0)?;
    entries.set_item("count", p.count() + 1)?;
    entries.set_item("size", p.entry_size)?;
    entries.set_item("hash", p.home.name())?;
    if int_keys {
        entries.set_item("empty", p.empty as i64)?;
    } else {
        entries.set_item("empty", p.empty)?;
    }
    let buckets = PyDict::new(py);
    buckets.set_item("offset", p.buckets_at)?;
    buckets.set_item("count", p.directory.len() - 1)?;
    buckets.set_item("max", p.max_bucket)?;
    let heap = PyDict::new(py);
    heap.set_item("offset", p.heap_at)?;
    heap.set_item("length", p.heap_length())?;
    let columns = PyList::empty(py);
    for (c, kind) in p.coder.kinds.iter().enumerate() {
        let column = PyDict::new(py);
        column.set_item("coding", kind.name())?;
        if let Some(d) = p.dicts.iter().find(|d| d.column == c) {
            column.set_item("offset", d.at)?;
            column.set_item("values", d.values)?;
            column.set_item("length", d.length)?;
            if *kind == Kind::Elements {
                column.set_item("bits", d.bits)?;
            }
        }
        columns.append(column)?;
    }
    let indexes = index_metas(py, &p.indexes, &p.index_sections)?;
    let out = PyDict::new(py);
    out.set_item("count", p.count())?;
    out.set_item("tombstones", 0)?;
    out.set_item("entries", entries)?;
    out.set_item("buckets", buckets)?;
    out.set_item("heap", heap)?;
    out.set_item("columns", columns)?;
    out.set_item("indexes", indexes)?;
    out.set_item("body_length", p.body_length)?;
    Ok(out)
}

/// Writes a format-2 base file at `tmp` and renames it to `target` (FORMAT.md, 10):
/// as [`write_state`] without tombstones, with the schema's column `kinds` (to choose
/// the codings) and the key's record fields `key_fields`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tmp, target, keys, int_keys, starts, lengths, sources, source, index_hashes, kinds, key_fields, render))]
pub fn write_compact_state(
    py: Python<'_>,
    tmp: PathBuf,
    target: PathBuf,
    keys: &Bound<'_, PyAny>,
    int_keys: bool,
    starts: &Bound<'_, PyAny>,
    lengths: &Bound<'_, PyAny>,
    sources: &Bound<'_, PyAny>,
    source: Option<&Bound<'_, PyAny>>,
    index_hashes: Vec<Bound<'_, PyAny>>,
    kinds: Vec<String>,
    key_fields: Vec<usize>,
    render: &Bound<'_, PyAny>,
) -> PyResult<()> {
    guard(py, || {
        let keys = Held::<u64>::get(keys, "keys")?;
        let args = RecordArgs::get(starts, lengths, sources, source)?;
        let index_hashes = index_hashes
            .iter()
            .map(|h| Held::<u64>::get(h, "index hashes"))
            .collect::<PyResult<Vec<_>>>()?;
        let hashes: Vec<&[u64]> = index_hashes.iter().map(Held::items).collect();
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        let records = args.records().map_err(|e| to_py(py, e))?;
        let p = py
            .detach(|| plan_compact(keys.items(), int_keys, &records, &hashes, &kinds, &key_fields, &[]))
            .map_err(|e| to_py(py, e))?;
        let header = render.call1((compact_layout(py, &p, int_keys)?,))?;
        let header = header.cast::<PyBytes>()?.as_bytes();
        py.detach(|| write_compact(&p, keys.items(), header, &tmp, &target))
            .map_err(|e| os_error(e, &tmp))?;
        Ok(())
    })
}

/// Sum (mod 2**64) of xxh3-64 over the records `heap[starts[i]:starts[i] + lengths[i]]`.
#[pyfunction]
pub fn record_digest(
    py: Python<'_>,
    heap: &Bound<'_, PyAny>,
    starts: &Bound<'_, PyAny>,
    lengths: &Bound<'_, PyAny>,
) -> PyResult<u64> {
    guard(py, || {
        let args = RecordArgs::get(starts, lengths, &PyList::new(py, [heap])?.into_any(), None)?;
        py.detach(|| {
            let records = args.records()?;
            Ok(feedkit_core::diff::record_digest((0..records.len()).map(|i| records.get(i))))
        })
        .map_err(|e| to_py(py, e))
    })
}
