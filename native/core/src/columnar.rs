//! Columnar snapshot bodies: a sequence of canonical records (docs/FORMAT.md, 6) stored
//! column by column, each column as one or more streams compressed with zstd on its own,
//! and rebuilt byte for byte by [`decode`].
//!
//! # Layout
//!
//! Integers in the table of contents are LEB128 varints (`uv`: unsigned, 1..10 bytes;
//! `sv`: a signed int64, zigzagged, then as `uv`); `u8` is one byte.
//!
//! ```text
//! body     := "FKC1"                      magic and layout version
//!             uv total                    bytes of all the canonical records together
//!             uv count                    records
//!             uv width                    fields per record (the schema's columns)
//!             uv toc_len, node*width      the columns' descriptors (toc_len bytes), in
//!                                         field order, each a tree of nodes in preorder
//!             uv streams, entry*streams   one per stream, in the order nodes take them
//!             stream data                 the streams' stored bytes, back to back, to the
//!                                         end of the body
//! entry    := uv raw_size                 the stream's bytes once decompressed
//!             uv stored                   stored_size << 1 | 1 when zstd-compressed (one
//!                                         or more zstd frames), | 0 when stored as is
//!                                         (then stored_size == raw_size)
//! ```
//!
//! A column of `m` values (the `count` records for a field; for a nested node, the
//! number its parent gives) is one node. A node is a tag byte, its parameters, then its
//! child nodes; it takes its streams from the stream list in the order written here,
//! interleaved in preorder with its children's:
//!
//! | tag | node | parameters, streams and children |
//! |---|---|---|
//! | 0 | `NIL` | every value is nil (`C0`); no stream |
//! | 1 | `NULLS` | stream: `ceil(m/8)` bytes, bit `i` (LSB first) set when value `i` is not nil (padding bits zero); child: a node of the `p` non-nil values, `p` the bits set |
//! | 2 | `BOOL` | stream: `ceil(m/8)` bytes, bit `i` set for true (`C3`), clear for false (`C2`) |
//! | 3 | `INT` | `u8 flags` (bit 0: delta, bit 1: packed), `u8 bits` (0..=64), `sv base`, with delta also `sv first`; a stream when `bits > 0` (see below) |
//! | 4 | `FLOAT` | stream: `8m` bytes, the float64s' little-endian bytes split in 8 planes: byte `k` of value `i` at `k*m + i` |
//! | 5 | `DECIMAL` | `u8 e` (0..=18), `uv x`; child: `INT` of `m` ints `d`; if `x > 0`, children: `INT` of `x` strictly ascending value positions, `FLOAT` of their `x` values |
//! | 6 | `STR` | child: `INT` of `m` lengths; stream: the strings' UTF-8 bytes back to back |
//! | 7 | `BIN` | as `STR`, for bins |
//! | 8 | `EXT` | `u8 code`; as `STR`, for ext payloads of that type code |
//! | 9 | `EXTINT` | `u8 code`, `u8 size` (4 or 8); child: `INT` of `m` ints, the payloads as big-endian signed ints |
//! | 10 | `RAW` | as `STR`, each value's whole canonical encoding |
//! | 11 | `DICT` | `uv k`; child: a node of the `k` distinct values; child: `INT` of `m` ids (`< k`) |
//! | 12 | `LIST` | child: `INT` of `m` lengths; child: a node of all their elements (the lengths' sum) |
//! | 13 | `MAP` | child: `INT` of `m` entry counts; children: a node of every key, a node of every value (the counts' sum each) |
//! | 14 | `STRUCT` | `uv f`, then `f` times `uv len` and a key's canonical encoding (`len` bytes); children: `f` nodes of `m` values, field `j` of every map |
//!
//! A value is written back as: `NIL` `C0`; `BOOL` `C2`/`C3`; `INT` the int's canonical
//! form; `FLOAT` `CB` and the bits; `DECIMAL` value `i` is the next exception's float
//! when `i` is the next exception position, else `(d_i as f64) / 10^e` (IEEE division,
//! `10^e` exact); `STR`, `BIN`, `EXT` the canonical header for the length (and the
//! type code), then the bytes; `EXTINT` the ext header (`D6`/`D7`, code) and the int's
//! 4 or 8 big-endian bytes; `RAW` the bytes as they are; `DICT` distinct value `id`'s
//! encoding; `LIST` an array header, then that many elements; `MAP` a map header, then
//! key, value, key, value...; `STRUCT` a map header of `f` entries, then key `j`, field
//! `j`'s value for each `j`. A record is the canonical array header of `width` items
//! and its fields' values.
//!
//! An `INT` node's ints: the stream holds `len` unsigned `u` of `bits` bits (`len` is
//! `m`, or `m - 1` with delta): `bits / 8` byte planes (byte `k` of `u_i` at `k*len +
//! i`), then, when `r = bits % 8` is not 0, the top `r` bits of each `u`: one byte per
//! `u` (at `(bits/8)*len + i`), or with packed bit-packed LSB first, `u_i`'s at bit
//! `i*r` of the `ceil(len*r/8)` bytes that follow the byte planes. Without delta,
//! `v_i = base + u_i`; with delta, `v_0 = first` and `v_i = v_{i-1} + base + u_{i-1}`
//! (all in wrapping int64 arithmetic). `bits == 0`: every `u` is 0 and there is no
//! stream.
//!
//! # What the encoder chooses
//!
//! Per node, from the values (never from a schema): a node's kind from its first
//! non-nil value, nils as `NULLS`; ints as `INT`, with or without delta and the top bits
//! packed or not, whichever of the four compresses a sample smallest; floats as
//! `DECIMAL` when a power of ten turns most of them into ints exactly, else `FLOAT`;
//! strs, bins, exts and raw values as a `DICT` when they repeat (twice on average at
//! least), ids in order of descending frequency; ext payloads of 4 or 8 bytes as
//! `EXTINT`; maps whose keys are the same (same bytes, same order) in every value as
//! `STRUCT`, other maps as `MAP`. A value that would not come back as the bytes it has
//! (an int, a str or a header not in its canonical form, a float32, a uint64 past
//! int64, a value of another kind than its node's) turns its node into `RAW` and the
//! column is encoded again; nodes nested deeper than [`MAX_NEST`] are `RAW`.
//!
//! # What the decoder checks
//!
//! [`decode`] refuses (an `Err`, never a panic) any body it cannot rebuild exactly:
//! `total` over the caller's `max_bytes`; a record count the total cannot hold (a record
//! takes `width + 1` bytes at least); another width; a table of contents or stream table
//! that does not parse or does not end where its sizes say; stored sizes that do not add
//! up to the rest of the body, or raw sizes past `17 * total + 8 * streams + 64` (more
//! than an encoder writes: 8 bytes of ints for a one-byte value, twice over for a
//! dictionary's); a stream whose raw size is not the one its node implies (checked
//! before it is decompressed), a zstd frame that declares another size or could not
//! expand to it (2^15 bytes per byte at most), or that does not decompress to it;
//! counts and lengths past what `total` can hold, lengths past their streams, ids past
//! their dictionaries, exceptions out of order; values or streams left over; and output
//! that would pass `total` (checked before every write).
//!
//! Memory: the decompressed streams (each checked as above), and the output, which
//! grows as it is written (from a guess of 64 bytes per body byte, doubling, never past
//! `total`), so a body that claims more than it holds costs what it holds.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_64;

use crate::codings::packed_len;
use crate::error::{Error, Result};
use crate::msgpack::{
    bin_header_len, container_header_len, ext_header_len, str_header_len,
    write_array_header, write_bin_header, write_bool, write_ext_header, write_f64, write_int,
    write_map_header, write_str_header, Reader, Token,
};
use crate::records::Records;
use crate::verify::MAX_DEPTH;

/// The body's first bytes.
pub const MAGIC: [u8; 4] = *b"FKC1";
/// How deep the encoder splits nested values into columns; deeper values are `RAW`.
pub const MAX_NEST: usize = 8;
/// How deep a table of contents may nest nodes (`NULLS` and `DICT` add a level each).
const MAX_TOC_DEPTH: usize = 3 * MAX_NEST + 4;

const NIL: u8 = 0;
const NULLS: u8 = 1;
const BOOL: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const DECIMAL: u8 = 5;
const STR: u8 = 6;
const BIN: u8 = 7;
const EXT: u8 = 8;
const EXTINT: u8 = 9;
const RAW: u8 = 10;
const DICT: u8 = 11;
const LIST: u8 = 12;
const MAP: u8 = 13;
const STRUCT: u8 = 14;

const DELTA: u8 = 1;
const PACKED: u8 = 2;

const MSGPACK_NIL: u8 = 0xc0;

/// `10^e`, exact in float64 for every `e` here.
const POW10: [f64; 19] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18,
];

// -- the encoder ------------------------------------------------------------------------

/// Distinct values a dictionary may collect before it must show repeats: past this
/// many, a dictionary holding more than half as many values as it has ids stops and its
/// node goes on plain.
const DICT_TRIAL: usize = 4096;
/// Values of an `INT` node compressed to choose its form (in up to 4 runs).
const INT_SAMPLE: usize = 1 << 16;
/// Values sampled to choose a `DECIMAL` node's exponent.
const FLOAT_SAMPLE: usize = 2048;

/// Encodes `records` (canonical msgpack arrays of `width` fields, in the order given) as
/// a columnar body (the module's layout), streams compressed at zstd `level`.
///
/// Fails (`Invalid`) on a record that is not a canonical array header of `width` items
/// followed by `width` msgpack values and nothing else.
pub fn encode(records: &Records<'_>, width: usize, level: i32) -> Result<Vec<u8>> {
    let n = records.len();
    let mut header = Vec::new();
    write_array_header(&mut header, width);
    let mut total = 0u64;
    for i in 0..n {
        let record = records.get(i);
        if !record.starts_with(&header) {
            return Err(Error::invalid(format!("record {i} is not an array of {width} fields")));
        }
        total += record.len() as u64;
    }
    let mut hints = vec![Hint::default(); width];
    let mut done: Vec<Option<Node<'_>>> = (0..width).map(|_| None).collect();
    let mut todo: Vec<usize> = (0..width).collect();
    while !todo.is_empty() {
        let mut nodes: Vec<Option<Node<'_>>> = todo.iter().map(|&c| Some(Node::new(0, hints[c].clone()))).collect();
        let mut failed: Vec<(usize, Vec<u32>, Lower)> = Vec::new();
        for i in 0..n {
            let record = records.get(i);
            let mut r = Reader::new(record);
            r.raw(header.len())?;
            let mut next = 0;
            for c in 0..width {
                let at = r.pos();
                let slot = if todo.get(next) == Some(&c) {
                    next += 1;
                    nodes[next - 1].as_mut()
                } else {
                    None
                };
                let Some(node) = slot else {
                    r.skip(MAX_DEPTH).map_err(|e| record_error(i, e))?;
                    continue;
                };
                match node.push(&mut r) {
                    Ok(()) => {}
                    Err(Fault::Bad(e)) => return Err(record_error(i, e)),
                    Err(Fault::Demote(mut path, lower)) => {
                        path.reverse();
                        failed.push((c, path, lower));
                        nodes[next - 1] = None;
                        // The field again, skipped whole from its start.
                        r = Reader::new(record);
                        r.raw(at)?;
                        r.skip(MAX_DEPTH).map_err(|e| record_error(i, e))?;
                    }
                }
            }
            if r.remaining() != 0 {
                return Err(Error::invalid(format!("record {i} has bytes after its {width} fields")));
            }
        }
        for (&c, node) in todo.iter().zip(nodes) {
            if let Some(node) = node {
                done[c] = Some(node);
            }
        }
        todo.clear();
        for (c, path, lower) in failed {
            hints[c].demote(&path, lower);
            todo.push(c);
        }
        todo.sort_unstable();
    }
    let mut sink = Sink::new(level)?;
    for node in done.into_iter().flatten() {
        node.finish(&mut sink)?;
    }
    sink.body(total, n, width)
}

fn record_error(i: usize, e: Error) -> Error {
    Error::invalid(format!("record {i}: {}", e.message()))
}

