//! Records decoded from msgpack straight into Python objects (docs/FORMAT.md, section 6):
//! the same types `msgpack.unpackb(..., ext_hook=codec.decode_ext)` gives.
//!
//! The containers are built with CPython's own constructors and filled in place
//! (`PyTuple_SET_ITEM` and friends): going through PyO3's iterator constructors would
//! allocate a Rust vector per record, which a lookup cannot afford.

use feedkit_core::codings::{read_elements, unpack, Codings, Dictionary, Kind, NO_STRUCT};
use feedkit_core::error::Error;
use feedkit_core::msgpack::{Reader, Token};
use pyo3::sync::PyOnceLock;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::exceptions::PyTypeError;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString, PyType};

use crate::errors::{integrity, to_py};

/// The same bound as verify's record check: a value it passed always decodes.
use feedkit_core::verify::MAX_DEPTH;

/// The kind of one key part (FORMAT.md, 5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PartKind {
    Int,
    Str,
    Bytes,
}

impl PartKind {
    pub fn from_name(name: &str) -> PyResult<PartKind> {
        match name {
            "int" => Ok(PartKind::Int),
            "str" => Ok(PartKind::Str),
            "bytes" => Ok(PartKind::Bytes),
            other => Err(PyTypeError::new_err(format!("unknown key part kind {other:?}"))),
        }
    }

    /// Whether `part` already has this kind's exact type (else it is normalised first).
    #[inline(always)]
    pub fn is_exact(self, part: &Bound<'_, PyAny>) -> bool {
        match self {
            PartKind::Int => part.is_exact_instance_of::<PyInt>(),
            PartKind::Str => part.is_exact_instance_of::<PyString>(),
            PartKind::Bytes => part.is_exact_instance_of::<PyBytes>(),
        }
    }
}

/// A key part a record is expected to hold: field `pos` should be `obj` (exact type).
pub struct KeyField<'a, 'py> {
    pub pos: usize,
    pub kind: PartKind,
    pub obj: &'a Bound<'py, PyAny>,
}

impl KeyField<'_, '_> {
    /// Whether `token` encodes exactly this part's value.
    #[inline(always)]
    fn holds(&self, token: &Token<'_>) -> bool {
        match (self.kind, token) {
            (PartKind::Int, Token::Int(v)) => self.obj.extract::<i64>().ok() == Some(*v),
            (PartKind::Int, Token::UInt(v)) => self.obj.extract::<u64>().ok() == Some(*v),
            (PartKind::Str, Token::Str(s)) => self
                .obj
                .cast::<PyString>()
                .ok()
                .and_then(|p| p.to_str().ok())
                .is_some_and(|t| t.as_bytes() == *s),
            (PartKind::Bytes, Token::Bin(b)) => {
                self.obj.cast::<PyBytes>().is_ok_and(|p| p.as_bytes() == *b)
            }
            _ => false,
        }
    }
}

/// How to decode values of one schema.
pub struct Decoder {
    /// Arrays become lists (a column's type holds a list) or tuples.
    pub use_list: bool,
    /// `codec.decode_ext`, for ext values (dates, decimals, ...).
    pub ext_hook: Py<PyAny>,
}

/// Takes ownership of a new reference CPython returned, or the error it set.
///
/// # Safety
/// `ptr` must be a new (owned) reference or null with an exception set.
#[inline(always)]
unsafe fn owned(py: Python<'_>, ptr: *mut ffi::PyObject) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: the caller passes a pointer returned by a CPython constructor.
    unsafe { Bound::from_owned_ptr_or_err(py, ptr) }
}

