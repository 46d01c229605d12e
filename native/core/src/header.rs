//! A state file's JSON header (docs/FORMAT.md, 3), read where no Python is at hand:
//! the consumer's delta path parses the state file a delta blob decompresses to, and
//! renders the header of the overlay it writes, byte for byte as `format.write_state`
//! does (`json.dumps(..., separators=(",", ":"), sort_keys=True)`).
//!
//! [`parse`] is the one check of the format's header fields (types, ranges, the
//! sections inside the body), so that no later use can fail or read outside the file:
//! `StateFile` runs it on every file it opens ([`parse_own`]), the delta path on the
//! files it decompresses and writes. Python adds only what becomes Python (the column
//! names of the record class, the key's parts, the feed's name:
//! `format._check_python_fields`); the descriptive fields (schema, key) of a delta are
//! compared with the state it applies to by its caller.
//!
//! The parsing is serde_json's; the rendering is written here because it must be
//! Python's bytes exactly (keys sorted by code point, no spaces, `ensure_ascii`
//! escapes), so that the file is the one `write_state` writes: the descriptive fields
//! come rendered by Python, the layout is integers and three fixed ASCII names.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::codings::{Codings, Column, Dictionary, Kind};
use crate::layout::{
    align, Buckets, Home, IndexTable, Prefix, Table, BODY_ALIGN, FORMAT_COMPACT, PREFIX_SIZE, SLOT_SIZE,
};
use crate::verify::Expected;
use crate::write::Plan;

/// A parsed state file: its header and where its tables lie.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub header: Map<String, Value>,
    pub table: Table,
    /// For [`crate::verify::verify`] (with `records` false: the caller decides).
    pub expected: Expected,
    pub version: u64,
    pub kind: String,
    pub record_count: u64,
    /// Format 2: how each column is coded (None: format 1, records are msgpack arrays).
    pub codings: Option<Codings>,
}

impl Parsed {
    /// A top-level integer field, if it is one.
    pub fn int(&self, name: &str) -> Option<i128> {
        int_of(self.header.get(name)?)
    }

    /// The state digest the header names (`"0" * 16` when absent, as in Python).
    pub fn state_digest(&self) -> Option<u64> {
        match self.header.get("state_digest") {
            None => Some(0),
            Some(Value::String(s)) => digest_of(s),
            Some(_) => None,
        }
    }

