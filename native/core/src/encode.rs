//! Arrow arrays to records: the producer side of the record codec (docs/FORMAT.md,
//! sections 5 and 6).
//!
//! Each value is written as the bytes `msgpack.packb(value, default=codec.encode_ext)`
//! gives for the Python value pyarrow's `to_pylist()` makes of it: the canonical form
//! that key hashes, index hashes, record digests and the producer's diff rely on.
//!
//! An encoder is built once per column from the array's type (and its field, whose
//! metadata names extension types), borrowing the array's buffers. Each column is then
//! encoded on its own, in one typed loop (a list's, map's or struct's children once per
//! range, a dictionary's values once), and [`Prepared::write`] assembles the rows from
//! the columns' bytes: an array header, then each column's value. A row's slot key and
//! index hashes are taken from those same bytes, so they agree with the records by
//! construction.
//!
//! The arrays come from the producer's own process (pyarrow, through the C data
//! interface), their layout checked by the boundary (`ArrayData::validate`). String
//! bytes are copied as they are, never read as `str`, and every index is bounds-checked,
//! so an array whose offsets lie panics (an error at the boundary), and nothing worse.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrowPrimitiveType, BooleanArray, FixedSizeBinaryArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, TimeUnit};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::msgpack::{
    str_or_bin_header_len, write_array_header, write_bin, write_bool, write_ext, write_ext_header,
    write_f64, write_int, write_map_header, write_nil, write_str, write_str_bytes, write_uint,
    Reader, Token,
};

/// Ext type codes (docs/FORMAT.md, section 6; `feedkit/codec.py`).
pub const EXT_DECIMAL: i8 = 1;
pub const EXT_DATE: i8 = 2;
pub const EXT_TIME: i8 = 3;
pub const EXT_DATETIME: i8 = 4;
pub const EXT_DATETIME_TZ: i8 = 5;
pub const EXT_UUID: i8 = 6;

/// Python's `date` range, in days from 1970-01-01 (years 1 to 9999).
const MIN_DAYS: i64 = -719_162;
const MAX_DAYS: i64 = 2_932_896;
/// Python's `datetime` range, in microseconds from 1970-01-01T00:00.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;
const DAY_MICROS: i64 = 86_400_000_000;
const DAY_MILLIS: i64 = 86_400_000;

const EXTENSION_NAME: &str = "ARROW:extension:name";

#[inline(always)]
fn is_null(nulls: Option<&NullBuffer>, i: usize) -> bool {
    nulls.is_some_and(|n| n.is_null(i))
}

/// The values and validity of a primitive array.
struct Prim<'a, T> {
    values: &'a [T],
    nulls: Option<&'a NullBuffer>,
}

impl<'a, T: arrow_buffer::ArrowNativeType> Prim<'a, T> {
    fn of<P: ArrowPrimitiveType<Native = T>>(array: &'a dyn Array) -> Prim<'a, T> {
        let a = array.as_primitive::<P>();
        Prim {
            values: a.values(),
            nulls: a.nulls(),
        }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Option<T> {
        if is_null(self.nulls, i) {
            None
        } else {
            Some(self.values[i])
        }
    }
}

/// Offsets of a variable-size array (strings, binaries, lists), 32 or 64 bits wide.
enum Offsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
}

impl Offsets<'_> {
    #[inline(always)]
    fn at(&self, i: usize) -> usize {
        match self {
            Offsets::Small(o) => o[i] as usize,
            Offsets::Large(o) => o[i] as usize,
        }
    }

    #[inline(always)]
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.at(i)..self.at(i + 1)
    }
}

