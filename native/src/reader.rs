//! `Reader`: the lookups of one served state (`[overlay, base]` or `[base]`).
//!
//! `feedkit/state.py` builds one per version from the files it mapped and the numbers
//! their headers hold (already checked by `StateFile`; checked again here against each
//! file's size, so no header can make a read leave its file). A lookup probes the
//! overlay first: a hit there (a record or a tombstone) ends it (FORMAT.md, 4.5).

use feedkit_core::error::Error;
use feedkit_core::keyhash::{hash_bytes, hash_composite, Part};
use feedkit_core::layout::IndexTable;
use feedkit_core::msgpack::{Reader as Tokens, Token};
use feedkit_core::verify::MAX_DEPTH;
use feedkit_core::probe::{record_at, Found};
use feedkit_core::state::{live_at, lookup, Layer};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};

use crate::view::{FileArgs, Mapped};
use crate::decode::{Caches, Decoder, KeyField, PartKind};
use crate::errors::{as_damage, guard, integrity, to_py};

/// One mapped state file (its read-only mapping, held for as long as the Reader lives,
/// and its checked table).
type File = Mapped;

/// Keys whose memory `get_many` reads ahead of probing or decoding them.
const GROUP: usize = 16;

/// A probe's outcome for one key, before anything is decoded.
#[derive(Clone, Copy)]
enum Hit {
    Miss,
    Record { file: usize, key: u64, start: usize, end: usize },
}

/// The lookups of one state. Immutable: a new version gets a new Reader.
#[pyclass(frozen, module = "feedkit._native")]
pub struct Reader {
    files: Vec<File>,
    record: Py<PyType>,
    width: usize,
    parts: Vec<PartKind>,
    /// The record fields holding the key parts, in key order.
    key_pos: Vec<usize>,
    decoder: Decoder,
    /// Per file: its dictionaries' decoded values (format 2).
    caches: Vec<Caches>,
    /// `KeySpec.normalize` for this feed: canonical key or KeyTypeError.
    normalize: Py<PyAny>,
    /// `(key, exc) -> IntegrityError` naming the feed, the key and the files.
    damaged: Py<PyAny>,
    /// `(key, UnicodeEncodeError) -> KeyTypeError` for a str key that is not text.
    badkey: Py<PyAny>,
}