/// Why a value could not be pushed: the node at a path (child indexes, innermost first)
/// must become a map (a struct whose keys changed) or raw, or the record is not msgpack.
enum Fault {
    Demote(Vec<u32>, Lower),
    Bad(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lower {
    Map,
    Raw,
}

impl From<Error> for Fault {
    fn from(e: Error) -> Fault {
        Fault::Bad(e)
    }
}

impl Fault {
    /// The same fault seen from the parent of the node that raised it, child `i`.
    #[cold]
    fn within(self, i: usize) -> Fault {
        match self {
            Fault::Demote(mut path, lower) => {
                path.push(i as u32);
                Fault::Demote(path, lower)
            }
            bad => bad,
        }
    }
}

/// This node's values must be raw.
#[cold]
fn demote() -> Fault {
    Fault::Demote(Vec::new(), Lower::Raw)
}

/// What earlier passes learnt about a node: its values must be `RAW`, or its maps are
/// not all of one struct. Children by index, as the node's kind numbers them.
#[derive(Debug, Clone, Default)]
struct Hint {
    raw: bool,
    map: bool,
    children: Vec<Hint>,
}

impl Hint {
    fn child(&self, i: usize) -> Hint {
        self.children.get(i).cloned().unwrap_or_default()
    }

    /// Lowers the node at `path` (its children are other ones afterwards).
    fn demote(&mut self, path: &[u32], lower: Lower) {
        match path.split_first() {
            None => {
                match lower {
                    Lower::Map => self.map = true,
                    Lower::Raw => self.raw = true,
                }
                self.children.clear();
            }
            Some((&i, rest)) => {
                let i = i as usize;
                if self.children.len() <= i {
                    self.children.resize(i + 1, Hint::default());
                }
                self.children[i].demote(rest, lower);
            }
        }
    }
}

/// Bits, LSB first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    len: usize,
}

impl Bits {
    fn ones(len: usize) -> Bits {
        let mut bytes = vec![0xffu8; len / 8];
        if !len.is_multiple_of(8) {
            bytes.push((1u8 << (len % 8)) - 1);
        }
        Bits { bytes, len }
    }

    #[inline(always)]
    fn push(&mut self, bit: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 1 << (self.len % 8);
            }
        }
        self.len += 1;
    }
}

/// One node being built: its values so far.
struct Node<'a> {
    count: usize,
    /// Which values are not nil; made at the first nil.
    present: Option<Bits>,
    depth: usize,
    hint: Hint,
    kind: Kind<'a>,
}

enum Kind<'a> {
    /// No value that is not nil yet.
    Pending,
    Bool(Bits),
    Int(Vec<i64>),
    Float(Vec<u64>),
    Blobs(Blobs<'a>),
    List { lengths: Vec<u32>, elements: Box<Node<'a>> },
    Map { counts: Vec<u32>, keys: Box<Node<'a>>, values: Box<Node<'a>> },
    /// Maps with the same keys: the first map's, once it has been read.
    Struct { keys: Option<Vec<&'a [u8]>>, fields: Vec<Node<'a>> },
}

impl<'a> Node<'a> {
    fn new(depth: usize, hint: Hint) -> Node<'a> {
        Node { count: 0, present: None, depth, hint, kind: Kind::Pending }
    }

    /// Reads one value from `r` into the node.
    fn push(&mut self, r: &mut Reader<'a>) -> std::result::Result<(), Fault> {
        if r.peek() == Some(MSGPACK_NIL) {
            r.raw(1)?;
            self.present.get_or_insert_with(|| Bits::ones(self.count)).push(false);
            self.count += 1;
            return Ok(());
        }
        if let Some(p) = &mut self.present {
            p.push(true);
        }
        self.count += 1;
        if let Kind::Pending = self.kind {
            self.kind = self.start(r.peek().unwrap_or(MSGPACK_NIL));
        }
        match &mut self.kind {
            Kind::Pending => return Err(Error::damaged("msgpack data ends early").into()),
            Kind::Bool(bits) => match r.token()? {
                Token::Bool(v) => bits.push(v),
                _ => return Err(demote()),
            },
            Kind::Int(values) => values.push(r.canonical_int()?.ok_or_else(demote)?),
            Kind::Float(values) => match r.token()? {
                Token::F64(v) => values.push(v.to_bits()),
                _ => return Err(demote()),
            },
            Kind::Blobs(blobs) => blobs.push(r)?,
            Kind::List { lengths, elements } => match r.canonical_container(false)? {
                Some(n) if n <= u32::MAX as usize => {
                    lengths.push(n as u32);
                    elements.push_n(r, n).map_err(|f| f.within(0))?;
                }
                _ => return Err(demote()),
            },
            Kind::Map { counts, keys, values } => match r.canonical_container(true)? {
                Some(n) if n <= u32::MAX as usize => {
                    counts.push(n as u32);
                    for _ in 0..n {
                        keys.push(r).map_err(|f| f.within(0))?;
                        values.push(r).map_err(|f| f.within(1))?;
                    }
                }
                _ => return Err(demote()),
            },
            Kind::Struct { keys: Some(keys), fields } => match r.canonical_container(true)? {
                Some(n) if n == keys.len() => {
                    for (j, (key, field)) in keys.iter().zip(fields.iter_mut()).enumerate() {
                        // msgpack values delimit themselves: the same bytes are the same key
                        if r.raw(key.len()).ok() != Some(*key) {
                            return Err(Fault::Demote(Vec::new(), Lower::Map));
                        }
                        field.push(r).map_err(|f| f.within(j))?;
                    }
                }
                Some(_) => return Err(Fault::Demote(Vec::new(), Lower::Map)),
                None => return Err(demote()),
            },
            Kind::Struct { keys: keys @ None, fields } => match r.canonical_container(true)? {
                Some(n) => {
                    let mut first = Vec::with_capacity(n);
                    for j in 0..n {
                        let k = r.pos();
                        r.skip(MAX_DEPTH)?;
                        first.push(r.since(k));
                        let mut field = Node::new(self.depth + 1, self.hint.child(j));
                        field.push(r).map_err(|f| f.within(j))?;
                        fields.push(field);
                    }
                    *keys = Some(first);
                }
                _ => return Err(demote()),
            },
        }
        Ok(())
    }

    /// Reads `n` values (a list's elements): strs, ints and the like in one loop, while
    /// they are not nil.
    fn push_n(&mut self, r: &mut Reader<'a>, n: usize) -> std::result::Result<(), Fault> {
        let mut i = 0;
        if self.present.is_none() {
            match &mut self.kind {
                Kind::Blobs(blobs) => {
                    while i < n && r.peek() != Some(MSGPACK_NIL) {
                        blobs.push(r)?;
                        i += 1;
                    }
                }
                Kind::Int(values) => {
                    while i < n && r.peek() != Some(MSGPACK_NIL) {
                        values.push(r.canonical_int()?.ok_or_else(demote)?);
                        i += 1;
                    }
                }
                _ => {}
            }
            self.count += i;
        }
        for _ in i..n {
            self.push(r)?;
        }
        Ok(())
    }

    /// The kind of a node whose first non-nil value starts with `first`.
    fn start(&self, first: u8) -> Kind<'a> {
        let nest = self.depth < MAX_NEST && !self.hint.raw;
        let child = |i: usize| Box::new(Node::new(self.depth + 1, self.hint.child(i)));
        if self.hint.raw {
            return Kind::Blobs(Blobs::new(Form::Raw));
        }
        match first {
            0xc2 | 0xc3 => Kind::Bool(Bits::default()),
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => Kind::Int(Vec::new()),
            0xcb => Kind::Float(Vec::new()),
            0xa0..=0xbf | 0xd9..=0xdb => Kind::Blobs(Blobs::new(Form::Str)),
            0xc4..=0xc6 => Kind::Blobs(Blobs::new(Form::Bin)),
            0xc7..=0xc9 | 0xd4..=0xd8 => Kind::Blobs(Blobs::new(Form::Ext(None))),
            0x90..=0x9f | 0xdc | 0xdd if nest => Kind::List { lengths: Vec::new(), elements: child(0) },
            0x80..=0x8f | 0xde | 0xdf if nest && self.hint.map => {
                Kind::Map { counts: Vec::new(), keys: child(0), values: child(1) }
            }
            0x80..=0x8f | 0xde | 0xdf if nest => Kind::Struct { keys: None, fields: Vec::new() },
            _ => Kind::Blobs(Blobs::new(Form::Raw)),
        }
    }

    /// Writes the node's descriptor and streams.
    fn finish(self, sink: &mut Sink) -> Result<()> {
        match (self.kind, self.present) {
            // every value nil (or no value)
            (Kind::Pending, _) => sink.toc.push(NIL),
            (kind, None) => kind.finish(sink)?,
            (kind, Some(present)) => {
                sink.toc.push(NULLS);
                sink.streams.push(present.bytes);
                kind.finish(sink)?;
            }
        }
        Ok(())
    }
}

impl Kind<'_> {
    fn finish(self, sink: &mut Sink) -> Result<()> {
        match self {
            Kind::Pending => sink.toc.push(NIL),
            Kind::Bool(bits) => {
                sink.toc.push(BOOL);
                sink.streams.push(bits.bytes);
            }
            Kind::Int(values) => sink.ints(&values),
            Kind::Float(values) => sink.floats(&values),
            Kind::Blobs(blobs) => blobs.finish(sink),
            Kind::List { lengths, elements } => {
                sink.toc.push(LIST);
                sink.ints(&lengths);
                elements.finish(sink)?;
            }
            Kind::Map { counts, keys, values } => {
                sink.toc.push(MAP);
                sink.ints(&counts);
                keys.finish(sink)?;
                values.finish(sink)?;
            }
            Kind::Struct { keys, fields } => {
                let keys = keys.unwrap_or_default();
                sink.toc.push(STRUCT);
                put_uv(&mut sink.toc, keys.len() as u64);
                for key in &keys {
                    put_uv(&mut sink.toc, key.len() as u64);
                    sink.toc.extend_from_slice(key);
                }
                for field in fields {
                    field.finish(sink)?;
                }
            }
        }
        Ok(())
    }
}

/// The values of a str, bin, ext or raw node: a dictionary while they repeat, else
/// lengths and bytes.
struct Blobs<'a> {
    form: Form,
    dict: Option<Dict<'a>>,
    lengths: Vec<u32>,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Str,
    Bin,
    /// The type code, from the first value.
    Ext(Option<i8>),
    Raw,
}

/// `a == b`, inline for the short values dictionaries mostly hold (two overlapping
/// loads rather than a call to `memcmp`).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| -> u64 { s.get(at..at + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_le_bytes) };
    let half = |s: &[u8], at: usize| -> u32 { s.get(at..at + 4).and_then(|w| w.try_into().ok()).map_or(0, u32::from_le_bytes) };
    match n {
        0..=3 => a == b,
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

#[derive(Default)]
struct Dict<'a> {
    ids: Vec<u32>,
    values: Vec<&'a [u8]>,
    /// Open addressing over `values`: `id + 1` (0: free) and the top half of the value's
    /// hash, linear probing, at most half full.
    slots: Vec<(u32, u32)>,
}

impl<'a> Dict<'a> {
    /// The id of `value`, a new one if the dictionary does not hold it yet.
    #[inline]
    fn id(&mut self, value: &'a [u8]) -> u32 {
        if self.values.len() * 2 >= self.slots.len() {
            self.grow();
        }
        let hash = xxh3_64(value);
        let tag = (hash >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let (id, t) = self.slots[at];
            if id == 0 {
                let next = self.values.len() as u32;
                self.slots[at] = (next + 1, tag);
                self.values.push(value);
                return next;
            }
            if t == tag && same(self.values[id as usize - 1], value) {
                return id - 1;
            }
            at = (at + 1) & mask;
        }
    }

    #[cold]
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        self.slots = vec![(0, 0); size];
        let mask = size - 1;
        for (id, v) in self.values.iter().enumerate() {
            let hash = xxh3_64(v);
            let mut at = hash as usize & mask;
            while self.slots[at].0 != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = (id as u32 + 1, (hash >> 32) as u32);
        }
    }
}