impl Decoder {
    /// Decodes one whole record (a msgpack array of `width` fields) into an instance of
    /// `record`, a tuple subclass (the schema's named tuple), for a looked-up key: a key field whose bytes are the asked
    /// key's holds the asked key's own object (no new str or int is built, and no
    /// comparison is needed afterwards). None when a key field is not the asked key's and
    /// `exact` is set (a hashed key: the record belongs to another key of the same hash).
    pub fn record_of<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyType>,
        width: usize,
        bytes: &[u8],
        key: &[KeyField<'_, 'py>],
        exact: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut r = Reader::new(bytes);
        match r.token().map_err(|e| to_py(py, e))? {
            Token::Array(n) if n == width => {}
            Token::Array(n) => {
                return Err(integrity(py, format!("a record of {n} fields, the schema has {width}")))
            }
            _ => return Err(integrity(py, "a record that is not a msgpack array")),
        }
        // SAFETY: `record` is a tuple subclass with tuple's item layout (checked by
        // `Reader::new`), so its tp_alloc returns an owned instance with `width` null
        // items, each set exactly once below; a tuple with null items is valid to drop.
        let tuple = unsafe {
            let tp = record.as_ptr().cast::<ffi::PyTypeObject>();
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            owned(py, alloc(tp, width as ffi::Py_ssize_t))?
        };
        for i in 0..width {
            let token = r.token().map_err(|e| to_py(py, e))?;
            let value = match key.iter().find(|f| f.pos == i) {
                Some(f) if f.holds(&token) => f.obj.clone(),
                Some(_) if exact => return Ok(None),
                _ => self.decode_token(py, token, &mut r, 0)?,
            };
            // SAFETY: `tuple` is the new tuple above, `i < width`, and SET_ITEM steals the
            // new reference `into_ptr` hands over.
            unsafe { ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, value.into_ptr()) };
        }
        if r.remaining() != 0 {
            return Err(integrity(py, "bytes after the end of a record"));
        }
        Ok(Some(tuple))
    }

    /// Decodes one value from `r`.
    pub fn value<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let token = r.token().map_err(|e| to_py(py, e))?;
        self.decode_token(py, token, r, depth)
    }

    /// Decodes the value that starts with `token` (its items follow in `r`).
    #[inline(always)]
    fn decode_token<'py>(
        &self,
        py: Python<'py>,
        token: Token<'_>,
        r: &mut Reader<'_>,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY (every block below): each CPython constructor returns a new reference or
        // null with an exception set, which `owned` turns into a Bound or a PyErr; the
        // pointers and lengths passed come from slices that outlive the call.
        Ok(match token {
            Token::Nil => py.None().into_bound(py),
            Token::Bool(b) => {
                let obj = if b { unsafe { ffi::Py_True() } } else { unsafe { ffi::Py_False() } };
                // SAFETY: True and False are immortal singletons; from_borrowed_ptr increfs.
                unsafe { Bound::from_borrowed_ptr(py, obj) }
            }
            Token::Int(v) => unsafe { owned(py, ffi::PyLong_FromLongLong(v))? },
            Token::UInt(v) => unsafe { owned(py, ffi::PyLong_FromUnsignedLongLong(v))? },
            Token::F32(v) => unsafe { owned(py, ffi::PyFloat_FromDouble(v as f64))? },
            Token::F64(v) => unsafe { owned(py, ffi::PyFloat_FromDouble(v))? },
            Token::Str(s) => text(py, s)?,
            Token::Bin(b) => PyBytes::new(py, b).into_any(),
            Token::Array(n) => {
                let depth = deeper(py, depth)?;
                if self.use_list {
                    let list = unsafe { owned(py, ffi::PyList_New(n as ffi::Py_ssize_t))? };
                    for i in 0..n {
                        let item = self.value(py, r, depth)?;
                        // SAFETY: a new list of n null items; SET_ITEM steals the reference.
                        unsafe {
                            ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr())
                        };
                    }
                    list
                } else {
                    let tuple = unsafe { owned(py, ffi::PyTuple_New(n as ffi::Py_ssize_t))? };
                    for i in 0..n {
                        let item = self.value(py, r, depth)?;
                        // SAFETY: a new tuple of n null items; SET_ITEM steals the reference.
                        unsafe {
                            ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, item.into_ptr())
                        };
                    }
                    tuple
                }
            }
            Token::Map(n) => {
                let depth = deeper(py, depth)?;
                let dict = PyDict::new(py);
                for _ in 0..n {
                    let k = self.value(py, r, depth)?;
                    let v = self.value(py, r, depth)?;
                    dict.set_item(k, v)?; // an unhashable key (a list) is a TypeError: damage
                }
                dict.into_any()
            }
            Token::Ext(code, data) => {
                self.ext_hook.bind(py).call1((code, PyBytes::new(py, data)))?
            }
        })
    }
}