#[pymethods]
impl Reader {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        files: Vec<FileArgs<'_>>,
        record: Bound<'_, PyType>,
        width: usize,
        parts: Vec<String>,
        key_pos: Vec<usize>,
        use_list: bool,
        ext_hook: Py<PyAny>,
        normalize: Py<PyAny>,
        damaged: Py<PyAny>,
        badkey: Py<PyAny>,
    ) -> PyResult<Reader> {
        guard(py, || {
            if !record.is_subclass_of::<PyTuple>()? {
                return Err(PyTypeError::new_err("record must be a tuple subclass"));
            }
            if files.is_empty() || parts.is_empty() || parts.len() != key_pos.len()
                || key_pos.iter().any(|&p| p >= width)
            {
                return Err(PyTypeError::new_err("a Reader needs files and key positions in the record"));
            }
            let files = files
                .into_iter()
                .map(|args| Mapped::new(py, args))
                .collect::<PyResult<Vec<File>>>()?;
            // File contents (a damaged overlay's schema over a format-2 base): damage.
            if let Some(c) = files.iter().filter_map(|f| f.codings.as_ref()).find(|c| c.columns.len() != width) {
                return Err(integrity(py, format!(
                    "a format-2 file of {} columns under a schema of {width}", c.columns.len()
                )));
            }
            let caches = files.iter().map(|f| Caches::new(f.codings.as_ref())).collect();
            Ok(Reader {
                caches,
                files,
                record: record.unbind(),
                width,
                parts: parts.iter().map(|p| PartKind::from_name(p)).collect::<PyResult<_>>()?,
                key_pos,
                decoder: Decoder { use_list, ext_hook },
                normalize,
                damaged,
                badkey,
            })
        })
    }

    /// The record for `key`, or None when the feed has no such key.
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        guard(py, || {
            Ok(self.lookup(py, key)?.unwrap_or_else(|| py.None().into_bound(py)))
        })
    }

    /// Records for `keys` (a list or any iterable), aligned with them; None where absent.
    ///
    /// Every key is probed before any record is decoded, so the slot reads of many keys
    /// are in flight together.
    fn get_many<'py>(&self, py: Python<'py>, keys: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            // 1. Normalise and hash every key (this touches Python objects).
            let mut norm = Vec::new();
            let mut slot_keys = Vec::new();
            for key in keys.try_iter()? {
                let key = key?;
                match self.slot_key(py, &key)? {
                    None => {
                        norm.push(key);
                        slot_keys.push(None);
                    }
                    Some((nkey, slot_key)) => {
                        norm.push(nkey);
                        slot_keys.push(Some(slot_key));
                    }
                }
            }
            // 2. Probe, and 3. decode, each a group of keys at a time with the group's
            // memory read first: the reads of independent keys overlap their cache misses.
            let mut hits = Vec::with_capacity(slot_keys.len());
            for (group, nkeys) in slot_keys.chunks(GROUP).zip(norm.chunks(GROUP)) {
                self.warm_slots(group.iter().flatten().copied());
                for (slot_key, nkey) in group.iter().zip(nkeys) {
                    hits.push(match slot_key {
                        Some(k) => self.probe(py, nkey, *k)?,
                        None => Hit::Miss,
                    });
                }
            }
            let mut out = Vec::with_capacity(hits.len());
            for (group, nkeys) in hits.chunks(GROUP).zip(norm.chunks(GROUP)) {
                self.warm_records(group);
                for (hit, nkey) in group.iter().zip(nkeys) {
                    out.push(self.decode_hit(py, nkey, *hit)?.unwrap_or_else(|| py.None().into_bound(py)));
                }
            }
            PyList::new(py, out)
        })
    }

    /// Records for int64 keys in a buffer (a numpy array), aligned with them.
    fn get_many_int<'py>(&self, py: Python<'py>, keys: PyBuffer<i64>) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            if self.parts != [PartKind::Int] {
                return Err(PyTypeError::new_err("get_many_int needs a feed with one int key"));
            }
            let keys = keys.to_vec(py)?;
            let mut hits = Vec::with_capacity(keys.len());
            for group in keys.chunks(GROUP) {
                self.warm_slots(group.iter().map(|&k| k as u64));
                for &k in group {
                    match self.probe_silent(k as u64) {
                        Ok(hit) => hits.push(hit),
                        Err(e) => return Err(self.damaged(py, &k.into_pyobject(py)?.into_any(), to_py(py, e))),
                    }
                }
            }
            let mut out = Vec::with_capacity(keys.len());
            for (group, ks) in hits.chunks(GROUP).zip(keys.chunks(GROUP)) {
                self.warm_records(group);
                for (hit, &k) in group.iter().zip(ks) {
                    let nkey = k.into_pyobject(py)?.into_any();
                    out.push(self.decode_hit(py, &nkey, *hit)?.unwrap_or_else(|| py.None().into_bound(py)));
                }
            }
            PyList::new(py, out)
        })
    }

    /// The slots of file `file` (0 is the first of the state's files) that hold live
    /// records of the state, ascending, as int64 bytes: the overlay-over-base rule in one
    /// place. An overlay's tombstones are not live; a base's records whose key the overlay
    /// holds (as a record or a tombstone) are shadowed. Runs without the GIL.
    fn live_slots<'py>(&self, py: Python<'py>, file: usize) -> PyResult<Bound<'py, PyBytes>> {
        guard(py, || {
            let f = self.files.get(file).ok_or_else(|| integrity(py, "no such file in the state"))?;
            let slots = 0..f.table.slot_count.saturating_sub(1);
            let live = self.live(py, file, slots.map(|j| j as i64))?;
            Ok(PyBytes::new(py, &live))
        })
    }

    /// The live records of file `file` that its secondary index `index` posts under the
    /// value hash `vhash` and whose field `pos` equals `value` (values of other hashes
    /// may share `vhash`): one file's part of `find`. `index` is the index's
    /// `(value table offset, entries, empty, values, postings offset, postings)`.
    #[allow(clippy::too_many_arguments)]
    fn find<'py>(
        &self,
        py: Python<'py>,
        file: usize,
        index: (usize, usize, u64, usize, usize, usize),
        bits: u32,
        vhash: u64,
        pos: usize,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            let f = self.files.get(file).ok_or_else(|| integrity(py, "no such file in the state"))?;
            let (table_at, entries, empty, values, postings_at, count) = index;
            let posted = IndexTable::new(f.bytes().len(), table_at, entries, empty, values, postings_at, count)
                .and_then(|t| t.postings_of(f.bytes(), bits, vhash))
                .map_err(|e| to_py(py, e))?;
            let layers: Vec<Layer<'_>> = self.files.iter().map(Mapped::layer).collect();
            let record = self.record.bind(py);
            let mut out = Vec::new();
            for j in posted.into_iter().map(|j| j as usize) {
                // A posting past the table (damage) names no record; slot_count - 1 is
                // the terminal slot, never a record's.
                if j + 1 >= f.table.slot_count {
                    continue;
                }
                let key = f.table.slot_key(f.bytes(), j).ok_or_else(|| integrity(py, format!("slot {j}")))?;
                if key == f.table.empty {
                    continue;
                }
                let Some(live) = live_at(&layers, file, j, key).map_err(|e| to_py(py, e))? else {
                    continue;
                };
                let rec = self.decode(py, record, file, key, live.start, live.end, &[], false)
                    .map_err(|e| as_damage(py, e))?
                    .expect("no key to miss");
                if rec.cast::<PyTuple>()?.get_item(pos)?.eq(value)? {
                    out.push(rec);
                }
            }
            PyList::new(py, out)
        })
    }

    /// The keys of the records of slots `slots` of file `file`, tombstones as None: for
    /// `keys()` of a hashed-key feed, whose slots hold hashes. Only the key fields are
    /// decoded; the others are skipped.
    fn keys<'py>(&self, py: Python<'py>, file: usize, slots: PyBuffer<i64>) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            let f = self.files.get(file).ok_or_else(|| integrity(py, "no such file in the state"))?;
            let mut out = Vec::with_capacity(slots.item_count());
            for j in slots.to_vec(py)? {
                let j = usize::try_from(j).map_err(|_| integrity(py, format!("slot {j}")))?;
                match record_at(f.bytes(), &f.table, j).map_err(|e| to_py(py, e))? {
                    Found::Record { start, end, .. } if f.codings.is_none() => {
                        let key = self.key_of(py, &f.bytes()[start..end]);
                        out.push(key.map_err(|e| as_damage(py, e))?)
                    }
                    Found::Record { start, end, .. } => {
                        let slot_key = f.table.slot_key(f.bytes(), j).unwrap_or(0);
                        let rec = self.decode(py, self.record.bind(py), file, slot_key, start, end, &[], false)
                            .map_err(|e| as_damage(py, e))?
                            .expect("no key to miss");
                        out.push(self.key_in(py, rec.cast_into::<PyTuple>()?)?)
                    }
                    _ => out.push(py.None().into_bound(py)),
                }
            }
            PyList::new(py, out)
        })
    }

    /// `(key, record)` pairs for the records of slots `slots` of file `file` (live slots:
    /// a tombstone is damage here): for `items()`.
    fn items<'py>(&self, py: Python<'py>, file: usize, slots: PyBuffer<i64>) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            let f = self.files.get(file).ok_or_else(|| integrity(py, "no such file in the state"))?;
            let record = self.record.bind(py);
            let mut out = Vec::with_capacity(slots.item_count());
            for j in slots.to_vec(py)? {
                let j = usize::try_from(j).map_err(|_| integrity(py, format!("slot {j}")))?;
                let Found::Record { start, end, .. } = record_at(f.bytes(), &f.table, j).map_err(|e| to_py(py, e))?
                else {
                    return Err(integrity(py, format!("slot {j} holds no record")));
                };
                let slot_key = f.table.slot_key(f.bytes(), j).unwrap_or(0);
                let rec = self.decode(py, record, file, slot_key, start, end, &[], false)
                    .map_err(|e| as_damage(py, e))?
                    .expect("no key to miss");
                let rec = rec.cast_into::<PyTuple>()?;
                let key = self.key_in(py, rec.clone())?;
                out.push(PyTuple::new(py, [key, rec.into_any()])?);
            }
            PyList::new(py, out)
        })
    }
}