    /// The index of field `name`, if the file has one.
    pub fn index(&self, name: &str) -> Option<&IndexTable> {
        self.expected.indexes.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

fn int_of(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

fn digest_of(s: &str) -> Option<u64> {
    (s.len() == 16 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::damaged(format!("unreadable state header: {what}"))
}

/// `doc[name]` if it is an integer in `[low, high]`.
fn int(doc: &Map<String, Value>, name: &str, low: i128, high: i128) -> Result<i128> {
    let v = doc.get(name).ok_or_else(|| bad(format!("no field '{name}'")))?;
    match int_of(v) {
        Some(x) if (low..=high).contains(&x) => Ok(x),
        _ => Err(bad(format!("{name} is {v}, not an integer in [{low}, {high}]"))),
    }
}

fn object<'a>(doc: &'a Map<String, Value>, name: &str) -> Result<&'a Map<String, Value>> {
    doc.get(name).and_then(Value::as_object).ok_or_else(|| bad(format!("{name} is not an object")))
}

const I64_MAX: i128 = i64::MAX as i128;

/// The slot count and bits of a hash table, checked against each other and the body.
fn table_size(doc: &Map<String, Value>, count: &str, body_length: usize) -> Result<(usize, u32)> {
    let bits = int(doc, "bits", 3, 62)? as u32;
    let slots = int(doc, count, (1i128 << bits) + 1, (body_length / 16) as i128)? as usize;
    Ok((slots, bits))
}

/// Parses and checks the prefix and header of the state file `bytes` (not its body:
/// [`crate::verify::verify`] does that). `int_keys`: the slot kind the state's key has
/// (the caller knows it from the state the file belongs to).
pub fn parse(bytes: &[u8], int_keys: bool) -> Result<Parsed> {
    let prefix = Prefix::parse(bytes)?;
    let text = &bytes[PREFIX_SIZE..PREFIX_SIZE + prefix.header_length];
    let header: Map<String, Value> = match serde_json::from_slice(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(bad("the header is not a JSON object")),
        Err(e) => return Err(bad(e)),
    };
    let body_offset = prefix.body_offset;
    let body_length = bytes.len() - body_offset;
    debug_assert_eq!(body_offset, align(PREFIX_SIZE + prefix.header_length, BODY_ALIGN));
    if header.get("format") != Some(&Value::from(prefix.format)) {
        return Err(bad(format!("header format {:?} in a format-{} file", header.get("format"), prefix.format)));
    }
    let version = int(&header, "version", 1, I64_MAX)? as u64;
    let kind = match header.get("kind").and_then(Value::as_str) {
        Some(k @ ("base" | "overlay")) => k.to_string(),
        other => return Err(bad(format!("kind {other:?}"))),
    };
    if header.contains_key("base_version") {
        int(&header, "base_version", 1, I64_MAX)?;
    }
    let record_count = int(&header, "record_count", 0, I64_MAX)? as u64;
    let count = int(&header, "count", 0, body_length as i128)? as usize;
    let tombstones = int(&header, "tombstones", 0, count as i128)? as usize;
    if header.contains_key("state_digest") && header.get("state_digest").and_then(Value::as_str).and_then(digest_of).is_none() {
        return Err(bad("state_digest is not 16 hex digits"));
    }
    let width = header.get("schema").and_then(Value::as_array).map_or(0, Vec::len);
    if width == 0 {
        return Err(bad("schema is not a list of columns"));
    }
    if prefix.format == FORMAT_COMPACT {
        return parse_compact(bytes, header, body_offset, int_keys, Common { version, kind, record_count, count, tombstones, width });
    }
    let slots = object(&header, "slots")?;
    let (slot_count, bits) = table_size(slots, "count", body_length)?;
    int(slots, "offset", 0, 0)?;
    let home = Home::from_name(slots.get("hash").and_then(Value::as_str).unwrap_or(""))?;
    if int_keys != (home != Home::Xxh3) {
        return Err(bad(format!("slot hash {} for {} keys", home.name(), if int_keys { "int" } else { "hash" })));
    }
    let empty = if int_keys {
        int(slots, "empty", i64::MIN as i128, I64_MAX)? as i64 as u64
    } else {
        int(slots, "empty", 0, u64::MAX as i128)? as u64
    };
    int(slots, "max_probe", 1, slot_count as i128)?;
    let heap = object(&header, "heap")?;
    let sc = (SLOT_SIZE * slot_count) as i128;
    let heap_offset = int(heap, "offset", sc, sc)? as usize;
    let heap_length = int(heap, "length", 0, body_length as i128)? as usize;
    let mut sections = vec![(0usize, SLOT_SIZE * slot_count), (heap_offset, heap_length)];

    let indexes = parse_indexes(&header, bytes, body_offset, &mut sections)?;
    if sections.iter().any(|&(at, n)| at.checked_add(n).is_none_or(|end| end > body_length)) {
        return Err(bad("a section reaches past the end of the file"));
    }
    if int(&header, "body_length", 0, I64_MAX)? as usize != body_length {
        return Err(bad(format!("body_length {:?}, the file holds {body_length}", header.get("body_length"))));
    }
    let heap_start = body_offset + heap_offset;
    let table = Table::new(bytes.len(), body_offset, slot_count, bits, home, empty, heap_start,
                           heap_start + heap_length, kind == "overlay")?;
    let expected = Expected { count, tombstones, width, indexes, records: false, codings: None };
    Ok(Parsed { header, table, expected, version, kind, record_count, codings: None })
}

/// The fields both formats' headers hold, parsed by [`parse`].
struct Common {
    version: u64,
    kind: String,
    record_count: u64,
    count: usize,
    tombstones: usize,
    width: usize,
}

/// The secondary indexes of a header (the same in both formats), with their sections.
fn parse_indexes(
    header: &Map<String, Value>,
    bytes: &[u8],
    body_offset: usize,
    sections: &mut Vec<(usize, usize)>,
) -> Result<Vec<(String, IndexTable)>> {
    let body_length = bytes.len() - body_offset;
    let fields = header.get("index_fields").and_then(Value::as_array).ok_or_else(|| bad("index_fields"))?;
    let metas = object(header, "indexes")?;
    if fields.len() != metas.len() || fields.iter().any(|f| !f.as_str().is_some_and(|f| metas.contains_key(f))) {
        return Err(bad("index_fields do not match the indexes"));
    }
    let mut indexes = Vec::with_capacity(metas.len());
    // In the header's order (index_fields): the Python verifier reports in that order.
    for name in fields.iter().filter_map(Value::as_str) {
        let meta = metas.get(name).and_then(Value::as_object).ok_or_else(|| bad(format!("index {name}")))?;
        let (table_slots, _) = table_size(meta, "slots", body_length)?;
        let empty = int(meta, "empty", 0, u64::MAX as i128)? as u64;
        let values = int(meta, "values", 0, table_slots as i128)? as usize;
        let table_at = int(meta, "table", 0, body_length as i128)? as usize;
        let postings_at = int(meta, "postings", 0, body_length as i128)? as usize;
        let n = int(meta, "count", 0, body_length as i128)? as usize;
        sections.push((table_at, 16 * table_slots));
        sections.push((postings_at, 4 * n));
        let index = IndexTable::new(bytes.len(), body_offset + table_at, table_slots, empty, values,
                                    body_offset + postings_at, n)?;
        indexes.push((name.to_string(), index));
    }
    Ok(indexes)
}

/// The schema position of each key column.
fn key_positions(header: &Map<String, Value>) -> Result<Vec<usize>> {
    let names: Vec<&str> = header
        .get("schema")
        .and_then(Value::as_array)
        .map(|s| s.iter().map(|c| c.get("name").and_then(Value::as_str).unwrap_or("")).collect())
        .unwrap_or_default();
    header
        .get("key")
        .and_then(|k| k.get("columns"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no key columns"))?
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(|c| names.iter().position(|n| *n == c))
                .ok_or_else(|| bad(format!("key column {c} is not in the schema")))
        })
        .collect()
}

/// The format-2 part of [`parse`] (FORMAT.md, 10.2): entries, buckets, heap, the
/// columns' codings and dictionaries, the indexes.
fn parse_compact(bytes: &[u8], header: Map<String, Value>, body_offset: usize, int_keys: bool, c: Common) -> Result<Parsed> {
    let body_length = bytes.len() - body_offset;
    let blen = body_length as i128;
    if c.kind != "base" || c.tombstones != 0 {
        return Err(bad("a format-2 file is a base, without tombstones"));
    }
    let entries = object(&header, "entries")?;
    int(entries, "offset", 0, 0)?;
    let entry_count = int(entries, "count", c.count as i128 + 1, c.count as i128 + 1)? as usize;
    let entry_size = int(entries, "size", 12, 16)? as usize;
    let home = Home::from_name(entries.get("hash").and_then(Value::as_str).unwrap_or(""))?;
    if home != if int_keys { Home::Fib } else { Home::Xxh3 } {
        return Err(bad(format!("entry hash {} for {} keys", home.name(), if int_keys { "int" } else { "hash" })));
    }
    let empty = if int_keys {
        int(entries, "empty", i64::MIN as i128, I64_MAX)? as i64 as u64
    } else {
        int(entries, "empty", 0, u64::MAX as i128)? as u64
    };
    let buckets = object(&header, "buckets")?;
    let buckets_at = int(buckets, "offset", 0, blen)? as usize;
    let bucket_count = int(buckets, "count", 1, blen / 4)? as usize;
    let max_bucket = int(buckets, "max", 0, c.count as i128)? as usize;
    let heap = object(&header, "heap")?;
    let heap_offset = int(heap, "offset", 0, blen)? as usize;
    let heap_length = int(heap, "length", 0, blen)? as usize;
    let mut sections = vec![
        (0usize, entry_size * entry_count),
        (buckets_at, 4 * (bucket_count + 1)),
        (heap_offset, heap_length),
    ];
    let keys = key_positions(&header)?;
    let columns = header
        .get("columns")
        .and_then(Value::as_array)
        .filter(|cols| cols.len() == c.width)
        .ok_or_else(|| bad("columns do not match the schema"))?;
    let mut coded = Vec::with_capacity(c.width);
    for (i, col) in columns.iter().enumerate() {
        let col = col.as_object().ok_or_else(|| bad("a column is not an object"))?;
        let kind = Kind::from_name(col.get("coding").and_then(Value::as_str).unwrap_or(""))?;
        let allowed = match kind {
            Kind::Plain => true,
            Kind::Key => int_keys && keys == [i],
            Kind::Dict | Kind::Elements | Kind::Fields => !keys.contains(&i),
        };
        if !allowed {
            return Err(bad(format!("column {i} coded {}", kind.name())));
        }
        let dict = if kind.coded() {
            let at = int(col, "offset", 0, blen)? as usize;
            let values = int(col, "values", 0, blen / 4)? as usize;
            let length = int(col, "length", 0, blen)? as usize;
            let bits = if kind == Kind::Elements { int(col, "bits", 1, 32)? as u32 } else { 1 };
            sections.push((at, 4 * (values + 1) + length));
            Some(Dictionary::new(bytes.len(), body_offset + at, values, length, bits)?)
        } else {
            None
        };
        coded.push(Column { kind, dict });
    }
    let indexes = parse_indexes(&header, bytes, body_offset, &mut sections)?;
    if sections.iter().any(|&(at, n)| at.checked_add(n).is_none_or(|end| end > body_length)) {
        return Err(bad("a section reaches past the end of the file"));
    }
    // The writer lays the sections out one after another. Overlapping ones (columns
    // sharing a dictionary) would let a small file make a reader's work and memory (a
    // cache per dictionary value, verify's walk of each dictionary) grow with the
    // number of columns times the file's size.
    sections.retain(|&(_, n)| n > 0);
    sections.sort_unstable();
    if sections.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(bad("sections overlap"));
    }
    if int(&header, "body_length", 0, I64_MAX)? as usize != body_length {
        return Err(bad(format!("body_length {:?}, the file holds {body_length}", header.get("body_length"))));
    }
    let heap_start = body_offset + heap_offset;
    let b = Buckets { at: body_offset + buckets_at, count: bucket_count, max: max_bucket };
    let table = Table::sorted(bytes.len(), body_offset, entry_count, entry_size, home, empty, b, heap_start,
                              heap_start + heap_length)?;
    let codings = Codings { columns: coded };
    let expected = Expected {
        count: c.count, tombstones: 0, width: c.width, indexes, records: false, codings: Some(codings.clone()),
    };
    Ok(Parsed {
        header, table, expected, version: c.version, kind: c.kind, record_count: c.record_count,
        codings: Some(codings),
    })
}

/// [`parse`] for a file on its own (`StateFile`'s check when it opens one): the slot kind
/// comes from the header's key, int keys being one part of kind `int` (FORMAT.md, 5).
pub fn parse_own(bytes: &[u8]) -> Result<Parsed> {
    let prefix = Prefix::parse(bytes)?;
    let text = &bytes[PREFIX_SIZE..PREFIX_SIZE + prefix.header_length];
    let doc: Value = serde_json::from_slice(text).map_err(bad)?;
    let parts = doc
        .get("key")
        .and_then(|key| key.get("parts"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no key parts"))?;
    let int_keys = matches!(&parts[..], [Value::String(kind)] if kind == "int");
    parse(bytes, int_keys)
}

/// `s` as a JSON string the way Python's `json.dumps` writes it (`ensure_ascii`: every
/// character past ASCII as `\\uXXXX`, UTF-16 surrogate pairs beyond the BMP).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// The JSON of `value` as Python's `json.dumps(value, separators=(",", ":"),
/// sort_keys=True)` writes it, for the values this module renders (integers, ASCII
/// strings and objects of them).
fn push_int(out: &mut String, v: impl std::fmt::Display) {
    out.push_str(&v.to_string());
}

fn push_object(out: &mut String, mut fields: Vec<(&str, String)>) {
    fields.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, name);
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
}

fn num(v: impl std::fmt::Display) -> String {
    let mut s = String::new();
    push_int(&mut s, v);
    s
}

/// The header of a file planned by `plan`: `fields` are the descriptive ones (name and
/// JSON text, as Python rendered them), the writer adds the layout (FORMAT.md, 3), all
/// sorted by name. `index_fields` names the plan's indexes in order.
pub fn render(fields: &[(String, String)], plan: &Plan, int_keys: bool, index_fields: &[String]) -> Vec<u8> {
    let p = &plan.placement;
    let mut slots = String::new();
    let empty = if int_keys { num(plan.empty as i64) } else { num(plan.empty) };
    push_object(&mut slots, vec![
        ("offset", num(0)), ("count", num(p.slot_count)), ("bits", num(p.bits)),
        ("hash", format!("\"{}\"", p.home.name())), ("empty", empty), ("max_probe", num(p.max_probe)),
    ]);
    let mut heap = String::new();
    push_object(&mut heap, vec![("offset", num(plan.layout.heap)), ("length", num(plan.layout.heap_length))]);
    let mut metas = Vec::new();
    for ((name, t), s) in index_fields.iter().zip(&plan.indexes).zip(&plan.layout.indexes) {
        let mut meta = String::new();
        push_object(&mut meta, vec![
            ("slots", num(t.slots())), ("bits", num(t.bits)), ("empty", num(t.empty)),
            ("values", num(t.values)), ("table", num(s.table)), ("postings", num(s.postings)),
            ("count", num(s.count)),
        ]);
        metas.push((name.as_str(), meta));
    }
    let mut indexes = String::new();
    push_object(&mut indexes, metas);
    let layout = [
        ("format", num(1)), ("count", num(p.order.len())), ("tombstones", num(plan.tombstones)),
        ("slots", slots), ("heap", heap), ("indexes", indexes),
        ("body_length", num(plan.layout.body_length)),
    ];
    let mut all: Vec<(&str, String)> = fields
        .iter()
        .filter(|(name, _)| !layout.iter().any(|(l, _)| l == name))
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    all.extend(layout.iter().map(|(n, v)| (*n, v.clone())));
    let mut out = String::new();
    push_object(&mut out, all);
    out.into_bytes()
}