impl<'a> Blobs<'a> {
    fn new(form: Form) -> Blobs<'a> {
        Blobs { form, dict: Some(Dict::default()), lengths: Vec::new(), bytes: Vec::new() }
    }

    #[inline]
    fn push(&mut self, r: &mut Reader<'a>) -> std::result::Result<(), Fault> {
        let at = r.pos();
        let content = match self.form {
            Form::Raw => {
                r.skip(MAX_DEPTH)?;
                r.since(at)
            }
            Form::Str => r.canonical_str()?.ok_or_else(demote)?,
            Form::Bin => r.canonical_bin()?.ok_or_else(demote)?,
            Form::Ext(code) => match r.token()? {
                Token::Ext(c, p) if code.is_none_or(|code| code == c) && r.pos() - at - p.len() == ext_header_len(p.len()) => {
                    self.form = Form::Ext(Some(c));
                    p
                }
                _ => return Err(demote()),
            },
        };
        if content.len() > u32::MAX as usize {
            return Err(demote());
        }
        self.add(content);
        Ok(())
    }

    #[inline]
    fn add(&mut self, content: &'a [u8]) {
        let Some(d) = &mut self.dict else {
            self.lengths.push(content.len() as u32);
            self.bytes.extend_from_slice(content);
            return;
        };
        let known = d.values.len();
        let id = d.id(content);
        d.ids.push(id);
        if d.values.len() > known && d.values.len() > DICT_TRIAL && d.values.len() * 2 > d.ids.len() {
            self.plain();
        }
    }

    /// Leaves the dictionary: its values in order, as lengths and bytes.
    fn plain(&mut self) {
        if let Some(d) = self.dict.take() {
            self.lengths.reserve(d.ids.len());
            for &id in &d.ids {
                let v = d.values[id as usize];
                self.lengths.push(v.len() as u32);
                self.bytes.extend_from_slice(v);
            }
        }
    }

    fn finish(mut self, sink: &mut Sink) {
        if let Some(d) = &self.dict {
            if d.ids.is_empty() || d.values.len() * 2 > d.ids.len() {
                self.plain();
            }
        }
        if let (Form::Ext(Some(code)), Some(size)) = (self.form, self.fixed_size()) {
            return self.ext_ints(sink, code, size);
        }
        let Some(d) = self.dict.take() else {
            self.head(sink);
            sink.ints(&self.lengths);
            sink.streams.push(self.bytes);
            return;
        };
        // Ids by descending frequency (ties: first seen first), so small ids are common.
        let mut freq = vec![0u32; d.values.len()];
        for &id in &d.ids {
            freq[id as usize] += 1;
        }
        let mut order: Vec<u32> = (0..d.values.len() as u32).collect();
        order.sort_by_key(|&id| std::cmp::Reverse(freq[id as usize]));
        let mut rank = vec![0u32; d.values.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old as usize] = new as u32;
        }
        sink.toc.push(DICT);
        put_uv(&mut sink.toc, d.values.len() as u64);
        self.head(sink);
        let lengths: Vec<u32> = order.iter().map(|&id| d.values[id as usize].len() as u32).collect();
        sink.ints(&lengths);
        let mut bytes = Vec::with_capacity(lengths.iter().map(|&l| l as usize).sum());
        for &id in &order {
            bytes.extend_from_slice(d.values[id as usize]);
        }
        sink.streams.push(bytes);
        let ids: Vec<u32> = d.ids.iter().map(|&id| rank[id as usize]).collect();
        sink.ints(&ids);
    }

    /// The tag (and code) of the plain node.
    fn head(&self, sink: &mut Sink) {
        match self.form {
            Form::Str => sink.toc.push(STR),
            Form::Bin => sink.toc.push(BIN),
            Form::Ext(code) => sink.toc.extend_from_slice(&[EXT, code.unwrap_or(0) as u8]),
            Form::Raw => sink.toc.push(RAW),
        }
    }

    /// 4 or 8 when every ext payload is that long.
    fn fixed_size(&self) -> Option<usize> {
        let size = match &self.dict {
            Some(d) => d.values.first()?.len(),
            None => *self.lengths.first()? as usize,
        };
        let same = match &self.dict {
            Some(d) => d.values.iter().all(|v| v.len() == size),
            None => self.lengths.iter().all(|&l| l as usize == size),
        };
        (same && (size == 4 || size == 8)).then_some(size)
    }

    fn ext_ints(self, sink: &mut Sink, code: i8, size: usize) {
        let int = |p: &[u8]| -> i64 {
            if size == 4 {
                i32::from_be_bytes([p[0], p[1], p[2], p[3]]) as i64
            } else {
                i64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
            }
        };
        let values: Vec<i64> = match &self.dict {
            Some(d) => d.ids.iter().map(|&id| int(d.values[id as usize])).collect(),
            None => self.bytes.chunks_exact(size).map(int).collect(),
        };
        sink.toc.extend_from_slice(&[EXTINT, code as u8, size as u8]);
        sink.ints(&values);
    }
}

/// Where finished nodes go: the table of contents and the raw streams.
struct Sink {
    toc: Vec<u8>,
    streams: Vec<Vec<u8>>,
    level: i32,
    trial: zstd::bulk::Compressor<'static>,
}

fn zstd_error(e: std::io::Error) -> Error {
    Error::invalid(format!("zstd: {e}"))
}

impl Sink {
    fn new(level: i32) -> Result<Sink> {
        let trial = zstd::bulk::Compressor::new(level).map_err(zstd_error)?;
        Ok(Sink { toc: Vec::new(), streams: Vec::new(), level, trial })
    }

    fn compressed_len(&mut self, data: &[u8]) -> usize {
        self.trial.compress(data).map_or(data.len(), |c| c.len())
    }

    /// An `INT` node of `values`.
    fn ints<T: Copy + Into<i64>>(&mut self, values: &[T]) {
        let v = |i: usize| -> i64 { values[i].into() };
        let m = values.len();
        if m == 0 {
            self.toc.extend_from_slice(&[INT, 0, 0, 0]);
            return;
        }
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for &x in values {
            let x = x.into();
            lo = lo.min(x);
            hi = hi.max(x);
        }
        let plain = Ints { delta: false, base: lo, first: 0, bits: bits_of(hi.wrapping_sub(lo) as u64) };
        let mut best = (plain, false);
        if m >= 2 && plain.bits > 0 {
            let (mut dlo, mut dhi) = (i64::MAX, i64::MIN);
            for i in 1..m {
                let d = v(i).wrapping_sub(v(i - 1));
                dlo = dlo.min(d);
                dhi = dhi.max(d);
            }
            let delta = Ints { delta: true, base: dlo, first: v(0), bits: bits_of(dhi.wrapping_sub(dlo) as u64) };
            best = if delta.bits == 0 { (delta, false) } else { self.choose(values, [plain, delta]) };
        }
        let (ints, packed) = best;
        self.toc.extend_from_slice(&[INT, if ints.delta { DELTA } else { 0 } | if packed { PACKED } else { 0 }, ints.bits as u8]);
        put_sv(&mut self.toc, ints.base);
        if ints.delta {
            put_sv(&mut self.toc, ints.first);
        }
        if ints.bits > 0 {
            let len = if ints.delta { m - 1 } else { m };
            self.streams.push(ints.planes(values, &[(0, len)], packed));
        }
    }

    /// The smallest of the forms of `candidates` on a sample of the values.
    fn choose<T: Copy + Into<i64>>(&mut self, values: &[T], candidates: [Ints; 2]) -> (Ints, bool) {
        let m = values.len();
        let mut best = (candidates[0], false);
        let mut best_size = usize::MAX;
        for ints in candidates {
            let len = if ints.delta { m - 1 } else { m };
            let ranges = sample_ranges(len, INT_SAMPLE);
            let packings: &[bool] = if ints.bits.is_multiple_of(8) { &[false] } else { &[false, true] };
            for &packed in packings {
                let planes = ints.planes(values, &ranges, packed);
                let size = self.compressed_len(&planes);
                if size < best_size {
                    best_size = size;
                    best = (ints, packed);
                }
            }
        }
        best
    }

    /// A `DECIMAL` node of `values` (float64 bits) when a power of ten makes ints of
    /// them, else a `FLOAT` node.
    fn floats(&mut self, values: &[u64]) {
        let m = values.len();
        let Some(e) = decimal_exponent(values) else {
            self.toc.push(FLOAT);
            self.streams.push(float_planes(values.iter().copied(), m));
            return;
        };
        // An exception's int is the int before it (the first int for those before it):
        // it keeps the ints' range and deltas.
        let mut ints = Vec::with_capacity(m);
        let mut positions = Vec::new();
        let mut exceptions = Vec::new();
        let mut last = None;
        for (i, &x) in values.iter().enumerate() {
            match scaled(f64::from_bits(x), e) {
                Some(d) => {
                    if last.is_none() {
                        ints.iter_mut().for_each(|p| *p = d);
                    }
                    ints.push(d);
                    last = Some(d);
                }
                None => {
                    positions.push(i as i64);
                    exceptions.push(x);
                    ints.push(last.unwrap_or(0));
                }
            }
        }
        if exceptions.len() * 8 > m {
            self.toc.push(FLOAT);
            self.streams.push(float_planes(values.iter().copied(), m));
            return;
        }
        self.toc.push(DECIMAL);
        self.toc.push(e as u8);
        put_uv(&mut self.toc, exceptions.len() as u64);
        self.ints(&ints);
        if !exceptions.is_empty() {
            self.ints(&positions);
            self.toc.push(FLOAT);
            self.streams.push(float_planes(exceptions.iter().copied(), exceptions.len()));
        }
    }

    /// The body: header, table of contents, stream table and the compressed streams.
    fn body(self, total: u64, count: usize, width: usize) -> Result<Vec<u8>> {
        let stored = compress_all(&self.streams, self.level)?;
        let mut out = Vec::with_capacity(64 + self.toc.len() + stored.iter().map(|s| s.as_ref().map_or(0, Vec::len)).sum::<usize>());
        out.extend_from_slice(&MAGIC);
        put_uv(&mut out, total);
        put_uv(&mut out, count as u64);
        put_uv(&mut out, width as u64);
        put_uv(&mut out, self.toc.len() as u64);
        out.extend_from_slice(&self.toc);
        put_uv(&mut out, self.streams.len() as u64);
        for (raw, stored) in self.streams.iter().zip(&stored) {
            put_uv(&mut out, raw.len() as u64);
            match stored {
                Some(z) => put_uv(&mut out, (z.len() as u64) << 1 | 1),
                None => put_uv(&mut out, (raw.len() as u64) << 1),
            }
        }
        for (raw, stored) in self.streams.iter().zip(&stored) {
            out.extend_from_slice(stored.as_deref().unwrap_or(raw));
        }
        Ok(out)
    }
}

/// Streams by number, compressed (None: stored as is).
type Compressed = Vec<(usize, Option<Vec<u8>>)>;

/// Each stream compressed (None: stored as is, when zstd does not make it smaller), on
/// as many threads as the machine has, the largest streams first.
fn compress_all(streams: &[Vec<u8>], level: i32) -> Result<Vec<Option<Vec<u8>>>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut order: Vec<usize> = (0..streams.len()).filter(|&i| !streams[i].is_empty()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(streams[i].len()));
    let bytes: usize = streams.iter().map(Vec::len).sum();
    let threads = if bytes < 1 << 20 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(order.len())
    };
    let next = AtomicUsize::new(0);
    let work = || -> Result<Compressed> {
        let mut z = zstd::bulk::Compressor::new(level).map_err(zstd_error)?;
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&i) = order.get(k) else { return Ok(done) };
            let c = z.compress(&streams[i]).map_err(zstd_error)?;
            done.push((i, (c.len() < streams[i].len()).then_some(c)));
        }
    };
    let parts: Vec<Result<Compressed>> = if threads <= 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::invalid("a compression thread failed")))).collect()
        })
    };
    let mut out: Vec<Option<Vec<u8>>> = (0..streams.len()).map(|_| None).collect();
    for part in parts {
        for (i, c) in part? {
            out[i] = c;
        }
    }
    Ok(out)
}