impl Reader {
    /// Decodes the record `[start, end)` of file `file`'s entry holding `slot_key`, in
    /// either format (see [`Decoder::record_of`] for `key` and `exact`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyType>,
        file: usize,
        slot_key: u64,
        start: usize,
        end: usize,
        key: &[KeyField<'_, 'py>],
        exact: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let f = &self.files[file];
        let bytes = &f.bytes()[start..end];
        match &f.codings {
            None => self.decoder.record_of(py, record, self.width, bytes, key, exact),
            Some(c) => self.decoder.compact_record(py, record, f.bytes(), c, &self.caches[file], slot_key, bytes, key, exact),
        }
    }

    /// The key of a decoded record: its key field, or a tuple of them in key order.
    fn key_in<'py>(&self, py: Python<'py>, rec: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.key_pos[..] {
            [pos] => rec.get_item(pos)?,
            _ => {
                let parts: Vec<Bound<'py, PyAny>> =
                    self.key_pos.iter().map(|&p| rec.get_item(p)).collect::<PyResult<_>>()?;
                PyTuple::new(py, parts)?.into_any()
            }
        })
    }

    /// The key of one record: its key fields decoded (one value, or a tuple in key order),
    /// the other fields skipped.
    fn key_of<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mut r = Tokens::new(bytes);
        match r.token().map_err(|e| to_py(py, e))? {
            Token::Array(n) if n == self.width => {}
            _ => return Err(integrity(py, format!("a record that is not an array of {} fields", self.width))),
        }
        let mut parts: Vec<Option<Bound<'py, PyAny>>> = vec![None; self.key_pos.len()];
        let mut left = parts.len();
        for i in 0..self.width {
            match self.key_pos.iter().position(|&p| p == i) {
                Some(k) => {
                    parts[k] = Some(self.decoder.value(py, &mut r, 0)?);
                    left -= 1;
                    if left == 0 {
                        break; // the fields after the last key field are not needed
                    }
                }
                None => r.skip(MAX_DEPTH).map_err(|e| to_py(py, e))?,
            }
        }
        let mut parts = parts.into_iter().map(|p| p.ok_or_else(|| integrity(py, "a key field is missing")));
        if self.key_pos.len() == 1 {
            return parts.next().expect("one key part");
        }
        Ok(PyTuple::new(py, parts.collect::<PyResult<Vec<_>>>()?)?.into_any())
    }

    /// Reads the home slot of each key in each file, and drops what it read: a software
    /// prefetch without the prefetch intrinsics' `unsafe`, so the probes that follow find
    /// their first slots cached.
    #[inline]
    fn warm_slots(&self, keys: impl Iterator<Item = u64>) {
        let mut sink = 0u64;
        for key in keys {
            for f in &self.files {
                sink ^= f.table.slot_key(f.bytes(), f.table.first_of(f.bytes(), key)).unwrap_or(0);
            }
        }
        std::hint::black_box(sink);
    }

    /// Reads the first byte of each hit's record (see `warm_slots`).
    #[inline]
    fn warm_records(&self, hits: &[Hit]) {
        let mut sink = 0u8;
        for hit in hits {
            if let Hit::Record { file, start, .. } = *hit {
                sink ^= self.files[file].bytes().get(start).copied().unwrap_or(0);
            }
        }
        std::hint::black_box(sink);
    }

    /// The live slots among `slots` of file `file`, as little-endian int64 bytes.
    fn live(&self, py: Python<'_>, file: usize, slots: impl Iterator<Item = i64> + Send) -> PyResult<Vec<u8>> {
        if file >= self.files.len() {
            return Err(integrity(py, "no such file in the state"));
        }
        let layers: Vec<Layer<'_>> = self.files.iter().map(Mapped::layer).collect();
        py.detach(|| {
            let mut out = Vec::new();
            let layer = &layers[file];
            for j in slots {
                let j = usize::try_from(j).map_err(|_| Error::damaged(format!("slot {j}")))?;
                let key = layer.table.slot_key(layer.bytes, j).ok_or_else(|| Error::damaged(format!("slot {j}")))?;
                if key != layer.table.empty && live_at(&layers, file, j, key)?.is_some() {
                    out.extend_from_slice(&(j as i64).to_le_bytes());
                }
            }
            Ok(out)
        })
        .map_err(|e: Error| to_py(py, e))
    }

    /// The record for `key`, decoded, or None.
    #[inline]
    fn lookup<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some((nkey, slot_key)) = self.slot_key(py, key)? else { return Ok(None) };
        let hit = self.probe(py, key, slot_key)?;
        self.decode_hit(py, &nkey, hit)
    }

    /// The normalised key and what the slot table holds for it: the int itself or the
    /// key's hash. None for a key no feed can hold (an int beyond 64 bits).
    #[inline]
    fn slot_key<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyAny>, u64)>> {
        if let [part] = self.parts[..] {
            let nkey = if part.is_exact(key) { key.clone() } else { self.normalize.bind(py).call1((key,))? };
            let slot_key = match part {
                PartKind::Int => match nkey.extract::<i64>() {
                    Ok(v) => v as u64,
                    Err(_) => return Ok(None), // beyond int64: no key of any feed
                },
                PartKind::Str => {
                    let s = nkey.cast::<PyString>()?;
                    match s.to_str() {
                        Ok(text) => hash_bytes(text.as_bytes()),
                        Err(exc) => return Err(self.badkey(py, key, exc)),
                    }
                }
                PartKind::Bytes => hash_bytes(nkey.cast::<PyBytes>()?.as_bytes()),
            };
            return Ok(Some((nkey, slot_key)));
        }
        let exact = key
            .cast_exact::<PyTuple>()
            .ok()
            .filter(|t| t.len() == self.parts.len())
            .filter(|t| t.iter().zip(&self.parts).all(|(p, kind)| kind.is_exact(&p)));
        let nkey = match exact {
            Some(t) => t.clone().into_any(),
            None => self.normalize.bind(py).call1((key,))?,
        };
        let tuple = nkey.cast::<PyTuple>()?;
        let items: Vec<Bound<'py, PyAny>> = tuple.iter().collect();
        let mut parts = Vec::with_capacity(items.len());
        for (item, kind) in items.iter().zip(&self.parts) {
            parts.push(match kind {
                PartKind::Int => match item.extract::<i64>() {
                    Ok(v) => Part::Int(v),
                    Err(_) => match item.extract::<u64>() {
                        Ok(v) => Part::UInt(v),
                        Err(_) => return Ok(None), // beyond 64 bits: msgpack cannot pack it
                    },
                },
                PartKind::Str => match item.cast::<PyString>()?.to_str() {
                    Ok(text) => Part::Str(text),
                    Err(exc) => return Err(self.badkey(py, &nkey, exc)),
                },
                PartKind::Bytes => Part::Bytes(item.cast::<PyBytes>()?.as_bytes()),
            });
        }
        let mut buf = Vec::with_capacity(64);
        let h = hash_composite(&parts, &mut buf);
        Ok(Some((nkey, h)))
    }

    /// Probes the files in order (overlay first) for `slot_key`.
    #[inline]
    fn probe(&self, py: Python<'_>, key: &Bound<'_, PyAny>, slot_key: u64) -> PyResult<Hit> {
        self.probe_silent(slot_key).map_err(|e| self.damaged(py, key, to_py(py, e)))
    }

    #[inline]
    fn probe_silent(&self, slot_key: u64) -> feedkit_core::Result<Hit> {
        let found = match &self.files[..] {
            [only] => lookup(&[only.layer()], slot_key)?,
            [over, base] => lookup(&[over.layer(), base.layer()], slot_key)?,
            _ => None, // Reader::new takes one or two files
        };
        Ok(found.map_or(Hit::Miss, |l| Hit::Record { file: l.file, key: slot_key, start: l.start, end: l.end }))
    }

    /// Decodes a probe's record; for hashed keys, None unless its key is `nkey` (a key
    /// the feed does not hold may share a 64-bit hash with one it does).
    #[inline]
    fn decode_hit<'py>(
        &self,
        py: Python<'py>,
        nkey: &Bound<'py, PyAny>,
        hit: Hit,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Hit::Record { file, key: slot_key, start, end } = hit else { return Ok(None) };
        let record = self.record.bind(py);
        // Int keys need no check (the slot holds the key), but reuse the asked int.
        let exact = self.parts != [PartKind::Int];
        let rec = if let [pos] = self.key_pos[..] {
            let key = [KeyField { pos, kind: self.parts[0], obj: nkey }];
            self.decode(py, record, file, slot_key, start, end, &key, exact)
        } else {
            let items: Vec<Bound<'py, PyAny>> = nkey.cast::<PyTuple>()?.iter().collect();
            let key: Vec<KeyField<'_, 'py>> = self
                .key_pos
                .iter()
                .zip(&self.parts)
                .zip(&items)
                .map(|((&pos, &kind), obj)| KeyField { pos, kind, obj })
                .collect();
            self.decode(py, record, file, slot_key, start, end, &key, exact)
        };
        rec.map_err(|e| self.damaged(py, nkey, e))
    }

    /// The IntegrityError for `key`'s unreadable record, caused by `err`.
    fn damaged(&self, py: Python<'_>, key: &Bound<'_, PyAny>, err: PyErr) -> PyErr {
        match self.damaged.bind(py).call1((key, err.value(py))) {
            Ok(exc) => {
                let out = PyErr::from_value(exc);
                out.set_cause(py, Some(err));
                out
            }
            Err(e) => e,
        }
    }

    fn badkey(&self, py: Python<'_>, key: &Bound<'_, PyAny>, err: PyErr) -> PyErr {
        match self.badkey.bind(py).call1((key, err.value(py))) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}