enum Decimals<'a> {
    D32(Prim<'a, i32>),
    D64(Prim<'a, i64>),
    D128(Prim<'a, i128>),
    D256(Prim<'a, arrow_buffer::i256>),
}

/// How one column (or one nested child) becomes msgpack.
enum Enc<'a> {
    Nil,
    Bool(&'a BooleanArray),
    I8(Prim<'a, i8>),
    I16(Prim<'a, i16>),
    I32(Prim<'a, i32>),
    I64(Prim<'a, i64>),
    U8(Prim<'a, u8>),
    U16(Prim<'a, u16>),
    U32(Prim<'a, u32>),
    U64(Prim<'a, u64>),
    F16(Prim<'a, <Float16Type as ArrowPrimitiveType>::Native>),
    F32(Prim<'a, f32>),
    F64(Prim<'a, f64>),
    /// UTF-8 (str) or raw (bin) bytes between offsets.
    Bytes {
        str: bool,
        offsets: Offsets<'a>,
        data: &'a [u8],
        nulls: Option<&'a NullBuffer>,
    },
    /// Fixed-size binary: bin, or ext 6 for the `arrow.uuid` extension type.
    Fixed {
        uuid: bool,
        array: &'a FixedSizeBinaryArray,
    },
    Decimal {
        values: Decimals<'a>,
        scale: i8,
    },
    Date32(Prim<'a, i32>),
    Date64(Prim<'a, i64>),
    /// Times of day, `values * mult` microseconds.
    Time32 {
        values: Prim<'a, i32>,
        mult: i64,
    },
    Time64(Prim<'a, i64>),
    /// Timestamps, `values * mult` microseconds; aware ones carry their zone name.
    Timestamp {
        values: Prim<'a, i64>,
        mult: i64,
        zone: Option<String>,
    },
    List {
        offsets: Offsets<'a>,
        nulls: Option<&'a NullBuffer>,
        items: Box<Enc<'a>>,
    },
    FixedList {
        size: usize,
        nulls: Option<&'a NullBuffer>,
        items: Box<Enc<'a>>,
    },
    Map {
        offsets: &'a [i32],
        nulls: Option<&'a NullBuffer>,
        keys: Box<Enc<'a>>,
        values: Box<Enc<'a>>,
    },
    Struct {
        nulls: Option<&'a NullBuffer>,
        fields: Vec<(&'a str, Enc<'a>)>,
    },
    /// A dictionary: its values encoded once, each row copies the one it points at.
    Dict {
        keys: Vec<usize>,
        nulls: Option<&'a NullBuffer>,
        values: Encoded,
    },
}

/// The values of a range of an array, encoded back to back. A value that could not be
/// encoded (a date Python cannot hold) keeps its error, raised only if a row uses it:
/// a list's or dictionary's child may hold values no row shows.
struct Encoded {
    data: Vec<u8>,
    /// n + 1 offsets into `data`
    ends: Vec<usize>,
    errors: HashMap<usize, Error>,
}

// Column buffers are taken from, and given back to, a per-thread pool: a producer encodes
// batch after batch of the same shape, and fresh buffers of a few MiB each time would be
// page-faulted in and trimmed away by the allocator batch after batch (a third of the
// encode time, measured).
thread_local! {
    static BYTES: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    static ENDS: std::cell::RefCell<Vec<Vec<usize>>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// At most this many buffers, of at most this many bytes in all, stay pooled per thread
/// (a long-lived producer keeps no more than that between cycles).
const POOLED: usize = 64;
const POOLED_BYTES: usize = 64 << 20;

fn pooled<T>(
    pool: &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<T>>>>,
    capacity: usize,
) -> Vec<T> {
    let mut v = pool.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.reserve(capacity);
    v
}

fn unpool<T>(pool: &'static std::thread::LocalKey<std::cell::RefCell<Vec<Vec<T>>>>, mut v: Vec<T>) {
    v.clear();
    pool.with(|p| {
        let mut p = p.borrow_mut();
        let bytes = |v: &Vec<T>| v.capacity() * std::mem::size_of::<T>();
        let held: usize = p.iter().map(bytes).sum();
        if p.len() < POOLED && v.capacity() > 0 && held + bytes(&v) <= POOLED_BYTES {
            p.push(v);
        }
    });
}

impl Drop for Encoded {
    fn drop(&mut self) {
        unpool(&BYTES, std::mem::take(&mut self.data));
        unpool(&ENDS, std::mem::take(&mut self.ends));
    }
}

impl Encoded {
    fn with_capacity(n: usize, bytes: usize) -> Encoded {
        let mut ends = pooled(&ENDS, n + 1);
        ends.push(0);
        Encoded {
            data: pooled(&BYTES, bytes),
            ends,
            errors: HashMap::new(),
        }
    }

    /// Closes the value being written.
    #[inline(always)]
    fn end(&mut self) {
        self.ends.push(self.data.len());
    }

    /// Closes the value being written as failed: its bytes go, its error stays.
    #[cold]
    fn fail(&mut self, error: Error) {
        let start = *self.ends.last().expect("ends starts with 0");
        self.data.truncate(start);
        self.errors.insert(self.ends.len() - 1, error);
        self.ends.push(start);
    }

    /// The bytes of values `[a, b)` (indices into this range).
    #[inline(always)]
    fn values(&self, a: usize, b: usize) -> Result<&[u8]> {
        if !self.errors.is_empty() {
            if let Some(e) = (a..b).find_map(|i| self.errors.get(&i)) {
                return Err(e.clone());
            }
        }
        Ok(&self.data[self.ends[a]..self.ends[b]])
    }
}

fn ext_name(field: &Field) -> Option<&str> {
    field.metadata().get(EXTENSION_NAME).map(String::as_str)
}

fn unsupported(t: &DataType) -> Error {
    Error::invalid(format!("has type {t}, which feedkit cannot carry"))
}

/// The zone name ext 5 carries for an Arrow time zone: `codec._zone_name` of the tzinfo
/// pyarrow makes of it (a `zoneinfo.ZoneInfo` keyed by the name itself, or, for a fixed
/// offset, `+HH:MM`/`-HH:MM` written back from the offset, so `-00:00` becomes `+00:00`).
pub fn zone_name(tz: &str) -> String {
    let b = tz.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 6
        && (b[0] == b'+' || b[0] == b'-')
        && b[3] == b':'
        && digits(1..3)
        && digits(4..6)
    {
        let minutes: u32 =
            tz[1..3].parse::<u32>().unwrap_or(0) * 60 + tz[4..6].parse::<u32>().unwrap_or(0);
        let sign = if b[0] == b'-' && minutes > 0 {
            '-'
        } else {
            '+'
        };
        return format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60);
    }
    tz.to_string()
}

impl<'a> Enc<'a> {
    /// The encoder for `array`; `ext` is the extension name its field carries.
    fn new(array: &'a dyn Array, ext: Option<&'a str>) -> Result<Enc<'a>> {
        let t = array.data_type();
        if let Some(name) = ext {
            if name != "arrow.uuid" || !matches!(t, DataType::FixedSizeBinary(16)) {
                return Err(Error::invalid(format!(
                    "has the extension type {name:?} (storage {t}), which feedkit cannot carry"
                )));
            }
        }
        Ok(match t {
            DataType::Null => Enc::Nil,
            DataType::Boolean => Enc::Bool(array.as_boolean()),
            DataType::Int8 => Enc::I8(Prim::of::<Int8Type>(array)),
            DataType::Int16 => Enc::I16(Prim::of::<Int16Type>(array)),
            DataType::Int32 => Enc::I32(Prim::of::<Int32Type>(array)),
            DataType::Int64 => Enc::I64(Prim::of::<Int64Type>(array)),
            DataType::UInt8 => Enc::U8(Prim::of::<UInt8Type>(array)),
            DataType::UInt16 => Enc::U16(Prim::of::<UInt16Type>(array)),
            DataType::UInt32 => Enc::U32(Prim::of::<UInt32Type>(array)),
            DataType::UInt64 => Enc::U64(Prim::of::<UInt64Type>(array)),
            DataType::Float16 => Enc::F16(Prim::of::<Float16Type>(array)),
            DataType::Float32 => Enc::F32(Prim::of::<Float32Type>(array)),
            DataType::Float64 => Enc::F64(Prim::of::<Float64Type>(array)),
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                Enc::Bytes {
                    str: true,
                    offsets: Offsets::Small(a.value_offsets()),
                    data: a.values(),
                    nulls: a.nulls(),
                }
            }
            DataType::LargeUtf8 => {
                let a = array.as_string::<i64>();
                Enc::Bytes {
                    str: true,
                    offsets: Offsets::Large(a.value_offsets()),
                    data: a.values(),
                    nulls: a.nulls(),
                }
            }
            DataType::Binary => {
                let a = array.as_binary::<i32>();
                Enc::Bytes {
                    str: false,
                    offsets: Offsets::Small(a.value_offsets()),
                    data: a.values(),
                    nulls: a.nulls(),
                }
            }
            DataType::LargeBinary => {
                let a = array.as_binary::<i64>();
                Enc::Bytes {
                    str: false,
                    offsets: Offsets::Large(a.value_offsets()),
                    data: a.values(),
                    nulls: a.nulls(),
                }
            }
            DataType::FixedSizeBinary(_) => Enc::Fixed {
                uuid: ext.is_some(),
                array: array.as_fixed_size_binary(),
            },
            DataType::Decimal32(_, s) => Enc::Decimal {
                values: Decimals::D32(Prim::of::<Decimal32Type>(array)),
                scale: *s,
            },
            DataType::Decimal64(_, s) => Enc::Decimal {
                values: Decimals::D64(Prim::of::<Decimal64Type>(array)),
                scale: *s,
            },
            DataType::Decimal128(_, s) => Enc::Decimal {
                values: Decimals::D128(Prim::of::<Decimal128Type>(array)),
                scale: *s,
            },
            DataType::Decimal256(_, s) => Enc::Decimal {
                values: Decimals::D256(Prim::of::<Decimal256Type>(array)),
                scale: *s,
            },
            DataType::Date32 => Enc::Date32(Prim::of::<Date32Type>(array)),
            DataType::Date64 => Enc::Date64(Prim::of::<Date64Type>(array)),
            DataType::Time32(TimeUnit::Second) => Enc::Time32 {
                values: Prim::of::<Time32SecondType>(array),
                mult: 1_000_000,
            },
            DataType::Time32(TimeUnit::Millisecond) => Enc::Time32 {
                values: Prim::of::<Time32MillisecondType>(array),
                mult: 1_000,
            },
            DataType::Time64(TimeUnit::Microsecond) => {
                Enc::Time64(Prim::of::<Time64MicrosecondType>(array))
            }
            DataType::Timestamp(unit, tz) => {
                let (values, mult) = match unit {
                    TimeUnit::Second => (Prim::of::<TimestampSecondType>(array), 1_000_000),
                    TimeUnit::Millisecond => (Prim::of::<TimestampMillisecondType>(array), 1_000),
                    TimeUnit::Microsecond => (Prim::of::<TimestampMicrosecondType>(array), 1),
                    TimeUnit::Nanosecond => return Err(unsupported(t)),
                };
                Enc::Timestamp {
                    values,
                    mult,
                    zone: tz.as_deref().map(zone_name),
                }
            }
            DataType::List(item) => {
                let a = array.as_list::<i32>();
                Enc::List {
                    offsets: Offsets::Small(a.value_offsets()),
                    nulls: a.nulls(),
                    items: Box::new(Enc::new(a.values().as_ref(), ext_name(item))?),
                }
            }
            DataType::LargeList(item) => {
                let a = array.as_list::<i64>();
                Enc::List {
                    offsets: Offsets::Large(a.value_offsets()),
                    nulls: a.nulls(),
                    items: Box::new(Enc::new(a.values().as_ref(), ext_name(item))?),
                }
            }
            DataType::FixedSizeList(item, size) => {
                let a = array.as_fixed_size_list();
                Enc::FixedList {
                    size: *size as usize,
                    nulls: a.nulls(),
                    items: Box::new(Enc::new(a.values().as_ref(), ext_name(item))?),
                }
            }
            DataType::Map(entries, _) => {
                let a = array.as_map();
                let DataType::Struct(kv) = entries.data_type() else {
                    return Err(unsupported(t));
                };
                if kv.len() != 2 {
                    return Err(unsupported(t));
                }
                if !hashable(kv[0].data_type()) {
                    // A Python dict cannot hold such keys, and no consumer could decode them.
                    return Err(Error::invalid(format!(
                        "has type {t}: map keys of type {} cannot be carried",
                        kv[0].data_type()
                    )));
                }
                Enc::Map {
                    offsets: a.value_offsets(),
                    nulls: a.nulls(),
                    keys: Box::new(Enc::new(a.keys().as_ref(), ext_name(&kv[0]))?),
                    values: Box::new(Enc::new(a.values().as_ref(), ext_name(&kv[1]))?),
                }
            }
            DataType::Struct(fields) => {
                let a = array.as_struct();
                let mut out = Vec::with_capacity(fields.len());
                for (field, child) in fields.iter().zip(a.columns()) {
                    if out.iter().any(|(name, _)| *name == field.name().as_str()) {
                        return Err(Error::invalid(format!(
                            "has type {t}: field name {:?} appears twice in the struct",
                            field.name()
                        )));
                    }
                    out.push((
                        field.name().as_str(),
                        Enc::new(child.as_ref(), ext_name(field))?,
                    ));
                }
                Enc::Struct {
                    nulls: a.nulls(),
                    fields: out,
                }
            }
            DataType::Dictionary(_, _) => {
                let a = array.as_any_dictionary();
                let values = a.values().as_ref();
                let encoded = Enc::new(values, ext)?.encode(0..values.len());
                // normalized_keys refuses an empty dictionary, whose rows are all null
                let keys = if values.is_empty() {
                    vec![0; a.len()]
                } else {
                    a.normalized_keys()
                };
                Enc::Dict {
                    keys,
                    nulls: a.nulls(),
                    values: encoded,
                }
            }
            _ => return Err(unsupported(t)),
        })
    }

    /// At least the bytes values `range` of a scalar array take, so that their buffer is
    /// allocated once (untouched capacity costs no memory); a guess for the others,
    /// whose buffers grow once their children are encoded.
    fn size_bound(&self, range: &std::ops::Range<usize>) -> usize {
        let n = range.len();
        match self {
            Enc::Nil | Enc::Bool(_) => n,
            Enc::I8(_) | Enc::U8(_) => 2 * n,
            Enc::I16(_) | Enc::U16(_) => 3 * n,
            Enc::I32(_) | Enc::U32(_) | Enc::Date32(_) | Enc::Date64(_) => 6 * n,
            Enc::I64(_) | Enc::U64(_) | Enc::F16(_) | Enc::F32(_) | Enc::F64(_) => 9 * n,
            Enc::Bytes { offsets, .. } => offsets.at(range.end) - offsets.at(range.start) + 5 * n,
            Enc::Fixed { array, .. } => (array.value_length() as usize + 5) * n,
            Enc::Time32 { .. } | Enc::Time64(_) => 10 * n,
            Enc::Timestamp { zone, .. } => (13 + zone.as_ref().map_or(0, String::len)) * n,
            _ => 4 * n,
        }
    }

    /// The canonical bytes of values `range` of the array, one typed loop per column.
    fn encode(&self, range: std::ops::Range<usize>) -> Encoded {
        let n = range.len();
        let mut e = Encoded::with_capacity(n, self.size_bound(&range));
        macro_rules! each {
            ($prim:expr, |$out:ident, $v:ident| $body:expr) => {{
                let p = $prim;
                for i in range {
                    match p.get(i) {
                        None => write_nil(&mut e.data),
                        Some($v) => {
                            let $out = &mut e.data;
                            $body
                        }
                    }
                    e.end();
                }
            }};
        }
        // a value that may be refused (`Err`): its error is kept for the rows that use it
        macro_rules! each_checked {
            ($prim:expr, |$out:ident, $v:ident| $body:expr) => {{
                let p = $prim;
                for i in range {
                    match p.get(i) {
                        None => {
                            write_nil(&mut e.data);
                            e.end();
                        }
                        Some($v) => {
                            let $out = &mut e.data;
                            match $body {
                                Ok(()) => e.end(),
                                Err(err) => e.fail(err),
                            }
                        }
                    }
                }
            }};
        }
        match self {
            Enc::Nil => {
                for _ in range {
                    write_nil(&mut e.data);
                    e.end();
                }
            }
            Enc::Bool(a) => {
                for i in range {
                    if a.is_null(i) {
                        write_nil(&mut e.data)
                    } else {
                        write_bool(&mut e.data, a.value(i))
                    }
                    e.end();
                }
            }
            Enc::I8(p) => each!(p, |out, v| write_int(out, v as i64)),
            Enc::I16(p) => each!(p, |out, v| write_int(out, v as i64)),
            Enc::I32(p) => each!(p, |out, v| write_int(out, v as i64)),
            Enc::I64(p) => each!(p, |out, v| write_int(out, v)),
            Enc::U8(p) => each!(p, |out, v| write_uint(out, v as u64)),
            Enc::U16(p) => each!(p, |out, v| write_uint(out, v as u64)),
            Enc::U32(p) => each!(p, |out, v| write_uint(out, v as u64)),
            Enc::U64(p) => each!(p, |out, v| write_uint(out, v)),
            Enc::F16(p) => each!(p, |out, v| write_f64(out, v.to_f64())),
            Enc::F32(p) => each!(p, |out, v| write_f64(out, v as f64)),
            Enc::F64(p) => each!(p, |out, v| write_f64(out, v)),
            Enc::Bytes {
                str,
                offsets,
                data,
                nulls,
            } => {
                for i in range {
                    if is_null(*nulls, i) {
                        write_nil(&mut e.data)
                    } else if *str {
                        write_str_bytes(&mut e.data, &data[offsets.range(i)])
                    } else {
                        write_bin(&mut e.data, &data[offsets.range(i)])
                    }
                    e.end();
                }
            }
            Enc::Fixed { uuid, array } => {
                for i in range {
                    if array.is_null(i) {
                        write_nil(&mut e.data)
                    } else if *uuid {
                        write_ext(&mut e.data, EXT_UUID, array.value(i))
                    } else {
                        write_bin(&mut e.data, array.value(i))
                    }
                    e.end();
                }
            }
            Enc::Decimal { values, scale } => {
                let scale = *scale as i32;
                let text = |out: &mut Vec<u8>, digits: String| {
                    write_ext(out, EXT_DECIMAL, decimal_str(&digits, scale).as_bytes())
                };
                match values {
                    Decimals::D32(p) => each!(p, |out, v| text(out, v.to_string())),
                    Decimals::D64(p) => each!(p, |out, v| text(out, v.to_string())),
                    Decimals::D128(p) => each!(p, |out, v| text(out, v.to_string())),
                    Decimals::D256(p) => each!(p, |out, v| text(out, v.to_string())),
                }
            }
            Enc::Date32(p) => each_checked!(p, |out, v| write_date(out, v as i64)),
            Enc::Date64(p) => each_checked!(p, |out, v| write_date(out, v.div_euclid(DAY_MILLIS))),
            Enc::Time32 { values, mult } => {
                each_checked!(values, |out, v| write_time(out, v as i64 * mult))
            }
            Enc::Time64(p) => each_checked!(p, |out, v| write_time(out, v)),
            Enc::Timestamp { values, mult, zone } => {
                each_checked!(values, |out, v| write_timestamp(
                    out,
                    v,
                    *mult,
                    zone.as_deref()
                ))
            }
            Enc::List {
                offsets,
                nulls,
                items,
            } => {
                let (first, last) = (offsets.at(range.start), offsets.at(range.end));
                let items = items.encode(first..last);
                e.data.reserve(items.data.len() + 5 * n);
                for i in range {
                    if is_null(*nulls, i) {
                        write_nil(&mut e.data);
                        e.end();
                        continue;
                    }
                    let r = offsets.range(i);
                    match items.values(r.start - first, r.end - first) {
                        Ok(bytes) => {
                            write_array_header(&mut e.data, r.len());
                            e.data.extend_from_slice(bytes);
                            e.end();
                        }
                        Err(err) => e.fail(err),
                    }
                }
            }
            Enc::FixedList { size, nulls, items } => {
                let items = items.encode(range.start * size..range.end * size);
                e.data.reserve(items.data.len() + 5 * n);
                for i in 0..n {
                    if is_null(*nulls, range.start + i) {
                        write_nil(&mut e.data);
                        e.end();
                        continue;
                    }
                    match items.values(i * size, (i + 1) * size) {
                        Ok(bytes) => {
                            write_array_header(&mut e.data, *size);
                            e.data.extend_from_slice(bytes);
                            e.end();
                        }
                        Err(err) => e.fail(err),
                    }
                }
            }
            Enc::Map {
                offsets,
                nulls,
                keys,
                values,
            } => {
                let (first, last) = (offsets[range.start] as usize, offsets[range.end] as usize);
                let keys = keys.encode(first..last);
                let values = values.encode(first..last);
                e.data.reserve(keys.data.len() + values.data.len() + 5 * n);
                for i in range {
                    if is_null(*nulls, i) {
                        write_nil(&mut e.data);
                        e.end();
                        continue;
                    }
                    let r = offsets[i] as usize - first..offsets[i + 1] as usize - first;
                    match write_map(&mut e.data, r, &keys, &values) {
                        Ok(()) => e.end(),
                        Err(err) => e.fail(err),
                    }
                }
            }
            Enc::Struct { nulls, fields } => {
                let columns: Vec<Encoded> = fields
                    .iter()
                    .map(|(_, f)| f.encode(range.clone()))
                    .collect();
                let names: usize = fields.iter().map(|(name, _)| name.len() + 5).sum();
                e.data
                    .reserve(columns.iter().map(|c| c.data.len()).sum::<usize>() + (names + 3) * n);
                for i in 0..n {
                    if is_null(*nulls, range.start + i) {
                        write_nil(&mut e.data);
                        e.end();
                        continue;
                    }
                    write_map_header(&mut e.data, fields.len());
                    let mut failed = None;
                    for ((name, _), column) in fields.iter().zip(&columns) {
                        write_str(&mut e.data, name);
                        match column.values(i, i + 1) {
                            Ok(bytes) => e.data.extend_from_slice(bytes),
                            Err(err) => {
                                failed = Some(err);
                                break;
                            }
                        }
                    }
                    match failed {
                        None => e.end(),
                        Some(err) => e.fail(err),
                    }
                }
            }
            Enc::Dict {
                keys,
                nulls,
                values,
            } => {
                let widest = values
                    .ends
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .max()
                    .unwrap_or(1);
                e.data.reserve(widest.max(1) * n);
                for i in range {
                    if is_null(*nulls, i) {
                        write_nil(&mut e.data);
                        e.end();
                        continue;
                    }
                    match values.values(keys[i], keys[i] + 1) {
                        Ok(bytes) => {
                            e.data.extend_from_slice(bytes);
                            e.end();
                        }
                        Err(err) => e.fail(err),
                    }
                }
            }
        }
        e
    }
}

/// Whether a Python value of this type can be a dict key (lists, dicts are not).
fn hashable(t: &DataType) -> bool {
    match t {
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Map(_, _)
        | DataType::Struct(_) => false,
        DataType::Dictionary(_, v) => hashable(v),
        _ => true,
    }
}

fn write_date(out: &mut Vec<u8>, days: i64) -> Result<()> {
    if !(MIN_DAYS..=MAX_DAYS).contains(&days) {
        return Err(Error::invalid(format!(
            "holds the date {days} days from 1970-01-01, outside Python's date range \
             (years 1 to 9999)"
        )));
    }
    write_ext(out, EXT_DATE, &(days as i32).to_be_bytes());
    Ok(())
}

fn write_timestamp(out: &mut Vec<u8>, v: i64, mult: i64, zone: Option<&str>) -> Result<()> {
    let micros = v
        .checked_mul(mult)
        .filter(|m| (MIN_MICROS..=MAX_MICROS).contains(m));
    let Some(micros) = micros else {
        return Err(Error::invalid(format!(
            "holds the timestamp {v} ({} per second), outside Python's datetime range \
             (years 1 to 9999)",
            1_000_000 / mult
        )));
    };
    match zone {
        None => write_ext(out, EXT_DATETIME, &micros.to_be_bytes()),
        Some(zone) => {
            write_ext_header(out, EXT_DATETIME_TZ, 8 + zone.len());
            out.extend_from_slice(&micros.to_be_bytes());
            out.extend_from_slice(zone.as_bytes());
        }
    }
    Ok(())
}

fn write_time(out: &mut Vec<u8>, micros: i64) -> Result<()> {
    if !(0..DAY_MICROS).contains(&micros) {
        return Err(Error::invalid(format!(
            "holds the time of day {micros} microseconds, outside 00:00 to 24:00"
        )));
    }
    write_ext(out, EXT_TIME, &micros.to_be_bytes());
    Ok(())
}

/// A map as a Python dict built from its entries writes it: keys in the order they first
/// appear, each with the value of its last entry (`{k: v for k, v in entries}`).
/// `entries` index `keys` and `values`, the map's keys and values encoded.
fn write_map(
    out: &mut Vec<u8>,
    entries: std::ops::Range<usize>,
    keys: &Encoded,
    values: &Encoded,
) -> Result<()> {
    let many = entries.len() > 16;
    // per distinct key: its bytes, and the entry whose value it keeps
    let mut distinct: Vec<(&[u8], usize)> = Vec::with_capacity(entries.len());
    let mut seen: HashMap<std::borrow::Cow<'_, [u8]>, usize> = HashMap::new();
    for e in entries {
        let key = keys.values(e, e + 1)?;
        let id = dict_identity(key); // None for NaN: equal to no other key
        let found = match &id {
            None => None,
            Some(id) if many => seen.get(id).copied(),
            Some(_) => distinct.iter().position(|(k, _)| same_key(k, key)),
        };
        match found {
            Some(j) => distinct[j].1 = e,
            None => {
                if let (true, Some(id)) = (many, id) {
                    seen.insert(id, distinct.len());
                }
                distinct.push((key, e));
            }
        }
    }
    write_map_header(out, distinct.len());
    for (key, e) in distinct {
        out.extend_from_slice(key);
        out.extend_from_slice(values.values(e, e + 1)?);
    }
    Ok(())
}

/// The bytes two keys share when Python finds them equal: their encoding, except that
/// floats compare by value (`-0.0 == 0.0`; None for NaN, equal to nothing).
fn dict_identity(key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    match as_float(key) {
        Some(f) if f.is_nan() => None,
        // a float pattern compares with ==, so -0.0 takes this arm too
        Some(0.0) => Some(std::borrow::Cow::Owned(vec![0xcb, 0, 0, 0, 0, 0, 0, 0, 0])),
        _ => Some(std::borrow::Cow::Borrowed(key)),
    }
}

fn same_key(a: &[u8], b: &[u8]) -> bool {
    match (as_float(a), as_float(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn as_float(key: &[u8]) -> Option<f64> {
    match key {
        [0xcb, rest @ ..] if rest.len() == 8 => {
            Some(f64::from_be_bytes(rest.try_into().expect("8 bytes")))
        }
        _ => None,
    }
}

/// `str(Decimal)` for the decimal `digits * 10**-scale` (`digits` as Rust prints an
/// integer: an optional `-`, then the digits): Python's `Decimal.__str__`, which keeps
/// the exponent, and switches to scientific notation when the exponent is positive or
/// the value's adjusted exponent is below -6 (`Decimal("0E-10")`, `"1.23E+4"`).
pub fn decimal_str(digits: &str, scale: i32) -> String {
    let (sign, int) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let exp = -(scale as i64);
    let n = int.len() as i64;
    let leftdigits = exp + n;
    let dotplace = if exp <= 0 && leftdigits > -6 {
        leftdigits
    } else {
        1
    };
    let mut s = String::with_capacity(int.len() + 16);
    s.push_str(sign);
    if dotplace <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-dotplace) as usize));
        s.push_str(int);
    } else if dotplace >= n {
        s.push_str(int);
        s.extend(std::iter::repeat_n('0', (dotplace - n) as usize));
    } else {
        s.push_str(&int[..dotplace as usize]);
        s.push('.');
        s.push_str(&int[dotplace as usize..]);
    }
    if leftdigits != dotplace {
        s.push_str(&format!("E{:+}", leftdigits - dotplace));
    }
    s
}

/// One column of a batch, in record order.
pub struct Column<'a> {
    pub name: &'a str,
    pub array: &'a dyn Array,
    pub field: &'a Field,
}

/// How a batch's primary key becomes its slot keys (docs/FORMAT.md, section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// One int column: the slot holds the key (int64).
    Int,
    /// One str or bytes column: xxh3-64 of its UTF-8 or raw bytes.
    Raw,
    /// Two or more parts: xxh3-64 of their msgpack array.
    Composite,
}

/// What a batch must become: the key and the indexed columns, by record position.
pub struct Plan<'a> {
    pub feed: &'a str,
    pub key: Vec<usize>,
    pub key_kind: KeyKind,
    pub index: Vec<usize>,
}

/// A batch's records and what the producer needs of each.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records back to back.
    pub data: Vec<u8>,
    /// n + 1 offsets into `data`.
    pub offsets: Vec<i64>,
    /// Per row: the int64 key (as its bits) or the key's 64-bit hash.
    pub slot_keys: Vec<u64>,
    /// Per index column of the plan, per row: xxh3-64 of the value's bytes.
    pub index_hashes: Vec<Vec<u64>>,
    /// Rows (within the batch) with a null key part.
    pub null_key_rows: Vec<i64>,
}

/// The canonical bytes of every value of `array`, back to back, and n + 1 offsets.
///
/// Errors name no column: the caller knows which one it asked for.
pub fn encode_values(array: &dyn Array, field: &Field) -> Result<(Vec<u8>, Vec<i64>)> {
    let encoded = Enc::new(array, ext_name(field))?.encode(0..array.len());
    if let Some(row) = encoded.errors.keys().min() {
        return Err(at_row(encoded.errors[row].clone(), *row));
    }
    Ok((
        encoded.data.clone(),
        encoded.ends.iter().map(|&e| e as i64).collect(),
    ))
}

fn at_row(e: Error, row: usize) -> Error {
    let message = format!("{} (row {row})", e.message());
    e.with_message(message)
}

fn in_column(feed: &str, name: &str, e: Error) -> Error {
    let message = format!("feed '{feed}': column '{name}' {}", e.message());
    e.with_message(message)
}

/// A batch's columns, encoded: [`Prepared::write`] assembles them into records.
pub struct Prepared {
    columns: Vec<Encoded>,
    header: Vec<u8>,
    rows: usize,
}

/// What a batch's rows give besides their bytes.
#[derive(Debug, Default)]
pub struct Rows {
    /// n + 1 offsets into the records.
    pub offsets: Vec<i64>,
    /// Per row: the int64 key (as its bits) or the key's 64-bit hash.
    pub slot_keys: Vec<u64>,
    /// Per index column of the plan, per row: xxh3-64 of the value's bytes.
    pub index_hashes: Vec<Vec<u64>>,
    /// Rows (within the batch) with a null key part.
    pub null_key_rows: Vec<i64>,
}

/// Encodes each column of a batch on its own (a typed loop per column).
///
/// Errors: `Invalid`, naming the feed and the column, for a type feedkit cannot carry or
/// a value Python could not represent.
pub fn prepare_batch(columns: &[Column<'_>], plan: &Plan<'_>) -> Result<Prepared> {
    let n = columns.first().map_or(0, |c| c.array.len());
    if let Some(c) = columns.iter().find(|c| c.array.len() != n) {
        return Err(Error::invalid(format!(
            "feed '{}': column '{}' has {} rows, not {n}",
            plan.feed,
            c.name,
            c.array.len()
        )));
    }
    let mut encoded = Vec::with_capacity(columns.len());
    for c in columns {
        let enc =
            Enc::new(c.array, ext_name(c.field)).map_err(|e| in_column(plan.feed, c.name, e))?;
        let column = enc.encode(0..n);
        if let Some(row) = column.errors.keys().min() {
            let e = at_row(column.errors[row].clone(), *row);
            return Err(in_column(plan.feed, c.name, e));
        }
        encoded.push(column);
    }
    let mut header = Vec::new();
    write_array_header(&mut header, columns.len());
    Ok(Prepared {
        columns: encoded,
        header,
        rows: n,
    })
}

impl Prepared {
    /// The bytes of all the batch's records.
    pub fn len(&self) -> usize {
        self.rows * self.header.len() + self.columns.iter().map(|c| c.data.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the records into `data` (exactly [`Prepared::len`] bytes), one msgpack
    /// array per row, and takes each row's slot key and index hashes from its values'
    /// bytes (`plan` must be the one the batch was prepared with).
    ///
    /// Errors: `Invalid` for uint64 keys past `2**63 - 1` (naming the feed, the column
    /// and the first five).
    pub fn write(&self, data: &mut [u8], plan: &Plan<'_>, names: &[&str]) -> Result<Rows> {
        assert_eq!(data.len(), self.len(), "a buffer of the records' size");
        let n = self.rows;
        let mut out = Rows {
            offsets: Vec::with_capacity(n + 1),
            slot_keys: Vec::with_capacity(n),
            index_hashes: plan.index.iter().map(|_| Vec::with_capacity(n)).collect(),
            null_key_rows: Vec::new(),
        };
        out.offsets.push(0);
        let mut scratch = Vec::new();
        let mut too_big: Vec<u64> = Vec::new();
        let mut at = 0;
        for row in 0..n {
            let value = |j: usize| {
                let c: &Encoded = &self.columns[j];
                &c.data[c.ends[row]..c.ends[row + 1]]
            };
            let mut put = |bytes: &[u8]| {
                data[at..at + bytes.len()].copy_from_slice(bytes);
                at += bytes.len();
            };
            put(&self.header);
            for j in 0..self.columns.len() {
                put(value(j));
            }
            out.offsets.push(at as i64);
            if plan.key.iter().any(|&j| value(j) == [0xc0]) {
                out.null_key_rows.push(row as i64);
            }
            let slot = match plan.key_kind {
                KeyKind::Int => match Reader::new(value(plan.key[0])).token() {
                    Ok(Token::Int(v)) => v as u64,
                    Ok(Token::UInt(v)) => {
                        too_big.push(v);
                        v
                    }
                    _ => 0, // null: reported through null_key_rows
                },
                KeyKind::Raw => {
                    let v = value(plan.key[0]);
                    let skip = str_or_bin_header_len(v[0]).unwrap_or(v.len()); // null: b""
                    xxh3_64(&v[skip..])
                }
                KeyKind::Composite => {
                    scratch.clear();
                    write_array_header(&mut scratch, plan.key.len());
                    for &j in &plan.key {
                        scratch.extend_from_slice(value(j));
                    }
                    xxh3_64(&scratch)
                }
            };
            out.slot_keys.push(slot);
            for (hashes, &j) in out.index_hashes.iter_mut().zip(&plan.index) {
                hashes.push(xxh3_64(value(j)));
            }
        }
        if !too_big.is_empty() {
            let shown: Vec<String> = too_big.iter().take(5).map(u64::to_string).collect();
            return Err(Error::invalid(format!(
                "feed '{}': key column '{}' holds values past 2**63 - 1 (integer keys are \
                 64-bit signed): [{}]",
                plan.feed,
                names[plan.key[0]],
                shown.join(", ")
            )));
        }
        Ok(out)
    }
}

/// Encodes one batch: a record per row (an array of the columns' values), its slot key,
/// its index hashes, and which rows have a null key part ([`prepare_batch`], then
/// [`Prepared::write`] into a new buffer).
pub fn encode_batch(columns: &[Column<'_>], plan: &Plan<'_>) -> Result<Batch> {
    let prepared = prepare_batch(columns, plan)?;
    let mut data = vec![0; prepared.len()];
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let rows = prepared.write(&mut data, plan, &names)?;
    Ok(Batch {
        data,
        offsets: rows.offsets,
        slot_keys: rows.slot_keys,
        index_hashes: rows.index_hashes,
        null_key_rows: rows.null_key_rows,
    })
}

/// Whether a slot key occurs twice in `keys` (int64 keys, or uint64 key hashes): one pass
/// when they are strictly increasing (a table sorted by its key gives them so), else a
/// sort of a copy. It answers only yes or no: the producer's message naming the keys is
/// built in numpy, on the failure path alone.
pub fn has_duplicates<T: Ord + Copy>(keys: &[T]) -> bool {
    if keys.windows(2).all(|w| w[0] < w[1]) {
        return false;
    }
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_array::builder::{Float64Builder, Int64Builder, MapBuilder, StringBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::*;
    use arrow_buffer::{i256, OffsetBuffer};
    use arrow_schema::{DataType, Field, Fields};

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Each value's bytes, as `encode_values` writes them.
    fn values_of(array: &dyn Array) -> Vec<Vec<u8>> {
        let field = Field::new("c", array.data_type().clone(), true);
        values_with(array, &field)
    }

    fn values_with(array: &dyn Array, field: &Field) -> Vec<Vec<u8>> {
        let (data, offsets) = encode_values(array, field).unwrap();
        offsets
            .windows(2)
            .map(|w| data[w[0] as usize..w[1] as usize].to_vec())
            .collect()
    }

    fn error_of(array: &dyn Array) -> String {
        let field = Field::new("c", array.data_type().clone(), true);
        encode_values(array, &field).unwrap_err().message().to_string()
    }

    #[test]
    fn ints_of_every_width_and_nulls() {
        let a = Int8Array::from(vec![Some(-128), None, Some(127), Some(-33)]);
        assert_eq!(
            values_of(&a),
            [vec![0xd0, 0x80], vec![0xc0], vec![0x7f], vec![0xd0, 0xdf]]
        );
        let a = UInt64Array::from(vec![u64::MAX, 128, 0]);
        assert_eq!(values_of(&a)[0], hex("cfffffffffffffffff"));
        assert_eq!(values_of(&a)[1], [0xcc, 0x80]);
        let a = Int64Array::from(vec![i64::MIN, -1, 1 << 32]);
        assert_eq!(
            values_of(&a),
            [
                hex("d38000000000000000"),
                hex("ff"),
                hex("cf0000000100000000")
            ]
        );
        let a = UInt16Array::from(vec![65535]);
        assert_eq!(values_of(&a), [hex("cdffff")]);
        // a slice starts at its own first value
        let a = Int32Array::from(vec![1, 2, 3]).slice(1, 2);
        assert_eq!(values_of(&a), [vec![2], vec![3]]);
    }

    #[test]
    fn floats_of_every_width_become_float64() {
        let a = Float32Array::from(vec![Some(1.5), None, Some(-0.0)]);
        assert_eq!(
            values_of(&a),
            [
                hex("cb3ff8000000000000"),
                hex("c0"),
                hex("cb8000000000000000")
            ]
        );
        let a = Float16Array::from(vec![half::f16::from_f32(1.5)]);
        assert_eq!(values_of(&a), [hex("cb3ff8000000000000")]);
        let a = Float64Array::from(vec![f64::INFINITY]);
        assert_eq!(values_of(&a), [hex("cb7ff0000000000000")]);
        let a = BooleanArray::from(vec![Some(true), Some(false), None]);
        assert_eq!(values_of(&a), [vec![0xc3], vec![0xc2], vec![0xc0]]);
        assert_eq!(values_of(&NullArray::new(2)), [vec![0xc0], vec![0xc0]]);
    }

    #[test]
    fn strings_and_binaries() {
        let long = "x".repeat(40);
        let a = StringArray::from(vec![Some(""), None, Some("é"), Some(long.as_str())]);
        let v = values_of(&a);
        assert_eq!(v[..3], [vec![0xa0], vec![0xc0], vec![0xa2, 0xc3, 0xa9]]);
        assert_eq!(v[3][..2], [0xd9, 40]);
        let a = LargeStringArray::from(vec!["ab"]);
        assert_eq!(values_of(&a), [hex("a26162")]);
        let a = BinaryArray::from(vec![Some(&b""[..]), None, Some(&b"ab"[..])]);
        assert_eq!(values_of(&a), [vec![0xc4, 0], vec![0xc0], hex("c4026162")]);
        let a = LargeBinaryArray::from(vec![&b"a"[..]]);
        assert_eq!(values_of(&a), [hex("c40161")]);
        let a = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            vec![Some(vec![1u8, 2]), None].into_iter(),
            2,
        )
        .unwrap();
        assert_eq!(values_of(&a), [hex("c4020102"), hex("c0")]);
    }

    #[test]
    fn uuids_are_ext_6_and_other_extensions_are_refused() {
        let a = FixedSizeBinaryArray::try_from_iter(vec![vec![7u8; 16]].into_iter()).unwrap();
        let meta = HashMap::from([(EXTENSION_NAME.to_string(), "arrow.uuid".to_string())]);
        let field = Field::new("u", a.data_type().clone(), true).with_metadata(meta);
        let mut want = vec![0xd8, 6];
        want.extend([7u8; 16]);
        assert_eq!(values_with(&a, &field), [want]);
        let meta = HashMap::from([(EXTENSION_NAME.to_string(), "arrow.json".to_string())]);
        let field = Field::new("u", a.data_type().clone(), true).with_metadata(meta);
        let err = encode_values(&a, &field).unwrap_err().message().to_string();
        assert!(err.contains("arrow.json"), "{err}");
    }

    #[test]
    fn decimals_print_as_pythons_str_of_decimal() {
        for (digits, scale, want) in [
            ("150", 2, "1.50"),
            ("0", 10, "0E-10"),
            ("123", -2, "1.23E+4"),
            ("-5", 2, "-0.05"),
            ("5", 10, "5E-10"),
            ("0", -2, "0E+2"),
            ("-1", -3, "-1E+3"),
            ("123", 0, "123"),
            ("1", 6, "0.000001"),
            ("1", 7, "1E-7"),
            ("12345", 3, "12.345"),
            ("0", 0, "0"),
            ("100", 2, "1.00"),
            ("1", 1, "0.1"),
        ] {
            assert_eq!(decimal_str(digits, scale), want, "{digits} scale {scale}");
        }
        let a = Decimal128Array::from(vec![Some(150), None])
            .with_precision_and_scale(5, 2)
            .unwrap();
        assert_eq!(values_of(&a), [hex("d601312e3530"), hex("c0")]);
        let big = i256::from_string("-1000000000000000000000000000000000000000").unwrap();
        let a = Decimal256Array::from(vec![big])
            .with_precision_and_scale(40, 0)
            .unwrap();
        let v = &values_of(&a)[0];
        assert_eq!(v[..3], [0xc7, 41, 1]);
        assert_eq!(&v[3..], b"-1000000000000000000000000000000000000000");
        let a = Decimal32Array::from(vec![5])
            .with_precision_and_scale(5, 3)
            .unwrap();
        assert_eq!(values_of(&a), [b"\xc7\x05\x010.005".to_vec()]);
        let a = Decimal64Array::from(vec![5])
            .with_precision_and_scale(15, 0)
            .unwrap();
        assert_eq!(values_of(&a), [b"\xd4\x015".to_vec()]);
    }

    #[test]
    fn dates_times_and_timestamps() {
        assert_eq!(
            values_of(&Date32Array::from(vec![-1])),
            [hex("d602ffffffff")]
        );
        // date64 floors its milliseconds to a day, as pyarrow's to_pylist does
        let a = Date64Array::from(vec![-1, 86_399_999, -86_400_001]);
        assert_eq!(
            values_of(&a),
            [
                hex("d602ffffffff"),
                hex("d60200000000"),
                hex("d602fffffffe")
            ]
        );
        let time = 3_723_000_004i64; // 01:02:03.000004
        assert_eq!(
            values_of(&Time64MicrosecondArray::from(vec![time])),
            [hex("d70300000000dde878c4")]
        );
        assert_eq!(
            values_of(&Time32SecondArray::from(vec![1])),
            [hex("d70300000000000f4240")]
        );
        assert_eq!(
            values_of(&Time32MillisecondArray::from(vec![1])),
            [hex("d70300000000000003e8")]
        );
        let ms = 981_173_106_007i64; // 2001-02-03T04:05:06.007
        let a = TimestampMillisecondArray::from(vec![Some(ms), None]);
        assert_eq!(values_of(&a), [hex("d70400037c5f2a725bd8"), hex("c0")]);
        let a = TimestampMicrosecondArray::from(vec![ms * 1000]).with_timezone("UTC");
        assert_eq!(values_of(&a), [hex("c70b0500037c5f2a725bd8555443")]);
        // 04:05:06.007 at -05:30 is 09:35:06.007 UTC
        let utc = ms + (5 * 60 + 30) * 60_000;
        let a = TimestampMillisecondArray::from(vec![utc]).with_timezone("-05:30");
        assert_eq!(values_of(&a), [hex("c70e0500037c63c69e61d82d30353a3330")]);
        let a = TimestampSecondArray::from(vec![0]).with_timezone("Europe/Paris");
        assert_eq!(values_of(&a)[0][..3], [0xc7, 20, 5]);
        assert_eq!(zone_name("-00:00"), "+00:00");
        assert_eq!(zone_name("+01:00"), "+01:00");
        assert_eq!(zone_name("America/New_York"), "America/New_York");
    }

    #[test]
    fn values_python_cannot_represent_are_refused() {
        assert!(error_of(&Date32Array::from(vec![0, 3_000_000])).contains("row 1"));
        assert!(error_of(&Time64MicrosecondArray::from(vec![-1])).contains("time of day"));
        assert!(error_of(&Time32SecondArray::from(vec![86_400])).contains("time of day"));
        let a = TimestampSecondArray::from(vec![i64::MAX]);
        assert!(error_of(&a).contains("datetime range"));
        assert!(error_of(&TimestampNanosecondArray::from(vec![0])).contains("cannot carry"));
    }

    #[test]
    fn lists_nested_large_and_fixed() {
        let a = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        assert_eq!(values_of(&a), [hex("9201c0"), hex("c0"), hex("90")]);
        let sliced = a.slice(1, 2);
        assert_eq!(values_of(&sliced), [hex("c0"), hex("90")]);
        let inner = Arc::new(a) as ArrayRef;
        let field = Arc::new(Field::new("item", inner.data_type().clone(), true));
        let nested = LargeListArray::new(field, OffsetBuffer::from_lengths([2, 1]), inner, None);
        assert_eq!(values_of(&nested), [hex("929201c0c0"), hex("9190")]);
        let items = Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef;
        let field = Arc::new(Field::new("item", DataType::Int64, true));
        let fixed = FixedSizeListArray::new(field, 2, items, None);
        assert_eq!(values_of(&fixed), [hex("920102"), hex("920304")]);
        assert_eq!(values_of(&fixed.slice(1, 1)), [hex("920304")]);
        let long = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(0); 16])]);
        assert_eq!(values_of(&long)[0][..3], [0xdc, 0, 16]);
    }

    #[test]
    fn structs_are_maps_of_their_fields() {
        let x = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            Some(vec![]),
        ])) as ArrayRef;
        let y = Arc::new(StringArray::from(vec![Some("é"), None])) as ArrayRef;
        let fields = Fields::from(vec![
            Field::new("x", x.data_type().clone(), true),
            Field::new("y", DataType::Utf8, true),
        ]);
        let nulls = arrow_buffer::NullBuffer::from(vec![true, false]);
        let a = StructArray::new(fields.clone(), vec![x.clone(), y.clone()], Some(nulls));
        assert_eq!(values_of(&a), [hex("82a1789201c0a179a2c3a9"), hex("c0")]);
        let a = StructArray::new(fields, vec![x, y], None);
        assert_eq!(values_of(&a)[1], hex("82a17890a179c0"));
        let dup = Fields::from(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
        ]);
        let one = Arc::new(Int64Array::from(vec![1])) as ArrayRef;
        let a = StructArray::new(dup, vec![one.clone(), one], None);
        assert!(error_of(&a).contains("appears twice"));
    }

    #[test]
    fn maps_keep_first_keys_and_last_values() {
        let mut b = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        for (k, v) in [("a", Some(1)), ("b", None), ("a", Some(3))] {
            b.keys().append_value(k);
            b.values().append_option(v);
        }
        b.append(true).unwrap();
        b.append(false).unwrap();
        b.append(true).unwrap();
        let a = b.finish();
        assert_eq!(values_of(&a), [hex("82a16103a162c0"), hex("c0"), hex("80")]);
        // -0.0 and 0.0 are one key (the first one's bytes); NaNs are never equal
        let mut b = MapBuilder::new(None, Float64Builder::new(), Int64Builder::new());
        for (k, v) in [(-0.0, 1), (0.0, 2), (f64::NAN, 3), (f64::NAN, 4)] {
            b.keys().append_value(k);
            b.values().append_value(v);
        }
        b.append(true).unwrap();
        let got = &values_of(&b.finish())[0];
        assert_eq!(
            got,
            &hex("83cb800000000000000002cb7ff800000000000003cb7ff800000000000004")
        );
        // past 16 entries the duplicates are found through a hash map
        let mut b = MapBuilder::new(None, Int64Builder::new(), Int64Builder::new());
        for i in 0..40 {
            b.keys().append_value(i % 20);
            b.values().append_value(i);
        }
        b.append(true).unwrap();
        let got = &values_of(&b.finish())[0];
        let mut want = vec![0xde, 0, 20];
        for k in 0..20u8 {
            want.extend([k, k + 20]);
        }
        assert_eq!(got, &want);
    }

    #[test]
    fn dictionaries_encode_their_values() {
        let a: DictionaryArray<Int8Type> = vec![Some("b"), None, Some("a"), Some("b")]
            .into_iter()
            .collect();
        assert_eq!(
            values_of(&a),
            [hex("a162"), hex("c0"), hex("a161"), hex("a162")]
        );
        // a bad value no row uses is no error
        let values = Arc::new(Date32Array::from(vec![0, 9_000_000])) as ArrayRef;
        let a = DictionaryArray::new(Int32Array::from(vec![0, 0]), values.clone());
        assert_eq!(values_of(&a), [hex("d60200000000"), hex("d60200000000")]);
        let a = DictionaryArray::new(Int32Array::from(vec![0, 1]), values);
        assert!(error_of(&a).contains("date"));
        let empty = Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef;
        let a = DictionaryArray::new(Int32Array::from(vec![None, None]), empty);
        assert_eq!(values_of(&a), [hex("c0"), hex("c0")]);
    }

    fn columns<'a>(arrays: &'a [(&'a str, ArrayRef)], fields: &'a [Field]) -> Vec<Column<'a>> {
        arrays
            .iter()
            .zip(fields)
            .map(|((name, a), field)| Column {
                name,
                array: a.as_ref(),
                field,
            })
            .collect()
    }

    fn fields_of(arrays: &[(&str, ArrayRef)]) -> Vec<Field> {
        arrays
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect()
    }

    #[test]
    fn batches_hold_records_keys_and_index_hashes() {
        let arrays = [
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(3), None, Some(-7)])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("a"), Some("bb"), None])) as ArrayRef,
            ),
        ];
        let fields = fields_of(&arrays);
        let cols = columns(&arrays, &fields);
        let plan = Plan {
            feed: "f",
            key: vec![0],
            key_kind: KeyKind::Int,
            index: vec![1],
        };
        let b = encode_batch(&cols, &plan).unwrap();
        assert_eq!(
            b.data,
            hex("9203a16192c0a26262" /* rows 0, 1 */)
                .into_iter()
                .chain(hex("92f9c0"))
                .collect::<Vec<_>>()
        );
        assert_eq!(b.offsets, [0, 4, 9, 12]);
        assert_eq!(b.slot_keys, [3, 0, -7i64 as u64]);
        assert_eq!(b.null_key_rows, [1]);
        assert_eq!(
            b.index_hashes,
            [vec![
                xxh3_64(b"\xa1a"),
                xxh3_64(b"\xa2bb"),
                xxh3_64(b"\xc0")
            ]]
        );

        let plan = Plan {
            feed: "f",
            key: vec![1],
            key_kind: KeyKind::Raw,
            index: vec![],
        };
        let b = encode_batch(&cols, &plan).unwrap();
        assert_eq!(b.slot_keys, [xxh3_64(b"a"), xxh3_64(b"bb"), xxh3_64(b"")]);
        assert_eq!(b.null_key_rows, [2]);

        // composite: the msgpack array of the parts, in key order
        let plan = Plan {
            feed: "f",
            key: vec![1, 0],
            key_kind: KeyKind::Composite,
            index: vec![],
        };
        let b = encode_batch(&cols, &plan).unwrap();
        assert_eq!(b.slot_keys[0], xxh3_64(b"\x92\xa1a\x03"));
        assert_eq!(b.null_key_rows, [1, 2]);
    }

    #[test]
    fn uint64_keys_past_i64_are_refused_naming_feed_and_column() {
        let arrays = [(
            "id",
            Arc::new(UInt64Array::from(vec![1, 1 << 63, u64::MAX])) as ArrayRef,
        )];
        let fields = fields_of(&arrays);
        let plan = Plan {
            feed: "f",
            key: vec![0],
            key_kind: KeyKind::Int,
            index: vec![],
        };
        let err = encode_batch(&columns(&arrays, &fields), &plan).unwrap_err();
        assert_eq!(*err.kind(), crate::error::Kind::Invalid);
        assert_eq!(
            err.message(),
            "feed 'f': key column 'id' holds values past 2**63 - 1 (integer \
            keys are 64-bit signed): [9223372036854775808, 18446744073709551615]"
        );
        let arrays = [(
            "when",
            Arc::new(Date32Array::from(vec![0, i32::MAX])) as ArrayRef,
        )];
        let fields = fields_of(&arrays);
        let err = encode_batch(&columns(&arrays, &fields), &plan).unwrap_err();
        assert!(
            err.message()
                .starts_with("feed 'f': column 'when' holds the date"),
            "{}",
            err.message()
        );
        assert!(err.message().ends_with("(row 1)"), "{}", err.message());
    }

    #[test]
    fn duplicates_are_found_in_sorted_and_unsorted_keys() {
        assert!(!has_duplicates::<i64>(&[]));
        assert!(!has_duplicates(&[5i64]));
        assert!(!has_duplicates(&[-3i64, 0, 7, 9]));
        assert!(has_duplicates(&[-3i64, 0, 0, 9]));
        assert!(!has_duplicates(&[9i64, -3, 7, 0]));
        assert!(has_duplicates(&[9i64, -3, 7, 0, 7]));
        assert!(!has_duplicates(&[u64::MAX, 0, 1 << 63]));
        assert!(has_duplicates(&[u64::MAX, 0, 1 << 63, u64::MAX]));
        let mut many: Vec<u64> = (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        assert!(!has_duplicates(&many));
        many.push(many[1234]);
        assert!(has_duplicates(&many));
    }
}