/// A str from UTF-8 bytes. ASCII (most keys, codes and names) is copied straight into a
/// new compact string, which skips CPython's decoder; anything else goes through it,
/// strict, so bad UTF-8 is a UnicodeDecodeError (turned into damage by the caller).
#[inline(always)]
fn text<'py>(py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let n = s.len() as ffi::Py_ssize_t;
    if s.is_ascii() {
        // SAFETY: PyUnicode_New(n, 127) returns a new compact ASCII string with room for
        // exactly n one-byte characters (or null with an exception set); the n bytes
        // copied are ASCII, as that kind requires, and CPython wrote the terminating NUL.
        unsafe {
            let obj = owned(py, ffi::PyUnicode_New(n, 127))?;
            std::ptr::copy_nonoverlapping(s.as_ptr(), ffi::PyUnicode_DATA(obj.as_ptr()).cast::<u8>(), s.len());
            Ok(obj)
        }
    } else {
        // SAFETY: the decoder reads n bytes from a live slice and returns a new reference
        // or null with an exception set.
        unsafe { owned(py, ffi::PyUnicode_DecodeUTF8(s.as_ptr().cast(), n, c"strict".as_ptr())) }
    }
}

fn deeper(py: Python<'_>, depth: usize) -> PyResult<usize> {
    if depth >= MAX_DEPTH {
        return Err(to_py(py, Error::damaged("msgpack value nested too deep")));
    }
    Ok(depth + 1)
}

// -- format 2 -------------------------------------------------------------------------------

/// Dictionaries of at most this many values have their values decoded once per process
/// and kept (FORMAT.md, 10.5); larger ones are decoded on each use, so that a cache
/// never costs a process more than a few MiB of private memory per column.
pub const CACHE_VALUES: usize = 1 << 16;

/// The decoded values of one format-2 file's dictionaries, per column (empty for a
/// column without a dictionary or with a large one), each filled on first use.
pub struct Caches {
    columns: Vec<Vec<PyOnceLock<Py<PyAny>>>>,
}