/// `count` evenly spaced runs covering `sample` of `0..len` (all of it when shorter).
fn sample_ranges(len: usize, sample: usize) -> Vec<(usize, usize)> {
    if len <= sample {
        return vec![(0, len)];
    }
    let runs = 4;
    let run = sample / runs;
    (0..runs).map(|k| {
        let start = (len - run) * k / (runs - 1);
        (start, start + run)
    }).collect()
}

/// An `INT` node's form.
#[derive(Debug, Clone, Copy)]
struct Ints {
    delta: bool,
    base: i64,
    first: i64,
    bits: u32,
}

impl Ints {
    /// The stream of the `u` of the planes' positions in `ranges` (value `j`'s, or with
    /// delta value `j + 1`'s).
    fn planes<T: Copy + Into<i64>>(&self, values: &[T], ranges: &[(usize, usize)], packed: bool) -> Vec<u8> {
        let len: usize = ranges.iter().map(|(a, b)| b - a).sum();
        let full = (self.bits / 8) as usize;
        let r = self.bits % 8;
        let top = match (r, packed) {
            (0, _) => 0,
            (_, false) => len,
            (_, true) => packed_len(len, r).unwrap_or(0),
        };
        let mut out = vec![0u8; full * len + top];
        let (planes, rest) = out.split_at_mut(full * len);
        let mut u = [0u64; BATCH];
        let mut pos = 0;
        for &(a, b) in ranges {
            for start in (a..b).step_by(BATCH) {
                let n = (b - start).min(BATCH);
                let u = &mut u[..n];
                if self.delta {
                    for (t, x) in u.iter_mut().enumerate() {
                        let j = start + t;
                        *x = values[j + 1].into().wrapping_sub(values[j].into()).wrapping_sub(self.base) as u64;
                    }
                } else {
                    for (x, &v) in u.iter_mut().zip(&values[start..start + n]) {
                        *x = v.into().wrapping_sub(self.base) as u64;
                    }
                }
                for k in 0..full {
                    for (o, &x) in planes[k * len + pos..k * len + pos + n].iter_mut().zip(u.iter()) {
                        *o = (x >> (8 * k)) as u8;
                    }
                }
                if r > 0 && !packed {
                    for (o, &x) in rest[pos..pos + n].iter_mut().zip(u.iter()) {
                        *o = (x >> (8 * full)) as u8;
                    }
                } else if r > 0 {
                    for (t, &x) in u.iter().enumerate() {
                        let top = x >> (8 * full);
                        let bit = (pos + t) * r as usize;
                        let (byte, shift) = (bit / 8, bit % 8);
                        rest[byte] |= (top << shift) as u8;
                        if shift + r as usize > 8 {
                            rest[byte + 1] |= (top >> (8 - shift)) as u8;
                        }
                    }
                }
                pos += n;
            }
        }
        out
    }
}

fn bits_of(range: u64) -> u32 {
    u64::BITS - range.leading_zeros()
}

/// `x * 10^e` as an int, when `(int as f64) / 10^e` gives `x` back bit for bit.
#[inline]
fn scaled(x: f64, e: usize) -> Option<i64> {
    let d = (x * POW10[e]).round();
    // (NaN compares false)
    if d.is_nan() || d.abs() >= (1u64 << 62) as f64 {
        return None;
    }
    let d = d as i64;
    (((d as f64) / POW10[e]).to_bits() == x.to_bits()).then_some(d)
}

/// The exponent that codes a sample of `values` in the fewest bits (an exception counted
/// as 80), or None when no exponent beats the 64 bits of a float.
fn decimal_exponent(values: &[u64]) -> Option<usize> {
    let m = values.len();
    if m == 0 {
        return None;
    }
    let step = m.div_ceil(FLOAT_SAMPLE).max(1);
    let sample: Vec<f64> = values.iter().step_by(step).map(|&x| f64::from_bits(x)).collect();
    let mut best: Option<(u64, usize)> = None;
    for e in 0..POW10.len() {
        let (mut lo, mut hi, mut ok) = (i64::MAX, i64::MIN, 0u64);
        for &x in &sample {
            if let Some(d) = scaled(x, e) {
                lo = lo.min(d);
                hi = hi.max(d);
                ok += 1;
            }
        }
        if ok == 0 {
            continue;
        }
        let bits = bits_of(hi.wrapping_sub(lo) as u64) as u64;
        let cost = ok * bits + (sample.len() as u64 - ok) * 80;
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, e));
        }
    }
    let (cost, e) = best?;
    (cost < sample.len() as u64 * 56).then_some(e)
}

/// `FLOAT` planes of `count` float64 bits.
fn float_planes(values: impl Iterator<Item = u64>, count: usize) -> Vec<u8> {
    let mut out = vec![0u8; 8 * count];
    for (i, x) in values.enumerate() {
        for (k, b) in x.to_le_bytes().into_iter().enumerate() {
            out[k * count + i] = b;
        }
    }
    out
}

fn put_uv(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_sv(out: &mut Vec<u8>, v: i64) {
    put_uv(out, ((v << 1) ^ (v >> 63)) as u64);
}

// -- the decoder ------------------------------------------------------------------------

/// What zstd can expand a byte to, at most: a block of 128 KiB takes 4 bytes at least.
const ZSTD_RATIO: u64 = 1 << 15;

/// Streams' raw bytes per byte of records, at most: what [`encode`] can write (8 bytes
/// of ints for a one-byte value, twice for a dictionary's value) and a margin.
const RAW_PER_BYTE: u64 = 17;

/// Records rebuilt by [`decode`]: record `i` is `heap[starts[i]..starts[i] + lengths[i]]`,
/// records back to back in the body's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    pub heap: Vec<u8>,
    pub starts: Vec<i64>,
    pub lengths: Vec<i64>,
    /// Per field, with [`decode_tapped`], the dictionary a `DICT` column (or a `LIST`
    /// column of a `DICT`) was written from; empty otherwise.
    pub taps: Vec<Option<Tap>>,
}

/// A field's dictionary as its records were written from it: the distinct values'
/// canonical bytes (value `k` is `values[offsets[k]..offsets[k + 1]]`) and, in record
/// order, the id of each value (a `DICT` column) or of each list element (a `LIST` of
/// a `DICT`, with each record's list length in `lengths`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tap {
    pub values: Vec<u8>,
    pub offsets: Vec<usize>,
    pub ids: Vec<u32>,
    pub lengths: Option<Vec<u32>>,
}

impl Col<'_> {
    /// Starts recording ids when this top-level column is a `DICT` or a `LIST` of one.
    fn tap(&mut self, count: usize) {
        match self {
            Col::Dict { tap, .. } => *tap = Some(Vec::with_capacity(count)),
            Col::List { elements, tap, .. } if matches!(**elements, Col::Dict { .. }) => {
                *tap = Some(Vec::with_capacity(count));
                elements.tap(count);
            }
            _ => {}
        }
    }

    fn take_tap(self) -> Option<Tap> {
        match self {
            Col::Dict { values, offsets, tap: Some(ids), .. } => Some(Tap { values, offsets, ids, lengths: None }),
            Col::List { elements, tap: Some(lengths), .. } => {
                let mut tap = elements.take_tap()?;
                tap.lengths = Some(lengths);
                Some(tap)
            }
            _ => None,
        }
    }
}

impl Decoded {
    pub fn records(&self) -> Result<Records<'_>> {
        Records::new(vec![&self.heap[..]], None, &self.starts, &self.lengths)
    }
}

#[cold]
fn damaged(why: impl Into<String>) -> Error {
    Error::damaged(format!("columnar body: {}", why.into()))
}

/// Decodes a body [`encode`] wrote back into its canonical records. `width`: the
/// schema's columns; `max_bytes`: the most bytes of records the caller accepts (the
/// output is allocated once, at the body's declared total, when that is not more).
///
/// Never panics; every damage the decoder can see is an `Err` (module doc).
pub fn decode(body: &[u8], width: usize, max_bytes: usize) -> Result<Decoded> {
    decode_with(body, width, max_bytes, false)
}

/// [`decode`], also returning the dictionaries of `DICT` columns and `LIST`s of them
/// ([`Decoded::taps`]), so that a format-2 writer can take them instead of building
/// its own.
pub fn decode_tapped(body: &[u8], width: usize, max_bytes: usize) -> Result<Decoded> {
    decode_with(body, width, max_bytes, true)
}

fn decode_with(body: &[u8], width: usize, max_bytes: usize, tapped: bool) -> Result<Decoded> {
    let mut p = Toc { bytes: body, pos: 0 };
    if p.take(MAGIC.len()).ok() != Some(&MAGIC[..]) {
        return Err(damaged("no FKC1 magic"));
    }
    let total = p.uv()?;
    if total > max_bytes as u64 {
        return Err(damaged(format!("{total} bytes of records, more than the {max_bytes} expected")));
    }
    let total = total as usize;
    let count = p.uv()?;
    if count.checked_mul(width as u64 + 1).is_none_or(|least| least > total as u64) {
        return Err(damaged(format!("{count} records of {width} fields cannot fit {total} bytes")));
    }
    let count = count as usize;
    if p.uv()? != width as u64 {
        return Err(damaged(format!("not {width} columns")));
    }
    let toc_len = p.uv()?;
    let toc = p.take(usize::try_from(toc_len).map_err(|_| damaged("a huge table of contents"))?)?;
    let streams = p.uv()?;
    if streams > (p.remaining() / 2) as u64 {
        return Err(damaged(format!("{streams} streams in {} bytes", p.remaining())));
    }
    let mut table = Vec::with_capacity(streams as usize);
    let (mut raw_sum, mut stored_sum) = (0u64, 0u64);
    for _ in 0..streams {
        let raw = p.uv()?;
        let stored = p.uv()?;
        raw_sum = raw_sum.saturating_add(raw);
        stored_sum = stored_sum.saturating_add(stored >> 1);
        table.push((raw, stored >> 1, stored & 1 == 1));
    }
    if stored_sum != p.remaining() as u64 {
        return Err(damaged(format!("streams of {stored_sum} bytes, {} bytes after the table", p.remaining())));
    }
    if raw_sum > RAW_PER_BYTE * total as u64 + 8 * streams + 64 {
        return Err(damaged(format!("streams of {raw_sum} bytes for {total} bytes of records")));
    }
    let mut at = p.pos;
    let mut entries = Vec::with_capacity(table.len());
    for (raw, stored, z) in table {
        // Both fit the body (their sum is what remains of it).
        entries.push(Entry { raw: raw as usize, at, stored: stored as usize, zstd: z });
        at += stored as usize;
    }
    let dctx = zstd::bulk::Decompressor::new().map_err(|e| damaged(format!("zstd: {e}")))?;
    let mut ctx = Ctx { toc: Toc { bytes: toc, pos: 0 }, streams: Streams { body, entries, next: 0, dctx }, total };
    let mut columns = Vec::new();
    for _ in 0..width {
        columns.push(Col::parse(&mut ctx, count, 0)?);
    }
    if ctx.toc.remaining() != 0 {
        return Err(damaged("bytes after the last column's descriptor"));
    }
    if ctx.streams.next != ctx.streams.entries.len() {
        return Err(damaged("streams that no column uses"));
    }
    drop(ctx);
    if tapped {
        columns.iter_mut().for_each(|c| c.tap(count));
    }
    let mut header = Vec::new();
    write_array_header(&mut header, width);
    // What a body can expand to is bounded by `total` only: the output grows as it is
    // written (up to `total`, never past it), from a guess at what this body holds.
    let guess = total.min(body.len().saturating_mul(64).saturating_add(1 << 16));
    let mut out = Out { buf: Vec::with_capacity(guess), limit: total };
    let mut starts = Vec::with_capacity(count.min(guess / (width + 1)));
    let mut lengths = Vec::with_capacity(count.min(guess / (width + 1)));
    for _ in 0..count {
        let start = out.buf.len();
        out.put(&header)?;
        for c in &mut columns {
            c.write(&mut out)?;
        }
        starts.push(start as i64);
        lengths.push((out.buf.len() - start) as i64);
    }
    if out.buf.len() != total {
        return Err(damaged(format!("{} bytes of records, the body says {total}", out.buf.len())));
    }
    if !columns.iter().all(Col::done) {
        return Err(damaged("values left over after the last record"));
    }
    let taps = if tapped { columns.into_iter().map(Col::take_tap).collect() } else { Vec::new() };
    Ok(Decoded { heap: out.buf, starts, lengths, taps })
}