impl Caches {
    pub fn new(codings: Option<&Codings>) -> Caches {
        let columns = codings
            .map(|c| {
                c.columns
                    .iter()
                    .map(|col| match col.dict {
                        Some(d) if d.values <= CACHE_VALUES => (0..d.values).map(|_| PyOnceLock::new()).collect(),
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Caches { columns }
    }
}

/// Whether a value whose canonical bytes start with `first` decodes to an immutable
/// Python object (anything but a list or a dict), which records may share.
#[inline(always)]
fn shareable(first: u8) -> bool {
    !matches!(first, 0x80..=0x9f | 0xdc..=0xdf)
}

impl Decoder {
    /// One whole canonical value (a dictionary entry): exactly one msgpack value.
    fn whole<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mut r = Reader::new(bytes);
        let v = self.value(py, &mut r, 0)?;
        if r.remaining() != 0 {
            return Err(integrity(py, "bytes after a dictionary value"));
        }
        Ok(v)
    }

    /// Value `id` of column `c`'s dictionary `d` in `file`: the cached object when the
    /// value is immutable and the column cached, else decoded now.
    #[inline]
    fn dict_value<'py>(
        &self,
        py: Python<'py>,
        file: &[u8],
        d: &Dictionary,
        cache: &[PyOnceLock<Py<PyAny>>],
        id: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = d.value(file, id).map_err(|e| to_py(py, e))?;
        match (cache.get(id as usize), bytes.first()) {
            (Some(cell), Some(&first)) if shareable(first) => {
                let obj = cell.get_or_try_init(py, || self.whole(py, bytes).map(Bound::unbind))?;
                Ok(obj.bind(py).clone())
            }
            _ => self.whole(py, bytes),
        }
    }

    /// Decodes the format-2 record `bytes` of the entry holding `slot_key` in `file`
    /// (coded by `codings`) into an instance of `record`; as [`Decoder::record_of`] for
    /// the key fields. A `key` column is the slot key itself (or the asked key's object).
    #[allow(clippy::too_many_arguments)]
    pub fn compact_record<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyType>,
        file: &[u8],
        codings: &Codings,
        caches: &Caches,
        slot_key: u64,
        bytes: &[u8],
        key: &[KeyField<'_, 'py>],
        exact: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let width = codings.columns.len();
        let mut r = Reader::new(bytes);
        // SAFETY: as in `record_of`: a tuple subclass's tp_alloc returns an owned instance
        // with `width` null items, each set exactly once below.
        let tuple = unsafe {
            let tp = record.as_ptr().cast::<ffi::PyTypeObject>();
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            owned(py, alloc(tp, width as ffi::Py_ssize_t))?
        };
        let none: &[PyOnceLock<Py<PyAny>>] = &[];
        for (i, col) in codings.columns.iter().enumerate() {
            let cache = caches.columns.get(i).map_or(none, Vec::as_slice);
            let value = match (col.kind, &col.dict) {
                (Kind::Key, _) => match key.iter().find(|f| f.pos == i) {
                    Some(f) => f.obj.clone(),
                    // SAFETY: PyLong_FromLongLong returns a new reference or null with an
                    // exception set, which `owned` turns into a PyErr.
                    None => unsafe { owned(py, ffi::PyLong_FromLongLong(slot_key as i64))? },
                },
                (Kind::Plain, _) => {
                    let token = r.token().map_err(|e| to_py(py, e))?;
                    match key.iter().find(|f| f.pos == i) {
                        Some(f) if f.holds(&token) => f.obj.clone(),
                        Some(_) if exact => return Ok(None),
                        _ => self.decode_token(py, token, &mut r, 0)?,
                    }
                }
                (Kind::Dict, Some(d)) => {
                    let id = r.uint().map_err(|e| to_py(py, e))?;
                    self.dict_value(py, file, d, cache, id)?
                }
                (Kind::Elements, Some(d)) => match read_elements(&mut r, d.bits).map_err(|e| to_py(py, e))? {
                    None => py.None().into_bound(py),
                    Some((n, ids)) => {
                        // SAFETY: a new list or tuple of n null items, each set once below;
                        // SET_ITEM steals the reference `into_ptr` hands over.
                        let seq = unsafe {
                            if self.use_list {
                                owned(py, ffi::PyList_New(n as ffi::Py_ssize_t))?
                            } else {
                                owned(py, ffi::PyTuple_New(n as ffi::Py_ssize_t))?
                            }
                        };
                        for k in 0..n {
                            let item = self.dict_value(py, file, d, cache, unpack(ids, k, d.bits))?;
                            // SAFETY: `seq` is the new list or tuple of n items above, `k < n`
                            // and each slot is set once; SET_ITEM steals `item`'s reference.
                            unsafe {
                                if self.use_list {
                                    ffi::PyList_SET_ITEM(seq.as_ptr(), k as ffi::Py_ssize_t, item.into_ptr());
                                } else {
                                    ffi::PyTuple_SET_ITEM(seq.as_ptr(), k as ffi::Py_ssize_t, item.into_ptr());
                                }
                            }
                        }
                        seq
                    }
                },
                (Kind::Fields, Some(d)) => {
                    if r.peek() == Some(NO_STRUCT) {
                        r.raw(1).map_err(|e| to_py(py, e))?;
                        py.None().into_bound(py)
                    } else {
                        let dict = PyDict::new(py);
                        for k in 0..d.values {
                            let name = self.dict_value(py, file, d, cache, k as u64)?;
                            dict.set_item(name, self.value(py, &mut r, 0)?)?;
                        }
                        dict.into_any()
                    }
                }
                _ => return Err(integrity(py, "a coded column has no dictionary")),
            };
            // SAFETY: `tuple` is the new tuple above, `i < width`; SET_ITEM steals `value`.
            unsafe { ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, value.into_ptr()) };
        }
        if r.remaining() != 0 {
            return Err(integrity(py, "bytes after the end of a record"));
        }
        Ok(Some(tuple))
    }
}