/// A byte cursor over the table of contents (and the body's head).
struct Toc<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Toc<'b> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8]> {
        let out = self.bytes.get(self.pos..self.pos.saturating_add(n)).ok_or_else(|| damaged("the table of contents ends early"))?;
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn uv(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(damaged("a varint past 64 bits"))
    }

    fn sv(&mut self) -> Result<i64> {
        let u = self.uv()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A count of at most `limit`.
    fn count(&mut self, limit: usize) -> Result<usize> {
        let v = self.uv()?;
        if v > limit as u64 {
            return Err(damaged(format!("a count of {v} where {limit} at most fit")));
        }
        Ok(v as usize)
    }
}

struct Entry {
    raw: usize,
    at: usize,
    stored: usize,
    zstd: bool,
}

/// The body's streams, handed out in order, each checked against the size its node
/// needs before it is decompressed.
struct Streams<'b> {
    body: &'b [u8],
    entries: Vec<Entry>,
    next: usize,
    dctx: zstd::bulk::Decompressor<'static>,
}

impl<'b> Streams<'b> {
    fn take(&mut self, raw: usize) -> Result<Cow<'b, [u8]>> {
        let k = self.next;
        let e = self.entries.get(k).ok_or_else(|| damaged("fewer streams than the columns use"))?;
        self.next += 1;
        if e.raw != raw {
            return Err(damaged(format!("stream {k} holds {} bytes, its column needs {raw}", e.raw)));
        }
        let data = &self.body[e.at..e.at + e.stored];
        if !e.zstd {
            if e.stored != raw {
                return Err(damaged(format!("stream {k} is stored in {} bytes, not {raw}", e.stored)));
            }
            return Ok(Cow::Borrowed(data));
        }
        // Before the output is allocated: a frame that declares another size, or more
        // than zstd can expand its bytes to (a block of 128 KiB takes 4 bytes at least).
        if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(data) {
            if declared != raw as u64 {
                return Err(damaged(format!("stream {k}'s frame declares {declared} bytes, not {raw}")));
            }
        }
        if raw as u64 > (e.stored as u64).saturating_mul(ZSTD_RATIO) {
            return Err(damaged(format!("stream {k}: {raw} bytes cannot come out of {}", e.stored)));
        }
        let out = self.dctx.decompress(data, raw).map_err(|err| damaged(format!("stream {k}: zstd: {err}")))?;
        if out.len() != raw {
            return Err(damaged(format!("stream {k} decompresses to {} bytes, not {raw}", out.len())));
        }
        Ok(Cow::Owned(out))
    }
}

struct Ctx<'b> {
    toc: Toc<'b>,
    streams: Streams<'b>,
    /// The records' bytes: no count of values passes it (a value is a byte at least).
    total: usize,
}

/// Output that never passes `limit` bytes: checked before each write, and the buffer
/// grows by doubling up to `limit`, never past it.
struct Out {
    buf: Vec<u8>,
    limit: usize,
}

impl Out {
    #[inline(always)]
    fn room(&mut self, n: usize) -> Result<&mut Vec<u8>> {
        if n > self.buf.capacity() - self.buf.len() {
            self.grow(n)?;
        }
        Ok(&mut self.buf)
    }

    #[cold]
    fn grow(&mut self, n: usize) -> Result<()> {
        let len = self.buf.len();
        if n > self.limit - len {
            return Err(damaged(format!("records longer than the {} bytes declared", self.limit)));
        }
        let want = len.saturating_mul(2).max(len + n).max(4096).min(self.limit);
        self.buf.reserve_exact(want - len);
        Ok(())
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.room(bytes.len())?.extend_from_slice(bytes);
        Ok(())
    }
}

fn exhausted() -> Error {
    damaged("a column has fewer values than its records")
}

/// Ints decoded at a time.
const BATCH: usize = 256;

/// An `INT` node's ints, read in order, decoded a batch at a time.
struct IntCol<'b> {
    src: IntSrc<'b>,
    /// The next value to decode.
    i: usize,
    /// Decoded values, and the next to hand out.
    buf: Vec<i64>,
    k: usize,
    /// With delta: the last value decoded.
    prev: i64,
}

/// An `INT` node's planes and form.
struct IntSrc<'b> {
    data: Cow<'b, [u8]>,
    /// `u` values in the planes.
    len: usize,
    full: usize,
    r: u32,
    packed: bool,
    delta: bool,
    base: i64,
    first: i64,
    count: usize,
}

impl IntSrc<'_> {
    /// `u.len()` `u` values from plane position `pos` (inside the planes: the caller
    /// keeps `pos + u.len() <= len`).
    fn gather(&self, pos: usize, u: &mut [u64]) {
        let n = u.len();
        u.fill(0);
        let d = &self.data[..];
        for k in 0..self.full {
            let plane = &d[k * self.len + pos..k * self.len + pos + n];
            for (x, &b) in u.iter_mut().zip(plane) {
                *x |= (b as u64) << (8 * k);
            }
        }
        if self.r > 0 {
            let top = &d[self.full * self.len..];
            let shift = 8 * self.full;
            if self.packed {
                // r <= 7 bits: within two bytes
                let (r, mask) = (self.r as usize, (1u64 << self.r) - 1);
                for (t, x) in u.iter_mut().enumerate() {
                    let bit = (pos + t) * r;
                    let (byte, at) = (bit / 8, bit % 8);
                    let lo = top[byte] as u64;
                    let hi = if at + r > 8 { top[byte + 1] as u64 } else { 0 };
                    *x |= ((lo | hi << 8) >> at & mask) << shift;
                }
            } else {
                for (x, &b) in u.iter_mut().zip(&top[pos..pos + n]) {
                    *x |= (b as u64) << shift;
                }
            }
        }
    }

    /// Values `start..start + out.len()` (at most `BATCH`, inside `count`); with delta,
    /// `prev` is the value before `start` and becomes the last one.
    fn fill(&self, start: usize, prev: &mut i64, out: &mut [i64]) {
        let mut u = [0u64; BATCH];
        let n = out.len();
        if !self.delta {
            self.gather(start, &mut u[..n]);
            for (o, &x) in out.iter_mut().zip(&u[..n]) {
                *o = self.base.wrapping_add(x as i64);
            }
            return;
        }
        // Value 0 is `first`; value i > 0 adds the u at plane position i - 1.
        let (skip, pos) = if start == 0 { (1, 0) } else { (0, start - 1) };
        let m = n - skip;
        self.gather(pos, &mut u[..m]);
        let mut p = if skip == 1 { self.first } else { *prev };
        if skip == 1 {
            out[0] = p;
        }
        for (o, &x) in out[skip..].iter_mut().zip(&u[..m]) {
            p = p.wrapping_add(self.base).wrapping_add(x as i64);
            *o = p;
        }
        *prev = p;
    }
}

impl<'b> IntCol<'b> {
    fn parse(ctx: &mut Ctx<'b>, count: usize) -> Result<IntCol<'b>> {
        if ctx.toc.u8()? != INT {
            return Err(damaged("a node that must be INT is not"));
        }
        let flags = ctx.toc.u8()?;
        let bits = ctx.toc.u8()? as u32;
        let (delta, packed) = (flags & DELTA != 0, flags & PACKED != 0);
        if flags & !(DELTA | PACKED) != 0 || bits > 64 || (packed && bits.is_multiple_of(8)) || (delta && count == 0) {
            return Err(damaged(format!("an INT node with flags {flags} and {bits} bits")));
        }
        let base = ctx.toc.sv()?;
        let first = if delta { ctx.toc.sv()? } else { 0 };
        let len = if delta { count - 1 } else { count };
        let (full, r) = ((bits / 8) as usize, bits % 8);
        let top = match (r, packed) {
            (0, _) => Some(0),
            (_, false) => Some(len),
            (_, true) => packed_len(len, r),
        };
        let size = full.checked_mul(len).zip(top).and_then(|(a, b)| a.checked_add(b)).ok_or_else(|| damaged("a huge INT node"))?;
        let data = if bits > 0 { ctx.streams.take(size)? } else { Cow::Borrowed(&[][..]) };
        let src = IntSrc { data, len, full, r, packed, delta, base, first, count };
        Ok(IntCol { src, i: 0, buf: Vec::new(), k: 0, prev: first })
    }

    #[inline(always)]
    fn next(&mut self) -> Result<i64> {
        if self.k == self.buf.len() {
            self.refill()?;
        }
        let v = self.buf[self.k];
        self.k += 1;
        Ok(v)
    }

    #[inline(never)]
    fn refill(&mut self) -> Result<()> {
        let n = (self.src.count - self.i).min(BATCH);
        if n == 0 {
            return Err(exhausted());
        }
        self.buf.resize(n, 0);
        self.src.fill(self.i, &mut self.prev, &mut self.buf);
        self.i += n;
        self.k = 0;
        Ok(())
    }

    /// The next int as a length or count: `0..=limit`.
    #[inline(always)]
    fn next_len(&mut self, limit: usize) -> Result<usize> {
        let v = self.next()?;
        if v < 0 || v as u64 > limit as u64 {
            return Err(damaged(format!("a length of {v} where {limit} bytes are left")));
        }
        Ok(v as usize)
    }

    /// The sum of all the ints, each a length (`>= 0`), when it is at most `limit`.
    fn sum(&self, limit: usize) -> Result<usize> {
        let (mut sum, mut prev) = (0u64, 0i64);
        let mut buf = [0i64; BATCH];
        for start in (0..self.src.count).step_by(BATCH) {
            let n = (self.src.count - start).min(BATCH);
            self.src.fill(start, &mut prev, &mut buf[..n]);
            for &v in &buf[..n] {
                if v < 0 {
                    return Err(damaged(format!("a negative length ({v})")));
                }
                sum += v as u64;
            }
            if sum > limit as u64 {
                return Err(damaged(format!("lengths past the {limit} bytes they can take")));
            }
        }
        Ok(sum as usize)
    }

    fn done(&self) -> bool {
        self.i == self.src.count && self.k == self.buf.len()
    }
}

/// A `FLOAT` node's values (bits), read in order.
struct FloatCol<'b> {
    planes: Cow<'b, [u8]>,
    i: usize,
    count: usize,
}

impl<'b> FloatCol<'b> {
    fn parse(ctx: &mut Ctx<'b>, count: usize) -> Result<FloatCol<'b>> {
        let size = count.checked_mul(8).ok_or_else(|| damaged("a huge FLOAT node"))?;
        Ok(FloatCol { planes: ctx.streams.take(size)?, i: 0, count })
    }

    #[inline(always)]
    fn next(&mut self) -> Result<u64> {
        let i = self.i;
        if i >= self.count {
            return Err(exhausted());
        }
        self.i += 1;
        let mut bytes = [0u8; 8];
        for (k, b) in bytes.iter_mut().enumerate() {
            *b = self.planes[k * self.count + i];
        }
        Ok(u64::from_le_bytes(bytes))
    }
}

struct DecimalCol<'b> {
    e: usize,
    ints: IntCol<'b>,
    positions: Option<IntCol<'b>>,
    exceptions: Option<FloatCol<'b>>,
    next_exception: Option<u64>,
    i: usize,
    count: usize,
}

impl DecimalCol<'_> {
    #[inline]
    fn next(&mut self) -> Result<u64> {
        let i = self.i;
        if i >= self.count {
            return Err(exhausted());
        }
        self.i += 1;
        let d = self.ints.next()?;
        if self.next_exception != Some(i as u64) {
            return Ok(((d as f64) / POW10[self.e]).to_bits());
        }
        let (Some(positions), Some(exceptions)) = (&mut self.positions, &mut self.exceptions) else {
            return Err(exhausted());
        };
        self.next_exception = if positions.done() { None } else { Some(positions.next()? as u64) };
        exceptions.next()
    }

    fn done(&self) -> bool {
        self.i == self.count
            && self.ints.done()
            && self.next_exception.is_none()
            && self.positions.as_ref().is_none_or(IntCol::done)
            && self.exceptions.as_ref().is_none_or(|x| x.i == x.count)
    }
}

/// How a bytes node's values are framed.
#[derive(Debug, Clone, Copy)]
enum Frame {
    Str,
    Bin,
    Ext(i8),
    Raw,
}

/// A node being read back, value by value.
enum Col<'b> {
    Nil { left: usize },
    Nulls { bits: Cow<'b, [u8]>, i: usize, count: usize, child: Box<Col<'b>> },
    Bool { bits: Cow<'b, [u8]>, i: usize, count: usize },
    Int(IntCol<'b>),
    Float(FloatCol<'b>),
    Decimal(Box<DecimalCol<'b>>),
    Bytes { frame: Frame, lengths: IntCol<'b>, bytes: Cow<'b, [u8]>, pos: usize },
    ExtInt { code: i8, size: usize, ints: IntCol<'b> },
    Dict { values: Vec<u8>, offsets: Vec<usize>, ids: IntCol<'b>, tap: Option<Vec<u32>> },
    List { lengths: IntCol<'b>, elements: Box<Col<'b>>, tap: Option<Vec<u32>> },
    Map { counts: IntCol<'b>, keys: Box<Col<'b>>, values: Box<Col<'b>> },
    Struct { header: Vec<u8>, keys: Vec<&'b [u8]>, fields: Vec<Col<'b>> },
}

/// A bytes node's next value.
#[inline(always)]
fn bytes_value(frame: Frame, lengths: &mut IntCol<'_>, bytes: &[u8], pos: &mut usize, out: &mut Out) -> Result<()> {
    let n = lengths.next_len(bytes.len() - *pos)?;
    let value = &bytes[*pos..*pos + n];
    *pos += n;
    let head = match frame {
        Frame::Str => str_header_len(n),
        Frame::Bin => bin_header_len(n),
        Frame::Ext(_) => ext_header_len(n),
        Frame::Raw => 0,
    };
    let buf = out.room(head + n)?;
    match frame {
        Frame::Str => write_str_header(buf, n),
        Frame::Bin => write_bin_header(buf, n),
        Frame::Ext(code) => write_ext_header(buf, code, n),
        Frame::Raw => {}
    }
    buf.extend_from_slice(value);
    Ok(())
}

/// A dictionary node's next value.
#[inline(always)]
fn dict_value(values: &[u8], offsets: &[usize], ids: &mut IntCol<'_>, out: &mut Out) -> Result<u32> {
    let k = offsets.len() - 1;
    let id = ids.next()?;
    if id < 0 || id as u64 >= k as u64 {
        return Err(damaged(format!("dictionary id {id} of {k} values")));
    }
    let id = id as usize;
    out.put(&values[offsets[id]..offsets[id + 1]])?;
    Ok(id as u32)
}

/// `count` bits and nothing after them (the last byte's padding is zero).
fn bitmap<'b>(ctx: &mut Ctx<'b>, count: usize) -> Result<Cow<'b, [u8]>> {
    let bits = ctx.streams.take(count.div_ceil(8))?;
    if !count.is_multiple_of(8) && bits.last().is_some_and(|&b| b >> (count % 8) != 0) {
        return Err(damaged("bits set past a bitmap's end"));
    }
    Ok(bits)
}

#[inline(always)]
fn bit(bits: &[u8], i: usize) -> bool {
    bits[i / 8] >> (i % 8) & 1 == 1
}

impl<'b> Col<'b> {
    /// The node at the table of contents' cursor, for `count` values.
    fn parse(ctx: &mut Ctx<'b>, count: usize, depth: usize) -> Result<Col<'b>> {
        if depth > MAX_TOC_DEPTH {
            return Err(damaged("columns nested too deep"));
        }
        let total = ctx.total;
        let tag = ctx.toc.u8()?;
        Ok(match tag {
            NIL => Col::Nil { left: count },
            NULLS => {
                let bits = bitmap(ctx, count)?;
                let present = bits.iter().map(|b| b.count_ones() as usize).sum();
                let child = Box::new(Col::parse(ctx, present, depth + 1)?);
                Col::Nulls { bits, i: 0, count, child }
            }
            BOOL => Col::Bool { bits: bitmap(ctx, count)?, i: 0, count },
            INT => {
                ctx.toc.pos -= 1;
                Col::Int(IntCol::parse(ctx, count)?)
            }
            FLOAT => Col::Float(FloatCol::parse(ctx, count)?),
            DECIMAL => {
                let e = ctx.toc.u8()? as usize;
                if e >= POW10.len() {
                    return Err(damaged(format!("a DECIMAL exponent of {e}")));
                }
                let x = ctx.toc.count(count)?;
                let ints = IntCol::parse(ctx, count)?;
                let (mut positions, mut exceptions, mut next_exception) = (None, None, None);
                if x > 0 {
                    let mut p = IntCol::parse(ctx, x)?;
                    next_exception = Some(p.next()? as u64);
                    positions = Some(p);
                    if ctx.toc.u8()? != FLOAT {
                        return Err(damaged("a DECIMAL node's exceptions are not FLOAT"));
                    }
                    exceptions = Some(FloatCol::parse(ctx, x)?);
                }
                Col::Decimal(Box::new(DecimalCol { e, ints, positions, exceptions, next_exception, i: 0, count }))
            }
            STR | BIN | EXT | RAW => {
                let frame = match tag {
                    STR => Frame::Str,
                    BIN => Frame::Bin,
                    EXT => Frame::Ext(ctx.toc.u8()? as i8),
                    _ => Frame::Raw,
                };
                let lengths = IntCol::parse(ctx, count)?;
                let size = lengths.sum(total)?;
                Col::Bytes { frame, lengths, bytes: ctx.streams.take(size)?, pos: 0 }
            }
            EXTINT => {
                let code = ctx.toc.u8()? as i8;
                let size = ctx.toc.u8()? as usize;
                if size != 4 && size != 8 {
                    return Err(damaged(format!("an EXTINT node of {size}-byte payloads")));
                }
                Col::ExtInt { code, size, ints: IntCol::parse(ctx, count)? }
            }
            DICT => {
                let k = ctx.toc.count(count)?;
                let mut child = Col::parse(ctx, k, depth + 1)?;
                let mut values = Out { buf: Vec::new(), limit: total };
                let mut offsets = vec![0];
                for _ in 0..k {
                    child.write(&mut values)?;
                    offsets.push(values.buf.len());
                }
                if !child.done() {
                    return Err(damaged("a dictionary's values left over"));
                }
                Col::Dict { values: values.buf, offsets, ids: IntCol::parse(ctx, count)?, tap: None }
            }
            LIST => {
                let lengths = IntCol::parse(ctx, count)?;
                let elements = lengths.sum(total)?;
                Col::List { lengths, elements: Box::new(Col::parse(ctx, elements, depth + 1)?), tap: None }
            }
            MAP => {
                let counts = IntCol::parse(ctx, count)?;
                let entries = counts.sum(total / 2)?;
                let keys = Box::new(Col::parse(ctx, entries, depth + 1)?);
                let values = Box::new(Col::parse(ctx, entries, depth + 1)?);
                Col::Map { counts, keys, values }
            }
            STRUCT => {
                let f = ctx.toc.count(ctx.toc.remaining())?;
                let mut keys = Vec::with_capacity(f);
                for _ in 0..f {
                    let len = ctx.toc.count(ctx.toc.remaining())?;
                    keys.push(ctx.toc.take(len)?);
                }
                let mut header = Vec::new();
                write_map_header(&mut header, f);
                let mut fields = Vec::with_capacity(f);
                for _ in 0..f {
                    fields.push(Col::parse(ctx, count, depth + 1)?);
                }
                Col::Struct { header, keys, fields }
            }
            _ => return Err(damaged(format!("unknown node tag {tag}"))),
        })
    }

    /// Writes the next `n` values (a list's elements): one loop per kind of node rather
    /// than a dispatch per value, for the nodes lists hold most.
    fn write_n(&mut self, out: &mut Out, n: usize) -> Result<()> {
        match self {
            Col::Dict { values, offsets, ids, tap } => {
                for _ in 0..n {
                    let id = dict_value(values, offsets, ids, out)?;
                    if let Some(tap) = tap.as_mut() {
                        tap.push(id);
                    }
                }
            }
            Col::Int(ints) => {
                for _ in 0..n {
                    let v = ints.next()?;
                    write_int(out.room(crate::msgpack::int_form(v).1)?, v);
                }
            }
            Col::Bytes { frame, lengths, bytes, pos } => {
                for _ in 0..n {
                    bytes_value(*frame, lengths, bytes, pos, out)?;
                }
            }
            _ => {
                for _ in 0..n {
                    self.write(out)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the next value's canonical bytes.
    fn write(&mut self, out: &mut Out) -> Result<()> {
        match self {
            Col::Nil { left } => {
                *left = left.checked_sub(1).ok_or_else(exhausted)?;
                out.room(1)?.push(MSGPACK_NIL);
            }
            Col::Nulls { bits, i, count, child } => {
                if *i >= *count {
                    return Err(exhausted());
                }
                let present = bit(bits, *i);
                *i += 1;
                if present {
                    child.write(out)?;
                } else {
                    out.room(1)?.push(MSGPACK_NIL);
                }
            }
            Col::Bool { bits, i, count } => {
                if *i >= *count {
                    return Err(exhausted());
                }
                let v = bit(bits, *i);
                *i += 1;
                write_bool(out.room(1)?, v);
            }
            Col::Int(ints) => {
                let v = ints.next()?;
                write_int(out.room(crate::msgpack::int_form(v).1)?, v);
            }
            Col::Float(floats) => {
                let v = floats.next()?;
                write_f64(out.room(9)?, f64::from_bits(v));
            }
            Col::Decimal(d) => {
                let v = d.next()?;
                write_f64(out.room(9)?, f64::from_bits(v));
            }
            Col::Bytes { frame, lengths, bytes, pos } => bytes_value(*frame, lengths, bytes, pos, out)?,
            Col::ExtInt { code, size, ints } => {
                let v = ints.next()?;
                let buf = out.room(2 + *size)?;
                write_ext_header(buf, *code, *size);
                if *size == 4 {
                    let v = i32::try_from(v).map_err(|_| damaged(format!("{v} in a 4-byte EXTINT node")))?;
                    buf.extend_from_slice(&v.to_be_bytes());
                } else {
                    buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            Col::Dict { values, offsets, ids, tap } => {
                let id = dict_value(values, offsets, ids, out)?;
                if let Some(tap) = tap {
                    tap.push(id);
                }
            }
            Col::List { lengths, elements, tap } => {
                let n = lengths.next_len(out.limit - out.buf.len())?;
                if let Some(tap) = tap {
                    tap.push(n as u32);
                }
                write_array_header(out.room(container_header_len(n))?, n);
                elements.write_n(out, n)?;
            }
            Col::Map { counts, keys, values } => {
                let n = counts.next_len(out.limit - out.buf.len())?;
                write_map_header(out.room(container_header_len(n))?, n);
                for _ in 0..n {
                    keys.write(out)?;
                    values.write(out)?;
                }
            }
            Col::Struct { header, keys, fields } => {
                out.put(header)?;
                for (key, field) in keys.iter().zip(fields.iter_mut()) {
                    out.put(key)?;
                    field.write(out)?;
                }
            }
        }
        Ok(())
    }

    /// Whether every value has been read.
    fn done(&self) -> bool {
        match self {
            Col::Nil { left } => *left == 0,
            Col::Nulls { i, count, child, .. } => i == count && child.done(),
            Col::Bool { i, count, .. } => i == count,
            Col::Int(ints) => ints.done(),
            Col::Float(f) => f.i == f.count,
            Col::Decimal(d) => d.done(),
            Col::Bytes { lengths, bytes, pos, .. } => lengths.done() && *pos == bytes.len(),
            Col::ExtInt { ints, .. } => ints.done(),
            Col::Dict { ids, .. } => ids.done(),
            Col::List { lengths, elements, .. } => lengths.done() && elements.done(),
            Col::Map { counts, keys, values } => counts.done() && keys.done() && values.done(),
            Col::Struct { fields, .. } => fields.iter().all(Col::done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::{write_bin, write_ext, write_nil, write_str, write_uint};
    use std::cell::Cell;

    // -- allocations, counted per thread while a test asks --------------------------------

    struct Counting;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn note(delta: isize) {
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let live = LIVE.with(|l| {
                    let v = (l.get() as isize + delta).max(0) as usize;
                    l.set(v);
                    v
                });
                PEAK.with(|p| p.set(p.get().max(live)));
            }
        });
    }

    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            note(layout.size() as isize);
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            note(-(layout.size() as isize));
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
            note(new as isize - layout.size() as isize);
            unsafe { std::alloc::System.realloc(ptr, layout, new) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// `f`'s result and the most bytes it held allocated at once (on this thread).
    fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LIVE.with(|l| l.set(0));
        PEAK.with(|p| p.set(0));
        COUNTING.with(|c| c.set(true));
        let out = f();
        COUNTING.with(|c| c.set(false));
        (out, PEAK.with(|p| p.get()))
    }

    // -- a small deterministic generator ----------------------------------------------

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, per_mille: u64) -> bool {
            self.below(1000) < per_mille
        }
        fn pick<'s, T>(&mut self, items: &'s [T]) -> &'s T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    const WORDS: [&str; 12] = ["alpha", "beta", "gamma", "délta", "ε", "日本語", "", "x", "en-US",
        "a somewhat longer string that needs a str8 header", "emoji 🎬", "zeta"];

    fn word(rng: &mut Rng) -> &'static str {
        WORDS[rng.below(WORDS.len() as u64) as usize]
    }

    /// How one generated column's values look.
    #[derive(Debug, Clone, Copy)]
    enum Profile {
        Key,
        WideInts,
        SmallInts,
        BigInts,
        Decimals,
        Floats,
        Bools,
        Vocabulary,
        Unique,
        Bins,
        Timestamps,
        Dates,
        DecimalExts,
        IntLists,
        StrLists,
        NestedLists,
        Structs,
        Maps,
        Anything,
        Noncanonical,
        Nils,
        Constant,
    }

    const PROFILES: [Profile; 22] = [Profile::Key, Profile::WideInts, Profile::SmallInts, Profile::BigInts,
        Profile::Decimals, Profile::Floats, Profile::Bools, Profile::Vocabulary, Profile::Unique, Profile::Bins,
        Profile::Timestamps, Profile::Dates, Profile::DecimalExts, Profile::IntLists, Profile::StrLists,
        Profile::NestedLists, Profile::Structs, Profile::Maps, Profile::Anything, Profile::Noncanonical,
        Profile::Nils, Profile::Constant];

    /// A random msgpack value (canonical), `depth` levels of containers at most.
    fn any(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        match rng.below(if depth == 0 { 9 } else { 11 }) {
            0 => write_nil(out),
            1 => write_bool(out, rng.chance(500)),
            2 => write_int(out, rng.next() as i64 >> rng.below(64)),
            3 => write_uint(out, rng.next() | 1 << 63),
            4 => write_f64(out, f64::from_bits(rng.next())),
            5 => write_str(out, word(rng)),
            6 => write_bin(out, &rng.next().to_le_bytes()[..rng.below(9) as usize]),
            7 => {
                let n = *rng.pick(&[0usize, 1, 2, 3, 4, 5, 8, 16, 17, 300]);
                write_ext(out, rng.below(10) as i8 - 2, &vec![7u8; n]);
            }
            8 => out.extend_from_slice(&[0xca, 0x3f, 0x80, 0, 0]), // float32 1.0
            9 => {
                let n = rng.below(4) as usize;
                write_array_header(out, n);
                for _ in 0..n {
                    any(rng, out, depth - 1);
                }
            }
            _ => {
                let n = rng.below(4) as usize;
                write_map_header(out, n);
                for _ in 0..n {
                    any(rng, out, depth - 1);
                    any(rng, out, depth - 1);
                }
            }
        }
    }

    fn value(rng: &mut Rng, out: &mut Vec<u8>, profile: Profile, i: usize, nils: u64) {
        if rng.chance(nils) {
            return write_nil(out);
        }
        match profile {
            Profile::Key => write_int(out, 10 * i as i64 + rng.below(10) as i64 - 5000),
            Profile::WideInts => write_int(out, rng.next() as i64),
            Profile::SmallInts => write_int(out, rng.below(200) as i64 - 50),
            Profile::BigInts => write_int(out, *rng.pick(&[i64::MIN, i64::MAX, -1, 0, 1 << 40, -(1 << 33)])),
            Profile::Decimals => {
                let x = *rng.pick(&[0.0, -0.0, f64::NAN, f64::INFINITY, 1e300, 0.1]);
                let v = if rng.chance(50) { x } else { (rng.below(100_000) as f64 - 3000.0) / 1000.0 };
                write_f64(out, v)
            }
            Profile::Floats => write_f64(out, f64::from_bits(rng.next() >> 2)),
            Profile::Bools => write_bool(out, rng.chance(300)),
            Profile::Vocabulary => write_str(out, word(rng)),
            Profile::Unique => write_str(out, &format!("name {} {}", i, "ü".repeat(i % 40))),
            Profile::Bins => write_bin(out, &(i as u64).to_be_bytes()[..(i % 9)]),
            Profile::Timestamps => write_ext(out, 4, &(1_700_000_000_000_000i64 + i as i64 * 1_000_003).to_be_bytes()),
            Profile::Dates => write_ext(out, 2, &(19_000 + rng.below(30) as i32).to_be_bytes()),
            Profile::DecimalExts => write_ext(out, 1, format!("{}.{:02}", rng.below(1000), rng.below(100)).as_bytes()),
            Profile::IntLists => {
                let n = rng.below(5) as usize;
                write_array_header(out, n);
                for _ in 0..n {
                    value(rng, out, Profile::SmallInts, i, nils / 2);
                }
            }
            Profile::StrLists => {
                let n = rng.below(30) as usize;
                write_array_header(out, n);
                for _ in 0..n {
                    write_str(out, word(rng));
                }
            }
            Profile::NestedLists => {
                let n = rng.below(3) as usize;
                write_array_header(out, n);
                for _ in 0..n {
                    value(rng, out, Profile::IntLists, i, nils);
                }
            }
            Profile::Structs => {
                write_map_header(out, 3);
                write_str(out, "title");
                write_str(out, &format!("title {i}"));
                write_str(out, "year");
                value(rng, out, Profile::SmallInts, i, nils);
                write_str(out, "cast");
                value(rng, out, Profile::StrLists, i, nils);
            }
            Profile::Maps => {
                let n = rng.below(4) as usize;
                write_map_header(out, n);
                for _ in 0..n {
                    write_str(out, word(rng));
                    write_int(out, rng.below(1000) as i64);
                }
            }
            Profile::Anything => any(rng, out, 3),
            Profile::Noncanonical => match rng.below(6) {
                0 => out.extend_from_slice(&[0xd0, 0x05]),          // int8 5
                1 => out.extend_from_slice(&[0xd9, 0x01, b'a']),    // str8 "a"
                2 => out.extend_from_slice(&[0xdc, 0x00, 0x01, 0x01]), // array16 [1]
                3 => out.extend_from_slice(&[0xc7, 0x04, 0x02, 0, 0, 0, 1]), // ext8 of 4 bytes
                _ => write_int(out, rng.below(100) as i64),
            },
            Profile::Nils => write_nil(out),
            Profile::Constant => write_str(out, "same"),
        }
    }

    /// `n` records of the `profiles` columns (canonical or not, as the profiles make
    /// them), back to back, with their starts and lengths.
    fn table(seed: u64, n: usize, profiles: &[Profile]) -> (Vec<u8>, Vec<i64>, Vec<i64>) {
        let mut rng = Rng(seed);
        let nils: Vec<u64> = profiles.iter().map(|_| *rng.pick(&[0, 0, 10, 300])).collect();
        let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let at = heap.len();
            write_array_header(&mut heap, profiles.len());
            for (c, &p) in profiles.iter().enumerate() {
                value(&mut rng, &mut heap, p, i, nils[c]);
            }
            starts.push(at as i64);
            lengths.push((heap.len() - at) as i64);
        }
        (heap, starts, lengths)
    }

    fn round_trip(heap: &[u8], starts: &[i64], lengths: &[i64], width: usize) -> Vec<u8> {
        let records = Records::new(vec![heap], None, starts, lengths).unwrap();
        let body = encode(&records, width, 3).unwrap();
        let total: usize = lengths.iter().map(|&l| l as usize).sum();
        let back = decode(&body, width, total).unwrap();
        assert_eq!(back.lengths, lengths);
        for i in 0..records.len() {
            let (a, l) = (back.starts[i] as usize, back.lengths[i] as usize);
            assert_eq!(&back.heap[a..a + l], records.get(i), "record {i}");
        }
        assert_eq!(back.heap.len(), total);
        if total > 0 {
            assert!(decode(&body, width, total - 1).is_err());
        }
        assert!(decode(&body, width + 1, total).is_err());
        body
    }

    #[test]
    fn every_profile_round_trips_alone_with_nils() {
        for (k, &p) in PROFILES.iter().enumerate() {
            for n in [0, 1, 2, 7, 300, 5000] {
                let (heap, starts, lengths) = table(k as u64 * 1000 + n as u64, n, &[p]);
                round_trip(&heap, &starts, &lengths, 1);
            }
        }
    }

    #[test]
    fn short_values_compare_as_slices() {
        let words: Vec<Vec<u8>> = (0..20usize).flat_map(|n| {
            let base: Vec<u8> = (0..n as u8).collect();
            let mut other = base.clone();
            let mut first = base.clone();
            if n > 0 {
                other[n - 1] ^= 1;
                first[0] ^= 0x80;
            }
            [base, other, first]
        }).collect();
        for a in &words {
            for b in &words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn every_pair_of_profiles_round_trips() {
        // (columns encoded again after a fault, in any order, among others that are not)
        for (a, &p) in PROFILES.iter().enumerate() {
            for (b, &q) in PROFILES.iter().enumerate() {
                let (heap, starts, lengths) = table((a * 100 + b) as u64, 50, &[p, q, p]);
                round_trip(&heap, &starts, &lengths, 3);
            }
        }
    }

    #[test]
    fn random_tables_round_trip() {
        let mut rng = Rng(42);
        for t in 0..60 {
            let width = 1 + rng.below(8) as usize;
            let profiles: Vec<Profile> = (0..width).map(|_| *rng.pick(&PROFILES)).collect();
            let n = *rng.pick(&[0, 1, 3, 50, 1000, 6000]);
            let (heap, starts, lengths) = table(t, n, &profiles);
            round_trip(&heap, &starts, &lengths, width);
        }
    }

    #[test]
    fn records_out_of_order_in_their_sources_round_trip() {
        // Records::get order, not heap order: the body follows the records given.
        let (heap, starts, lengths) = table(7, 500, &[Profile::Key, Profile::Structs, Profile::Maps]);
        let (rs, rl): (Vec<i64>, Vec<i64>) = starts.iter().zip(&lengths).rev().map(|(&s, &l)| (s, l)).unzip();
        round_trip(&heap, &rs, &rl, 3);
    }

    #[test]
    fn records_of_arbitrary_msgpack_values_round_trip() {
        // The fuzz target's second property (native/fuzz/fuzz_targets/columnar.rs) on
        // random bytes: whatever values they start with, canonical or not, come back.
        let mut rng = Rng(77);
        for t in 0..400 {
            let len = rng.below(600) as usize;
            // bytes biased to msgpack's type bytes, so that values get long
            let bytes: Vec<u8> = (0..len).map(|_| match rng.below(4) {
                0 => rng.below(0x20) as u8 | 0x90,
                1 => 0xc0 + rng.below(0x20) as u8,
                _ => rng.next() as u8,
            }).collect();
            let width = 1 + t % 5;
            let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
            let mut r = Reader::new(&bytes);
            'records: while r.remaining() > 0 {
                let start = heap.len();
                write_array_header(&mut heap, width);
                for _ in 0..width {
                    let at = r.pos();
                    if r.skip(MAX_DEPTH).is_err() {
                        heap.truncate(start);
                        break 'records;
                    }
                    heap.extend_from_slice(r.since(at));
                }
                starts.push(start as i64);
                lengths.push((heap.len() - start) as i64);
            }
            round_trip(&heap, &starts, &lengths, width);
        }
    }

    #[test]
    fn zero_columns_and_wide_records() {
        let heap = vec![0x90u8; 5];
        round_trip(&heap, &[0, 1, 2, 3, 4], &[1; 5], 0);
        let profiles: Vec<Profile> = (0..20).map(|c| PROFILES[c % PROFILES.len()]).collect();
        let (heap, starts, lengths) = table(9, 200, &profiles);
        round_trip(&heap, &starts, &lengths, 20);
    }

    fn node_tags(body: &[u8]) -> Vec<u8> {
        // the tags of the table of contents (a rough scan: for asserting what was chosen)
        let mut p = Toc { bytes: body, pos: 4 };
        for _ in 0..3 {
            p.uv().unwrap();
        }
        let len = p.uv().unwrap() as usize;
        p.take(len).unwrap().to_vec()
    }

    #[test]
    fn encodings_are_chosen_from_the_values() {
        let cases: [(Profile, u8); 9] = [(Profile::Key, INT), (Profile::Decimals, DECIMAL), (Profile::Floats, FLOAT),
            (Profile::Vocabulary, DICT), (Profile::Unique, STR), (Profile::Timestamps, EXTINT),
            (Profile::StrLists, LIST), (Profile::Structs, STRUCT), (Profile::Maps, MAP)];
        for (p, tag) in cases {
            let mut rng = Rng(1);
            let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..5000 {
                starts.push(heap.len() as i64);
                write_array_header(&mut heap, 1);
                value(&mut rng, &mut heap, p, i, 0);
                lengths.push(heap.len() as i64 - starts[i]);
            }
            let body = round_trip(&heap, &starts, &lengths, 1);
            assert_eq!(node_tags(&body)[0], tag, "{p:?}");
        }
        // a non-canonical value makes its column raw, and comes back as it was
        let (heap, starts, lengths) = table(3, 100, &[Profile::Noncanonical]);
        let body = round_trip(&heap, &starts, &lengths, 1);
        assert!(matches!(node_tags(&body)[..2], [RAW, _] | [DICT, _] | [NULLS, RAW] | [NULLS, DICT]));
        // every value nil: one NIL node, no stream
        let heap = [0x91u8, 0xc0].repeat(10);
        let starts: Vec<i64> = (0..10).map(|i| 2 * i).collect();
        let body = round_trip(&heap, &starts, &[2; 10], 1);
        assert_eq!(node_tags(&body), [NIL]);
    }

    #[test]
    fn records_that_are_not_arrays_of_the_width_are_refused() {
        let heap = [0x92u8, 0x01, 0x02, 0x91, 0x01, 0xdc, 0x00, 0x01, 0x01, 0x91, 0x01, 0x02];
        let enc = |starts: &[i64], lengths: &[i64], width| {
            encode(&Records::new(vec![&heap[..]], None, starts, lengths).unwrap(), width, 3)
        };
        assert!(enc(&[0], &[3], 2).is_ok());
        assert!(enc(&[0], &[3], 1).is_err()); // another width
        assert!(enc(&[5], &[4], 1).is_err()); // array16 header
        assert!(enc(&[9], &[3], 1).is_err()); // a byte after the field
        assert!(enc(&[0], &[2], 2).is_err()); // ends early
    }

    /// Bodies with many kinds of nodes, small enough to damage byte by byte.
    fn small_bodies() -> Vec<(Vec<u8>, usize, usize)> {
        let mut out = Vec::new();
        let sets: [&[Profile]; 4] = [
            &[Profile::Key, Profile::Decimals, Profile::Vocabulary, Profile::Bools, Profile::Unique],
            &[Profile::StrLists, Profile::Structs, Profile::Maps, Profile::Timestamps],
            &[Profile::Anything, Profile::NestedLists, Profile::Noncanonical, Profile::Floats],
            &[Profile::Dates, Profile::DecimalExts, Profile::Bins, Profile::Nils, Profile::Constant],
        ];
        for (k, profiles) in sets.iter().enumerate() {
            let (heap, starts, lengths) = table(100 + k as u64, 40, profiles);
            let records = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
            let body = encode(&records, profiles.len(), 3).unwrap();
            out.push((body, profiles.len(), heap.len()));
        }
        out
    }

    #[test]
    fn every_truncation_is_refused() {
        for (body, width, total) in small_bodies() {
            assert!(decode(&body, width, total).is_ok());
            for cut in 0..body.len() {
                assert!(decode(&body[..cut], width, total).is_err(), "cut at {cut} of {}", body.len());
            }
        }
    }

    #[test]
    fn damaged_bytes_never_panic_nor_pass_the_bound() {
        let mut rng = Rng(5);
        for (body, width, total) in small_bodies() {
            for at in 0..body.len() {
                for flip in [0x01u8, 0x80, 0xff, rng.next() as u8 | 1] {
                    let mut bad = body.clone();
                    bad[at] ^= flip;
                    if let Ok(d) = decode(&bad, width, total) {
                        assert!(d.heap.len() <= total);
                        assert_eq!(d.lengths.iter().sum::<i64>() as usize, d.heap.len());
                    }
                }
            }
        }
    }

    #[test]
    fn huge_claims_are_refused_before_anything_is_allocated() {
        let (heap, starts, lengths) = table(11, 1000, &[Profile::Key, Profile::StrLists]);
        let records = Records::new(vec![&heap[..]], None, &starts, &lengths).unwrap();
        let body = encode(&records, 2, 3).unwrap();
        let (ok, used) = peak(|| decode(&body, 2, heap.len()).map(|d| d.heap.len()));
        assert_eq!(ok.unwrap(), heap.len());
        assert!(used < 4 * heap.len() + (1 << 20), "{used} bytes allocated for {} of records", heap.len());

        let head = |total: u64, count: u64, raw: u64, stored: u64| {
            let mut b = MAGIC.to_vec();
            put_uv(&mut b, total);
            put_uv(&mut b, count);
            put_uv(&mut b, 1);
            b.extend_from_slice(&[5, STR, INT, 0, 0, 0]); // STR, lengths all 0
            put_uv(&mut b, 1);
            put_uv(&mut b, raw);
            put_uv(&mut b, stored << 1 | 1);
            b.extend(std::iter::repeat_n(0u8, stored as usize));
            b
        };
        // (body, the caller's bound)
        let cases = [
            (head(u64::MAX, 1, 0, 0), 1 << 41),        // more bytes than the caller takes
            (head(1 << 40, 1 << 20, 0, 0), 1 << 30),   // the same
            (head(1 << 20, 1 << 40, 0, 0), 1 << 30),   // more records than bytes
            (head(1000, 10, 1 << 50, 4), 1000),        // a stream far larger than the records
            (head(1000, 10, 100, 1 << 10), 1000),      // stored bytes past the body
            (head(1000, 10, 17_100, 4), 1000),         // over the streams' bound
            (head(1 << 30, 10, 1 << 30, 4), 1 << 30),  // more than zstd makes of 4 bytes
        ];
        for (body, max_bytes) in &cases {
            let (r, used) = peak(|| decode(body, 1, *max_bytes));
            assert!(r.is_err());
            assert!(used < 64 << 10, "{used} bytes allocated for a refused body");
        }
        // A body may expand to the caller's bound (a constant column takes no stream), but
        // its output grows as it is written: a claim it does not keep costs little.
        let mut lying = MAGIC.to_vec();
        for v in [1 << 30, 10, 1, 1] {
            put_uv(&mut lying, v);
        }
        lying.extend_from_slice(&[NIL, 0]); // 10 records of [nil]: 20 bytes, not 2**30
        let (r, used) = peak(|| decode(&lying, 1, 1 << 30));
        assert!(r.unwrap_err().message().contains("20 bytes of records, the body says 1073741824"));
        assert!(used < 256 << 10, "{used}");
        // a stream whose size the node does not need is refused before decompressing
        let (r, used) = peak(|| decode(&head(1000, 10, 9000, 4), 1, 1000));
        assert!(r.unwrap_err().message().contains("needs 0"));
        assert!(used < 64 << 10, "{used}");
    }

    /// The process's CPU time (user and system, every thread), from /proc/self/stat.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0 // utime, stime (fields 14, 15), at 100 ticks a second
    }

    // -- measurement: `cargo test --release -p feedkit-core columnar -- --ignored --nocapture`

    /// Encodes and decodes the tables dumped at $COLUMNAR_TABLES (`<name>.data`: records
    /// back to back, `<name>.offsets`: n + 1 little-endian int64), and prints sizes and
    /// speeds; per column too with COLUMNAR_COLUMNS=1.
    #[test]
    #[ignore]
    fn measure_dumped_tables() {
        let dir = std::env::var("COLUMNAR_TABLES").unwrap_or_else(|_| "/tmp/colbench".into());
        let level: i32 = std::env::var("COLUMNAR_LEVEL").ok().and_then(|l| l.parse().ok()).unwrap_or(3);
        let only = std::env::var("COLUMNAR_ONLY").ok();
        for name in ["five", "muse", "nested"] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let Ok(data) = std::fs::read(format!("{dir}/{name}.data")) else { continue };
            let offsets: Vec<i64> = std::fs::read(format!("{dir}/{name}.offsets")).unwrap()
                .chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
            let n = offsets.len() - 1;
            let starts = &offsets[..n];
            let lengths: Vec<i64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
            let records = Records::new(vec![&data[..]], None, starts, &lengths).unwrap();
            let width = match data[0] {
                b @ 0x90..=0x9f => (b & 0x0f) as usize,
                _ => panic!("wide"),
            };
            // best of COLUMNAR_REPEAT runs (1 by default)
            let repeat: usize = std::env::var("COLUMNAR_REPEAT").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
            let (mut enc, mut dec, mut body) = (f64::MAX, f64::MAX, Vec::new());
            let (mut enc_cpu, mut dec_cpu) = (f64::MAX, f64::MAX);
            for _ in 0..repeat {
                let (t, c) = (std::time::Instant::now(), cpu_seconds());
                body = encode(&records, width, level).unwrap();
                enc = enc.min(t.elapsed().as_secs_f64());
                enc_cpu = enc_cpu.min(cpu_seconds() - c);
            }
            let decodes: usize = std::env::var("COLUMNAR_DECODES").ok().and_then(|r| r.parse().ok()).unwrap_or(repeat);
            for _ in 0..decodes {
                let (t, c) = (std::time::Instant::now(), cpu_seconds());
                let back = decode(&body, width, data.len()).unwrap();
                dec = dec.min(t.elapsed().as_secs_f64());
                dec_cpu = dec_cpu.min(cpu_seconds() - c);
                assert_eq!(back.heap, data);
            }
            let mb = data.len() as f64 / 1e6;
            println!("{name}: {n} records, {:.2} MB canonical -> body {} B = {:.3} B/record; encode {:.0} ms ({:.0} MB/s; {:.0} ms of CPU), decode {:.0} ms ({:.0} MB/s; {:.0} ms of CPU)",
                     mb, body.len(), body.len() as f64 / n as f64, enc * 1e3, mb / enc, enc_cpu * 1e3, dec * 1e3, mb / dec, dec_cpu * 1e3);
            if std::env::var("COLUMNAR_COLUMNS").is_ok() {
                for c in 0..width {
                    let (mut heap, mut s, mut l) = (Vec::new(), Vec::new(), Vec::new());
                    for i in 0..n {
                        let mut r = Reader::new(records.get(i));
                        r.token().unwrap();
                        for _ in 0..c {
                            r.skip(MAX_DEPTH).unwrap();
                        }
                        let at = r.pos();
                        r.skip(MAX_DEPTH).unwrap();
                        s.push(heap.len() as i64);
                        heap.push(0x91);
                        heap.extend_from_slice(r.since(at));
                        l.push(heap.len() as i64 - s[i]);
                    }
                    let one = Records::new(vec![&heap[..]], None, &s, &l).unwrap();
                    let body = encode(&one, 1, level).unwrap();
                    println!("  column {c}: {:.3} B/record, nodes {:?}", body.len() as f64 / n as f64,
                             &node_tags(&body)[..node_tags(&body).len().min(24)]);
                }
            }
        }
    }
}
