//! The msgpack subset of the record codec (docs/FORMAT.md, section 6): a pull reader
//! over untrusted bytes and the canonical writers.
//!
//! Written here rather than taken from a crate (rmp) because the reader must hand out
//! borrowed slices and lengths without allocating, reject every malformed byte with an
//! error rather than a panic, and match msgpack-python's canonical output byte for
//! byte; the subset is small (the format's 30-odd type bytes).

use crate::error::{Error, Result};

/// One msgpack item: a scalar, or the header of an array, map or ext.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
    Ext(i8, &'a [u8]),
}

/// Reads tokens from `bytes`, never past its end.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Bytes read so far.
    #[inline(always)]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes read since position `at` (a [`Reader::pos`] taken earlier): the whole
    /// encoding of the values read in between.
    #[inline(always)]
    pub fn since(&self, at: usize) -> &'a [u8] {
        &self.bytes[at.min(self.pos)..self.pos]
    }

    /// The next `n` raw bytes (not a token).
    #[inline(always)]
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n)
    }

    /// The next byte without reading it.
    #[inline(always)]
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The next token, which must be an unsigned integer.
    #[inline(always)]
    pub fn uint(&mut self) -> Result<u64> {
        match self.token()? {
            Token::Int(v) if v >= 0 => Ok(v as u64),
            Token::UInt(v) => Ok(v),
            _ => Err(Error::damaged("a coded field is not an unsigned integer")),
        }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.wrapping_add(n)).ok_or_else(short)?;
        self.pos += n;
        Ok(out)
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.pos).ok_or_else(short)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let out: [u8; N] = self
            .bytes
            .get(self.pos..self.pos.wrapping_add(N))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(short)?;
        self.pos += N;
        Ok(out)
    }

    #[inline(always)]
    fn len(&mut self, width: usize) -> Result<usize> {
        Ok(match width {
            1 => self.byte()? as usize,
            2 => u16::from_be_bytes(self.be()?) as usize,
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// A container of `n` items of `per` bytes at least: refused when the bytes left
    /// cannot hold it, so a hostile length cannot make a caller reserve more than the
    /// input's size.
    #[inline(always)]
    fn items(&self, n: usize, per: usize) -> Result<usize> {
        if n.saturating_mul(per) > self.remaining() {
            return Err(short());
        }
        Ok(n)
    }

    /// The next token.
    #[inline(always)]
    pub fn token(&mut self) -> Result<Token<'a>> {
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => Token::Int(b as i64),
            0xa0..=0xbf => Token::Str(self.take((b & 0x1f) as usize)?),
            0x90..=0x9f => Token::Array(self.items((b & 0x0f) as usize, 1)?),
            0x80..=0x8f => Token::Map(self.items((b & 0x0f) as usize, 2)?),
            0xc0 => Token::Nil,
            0xc2 => Token::Bool(false),
            0xc3 => Token::Bool(true),
            0xcb => Token::F64(f64::from_be_bytes(self.be()?)),
            0xe0..=0xff => Token::Int(b as i8 as i64),
            _ => self.rare(b)?,
        })
    }

    /// The type bytes records hold less often (kept out of `token`, which is inlined).
    #[inline(never)]
    fn rare(&mut self, b: u8) -> Result<Token<'a>> {
        Ok(match b {
            0xc4..=0xc6 => {
                let n = self.len(1 << (b - 0xc4))?;
                Token::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (b - 0xc7))?;
                let code = self.byte()? as i8;
                Token::Ext(code, self.take(n)?)
            }
            0xca => Token::F32(f32::from_be_bytes(self.be()?)),
            0xcc => Token::Int(self.byte()? as i64),
            0xcd => Token::Int(u16::from_be_bytes(self.be()?) as i64),
            0xce => Token::Int(u32::from_be_bytes(self.be()?) as i64),
            0xcf => {
                let v = u64::from_be_bytes(self.be()?);
                i64::try_from(v).map(Token::Int).unwrap_or(Token::UInt(v))
            }
            0xd0 => Token::Int(self.byte()? as i8 as i64),
            0xd1 => Token::Int(i16::from_be_bytes(self.be()?) as i64),
            0xd2 => Token::Int(i32::from_be_bytes(self.be()?) as i64),
            0xd3 => Token::Int(i64::from_be_bytes(self.be()?)),
            0xd4..=0xd8 => {
                let code = self.byte()? as i8;
                Token::Ext(code, self.take(1 << (b - 0xd4))?)
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (b - 0xd9))?;
                Token::Str(self.take(n)?)
            }
            0xdc | 0xdd => {
                let n = self.len(if b == 0xdc { 2 } else { 4 })?;
                Token::Array(self.items(n, 1)?)
            }
            0xde | 0xdf => {
                let n = self.len(if b == 0xde { 2 } else { 4 })?;
                Token::Map(self.items(n, 2)?)
            }
            _ => return Err(Error::damaged(format!("msgpack byte {b:#04x} is never used"))),
        })
    }

    // -- values in their canonical form only (FORMAT.md, 6): each returns None when the
    // next value is not of its kind or not in the form msgpack-python writes (the reader
    // is then left anywhere inside that value).

    /// The next value, when it is an int in its canonical form.
    #[inline(always)]
    pub fn canonical_int(&mut self) -> Result<Option<i64>> {
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => Some(b as i64),
            0xe0..=0xff => Some(b as i8 as i64),
            0xcc => {
                let v = self.byte()?;
                (v > 0x7f).then_some(v as i64)
            }
            0xcd => {
                let v = u16::from_be_bytes(self.be()?);
                (v > 0xff).then_some(v as i64)
            }
            0xce => {
                let v = u32::from_be_bytes(self.be()?);
                (v > 0xffff).then_some(v as i64)
            }
            0xcf => {
                let v = u64::from_be_bytes(self.be()?);
                (v > 0xffff_ffff && v <= i64::MAX as u64).then_some(v as i64)
            }
            0xd0 => {
                let v = self.byte()? as i8;
                (v < -32).then_some(v as i64)
            }
            0xd1 => {
                let v = i16::from_be_bytes(self.be()?);
                (v < i8::MIN as i16).then_some(v as i64)
            }
            0xd2 => {
                let v = i32::from_be_bytes(self.be()?);
                (v < i16::MIN as i32).then_some(v as i64)
            }
            0xd3 => {
                let v = i64::from_be_bytes(self.be()?);
                (v < i32::MIN as i64).then_some(v)
            }
            _ => None,
        })
    }

    /// The next value's bytes, when it is a str with its canonical header.
    #[inline(always)]
    pub fn canonical_str(&mut self) -> Result<Option<&'a [u8]>> {
        let b = self.byte()?;
        let n = match b {
            0xa0..=0xbf => (b & 0x1f) as usize,
            0xd9 => self.byte()? as usize,
            0xda => u16::from_be_bytes(self.be()?) as usize,
            0xdb => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        };
        if b >= 0xd9 && str_header_len(n) != 1 + (1 << (b - 0xd9)) {
            return Ok(None);
        }
        self.take(n).map(Some)
    }

    /// The next value's bytes, when it is a bin with its canonical header.
    #[inline(always)]
    pub fn canonical_bin(&mut self) -> Result<Option<&'a [u8]>> {
        let b = self.byte()?;
        let n = match b {
            0xc4 => self.byte()? as usize,
            0xc5 => u16::from_be_bytes(self.be()?) as usize,
            0xc6 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        };
        if bin_header_len(n) != 1 + (1 << (b - 0xc4)) {
            return Ok(None);
        }
        self.take(n).map(Some)
    }

    /// The next value's item count, when it is an array (`map`: a map) with its
    /// canonical header.
    #[inline(always)]
    pub fn canonical_container(&mut self, map: bool) -> Result<Option<usize>> {
        let b = self.byte()?;
        let (fix, form16) = if map { (0x80, 0xde) } else { (0x90, 0xdc) };
        let n = match b {
            _ if b & 0xf0 == fix => (b & 0x0f) as usize,
            _ if b == form16 => u16::from_be_bytes(self.be()?) as usize,
            _ if b == form16 + 1 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        };
        if b & 0xf0 != fix && container_header_len(n) != if b == form16 { 3 } else { 5 } {
            return Ok(None);
        }
        Ok(Some(self.items(n, if map { 2 } else { 1 })?))
    }

    /// Skips one whole value (containers included), at most `depth` levels deep.
    pub fn skip(&mut self, depth: usize) -> Result<()> {
        let mut pending: usize = 1;
        let mut stack: Vec<usize> = Vec::new();
        loop {
            while pending == 0 {
                match stack.pop() {
                    Some(p) => pending = p,
                    None => return Ok(()),
                }
            }
            pending -= 1;
            let items = match self.token()? {
                Token::Array(n) => n,
                Token::Map(n) => n * 2,
                _ => continue,
            };
            if items > 0 {
                if stack.len() >= depth {
                    return Err(Error::damaged("msgpack value nested too deep"));
                }
                stack.push(pending);
                pending = items;
            }
        }
    }
}

fn short() -> Error {
    Error::damaged("msgpack data ends early")
}

/// A container header: the fix form (`fix | n`) below 16 items, else the 16- or 32-bit
/// length form.
fn write_container(out: &mut Vec<u8>, n: usize, [fix, form16, form32]: [u8; 3]) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(form16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(form32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn write_array_header(out: &mut Vec<u8>, n: usize) {
    write_container(out, n, [0x90, 0xdc, 0xdd]);
}

/// An int in msgpack-python's canonical form: unsigned forms for `>= 0`.
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as u8);
    } else if v >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn write_sized(out: &mut Vec<u8>, n: usize, forms: [u8; 3]) {
    if n <= u8::MAX as usize {
        out.extend_from_slice(&[forms[0], n as u8]);
    } else if n <= u16::MAX as usize {
        out.push(forms[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(forms[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_bytes(out, s.as_bytes());
}

pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    write_bin_header(out, b.len());
    out.extend_from_slice(b);
}

/// A bin header for `n` bytes (bin8, bin16, bin32), without the bytes.
pub fn write_bin_header(out: &mut Vec<u8>, n: usize) {
    write_sized(out, n, [0xc4, 0xc5, 0xc6]);
}

pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

/// A float as msgpack-python writes every Python float: float64 (`CB`), bits kept.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

pub fn write_map_header(out: &mut Vec<u8>, n: usize) {
    write_container(out, n, [0x80, 0xde, 0xdf]);
}

/// A str header for `n` bytes of UTF-8 (fixstr, str8, str16, str32), without the bytes.
pub fn write_str_header(out: &mut Vec<u8>, n: usize) {
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else {
        write_sized(out, n, [0xd9, 0xda, 0xdb]);
    }
}

/// A str from bytes the caller holds to be UTF-8 (Arrow string data, copied as is).
pub fn write_str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    write_str_header(out, s.len());
    out.extend_from_slice(s);
}

/// The header of an ext value whose payload is `n` bytes: fixext1/2/4/8/16 when `n` is
/// one of those sizes, else ext8/16/32, then the type code. The payload follows.
pub fn write_ext_header(out: &mut Vec<u8>, code: i8, n: usize) {
    match n {
        1 => out.push(0xd4),
        2 => out.push(0xd5),
        4 => out.push(0xd6),
        8 => out.push(0xd7),
        16 => out.push(0xd8),
        _ => write_sized(out, n, [0xc7, 0xc8, 0xc9]),
    }
    out.push(code as u8);
}

pub fn write_ext(out: &mut Vec<u8>, code: i8, payload: &[u8]) {
    write_ext_header(out, code, payload.len());
    out.extend_from_slice(payload);
}

// -- the canonical forms' sizes: a value read back is canonical when its encoding has the
// canonical size (for a given value and kind, msgpack's forms of one size are unique
// except for ints, whose first byte is compared too).

/// The first byte and the length of `v`'s canonical encoding ([`write_int`]).
#[inline(always)]
pub fn int_form(v: i64) -> (u8, usize) {
    if v >= 0 {
        match v {
            0..=0x7f => (v as u8, 1),
            0x80..=0xff => (0xcc, 2),
            0x100..=0xffff => (0xcd, 3),
            0x1_0000..=0xffff_ffff => (0xce, 5),
            _ => (0xcf, 9),
        }
    } else if v >= -32 {
        (v as u8, 1)
    } else if v >= i8::MIN as i64 {
        (0xd0, 2)
    } else if v >= i16::MIN as i64 {
        (0xd1, 3)
    } else if v >= i32::MIN as i64 {
        (0xd2, 5)
    } else {
        (0xd3, 9)
    }
}

/// Whether `encoded` (which reads as the int `v`) is `v`'s canonical encoding.
#[inline(always)]
pub fn int_is_canonical(encoded: &[u8], v: i64) -> bool {
    let (first, len) = int_form(v);
    encoded.len() == len && encoded.first() == Some(&first)
}

/// Bytes of the canonical header of a str of `n` bytes ([`write_str_header`]).
#[inline(always)]
pub fn str_header_len(n: usize) -> usize {
    match n {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Bytes of the canonical header of a bin of `n` bytes ([`write_bin_header`]).
#[inline(always)]
pub fn bin_header_len(n: usize) -> usize {
    match n {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Bytes of the canonical header of an array or a map of `n` items.
#[inline(always)]
pub fn container_header_len(n: usize) -> usize {
    match n {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// Bytes of the canonical header of an ext of `n` payload bytes ([`write_ext_header`]),
/// its type code included.
#[inline(always)]
pub fn ext_header_len(n: usize) -> usize {
    match n {
        1 | 2 | 4 | 8 | 16 => 2,
        0..=0xff => 3,
        0x100..=0xffff => 4,
        _ => 6,
    }
}

/// How many bytes the header of the str or bin value starting with `first` takes (its
/// length field included), or None if `first` starts neither.
pub fn str_or_bin_header_len(first: u8) -> Option<usize> {
    match first {
        0xa0..=0xbf => Some(1),
        0xd9 | 0xc4 => Some(2),
        0xda | 0xc5 => Some(3),
        0xdb | 0xc6 => Some(5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        write_int(&mut out, v);
        out
    }

    #[test]
    fn ints_take_msgpack_pythons_forms() {
        assert_eq!(ints(0), [0x00]);
        assert_eq!(ints(127), [0x7f]);
        assert_eq!(ints(128), [0xcc, 0x80]);
        assert_eq!(ints(-1), [0xff]);
        assert_eq!(ints(-32), [0xe0]);
        assert_eq!(ints(-33), [0xd0, 0xdf]);
        assert_eq!(ints(-129), [0xd1, 0xff, 0x7f]);
        assert_eq!(ints(1 << 40), [0xcf, 0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(ints(i64::MIN)[0], 0xd3);
    }

    #[test]
    fn canonical_sizes_are_the_writers() {
        let mut ints: Vec<i64> = vec![i64::MIN, i64::MAX, 0, -1];
        for b in 0..63 {
            for d in [-1i64, 0, 1] {
                ints.push((1i64 << b) + d);
                ints.push(-(1i64 << b) + d);
            }
        }
        for v in ints {
            let out = written(|o| write_int(o, v));
            assert_eq!(int_form(v), (out[0], out.len()), "{v}");
            assert!(int_is_canonical(&out, v));
        }
        // 300 as int16: the canonical uint16's size, another first byte
        assert!(!int_is_canonical(&[0xd1, 0x01, 0x2c], 300));
        for n in [0usize, 1, 2, 3, 4, 5, 8, 15, 16, 17, 31, 32, 255, 256, 65535, 65536] {
            assert_eq!(str_header_len(n), written(|o| write_str_header(o, n)).len(), "str {n}");
            assert_eq!(bin_header_len(n), written(|o| write_bin_header(o, n)).len(), "bin {n}");
            assert_eq!(container_header_len(n), written(|o| write_array_header(o, n)).len(), "array {n}");
            assert_eq!(container_header_len(n), written(|o| write_map_header(o, n)).len(), "map {n}");
            assert_eq!(ext_header_len(n), written(|o| write_ext_header(o, 7, n)).len(), "ext {n}");
        }
        let mut r = Reader::new(&[0x92, 0x01, 0xa1, b'x']);
        r.token().unwrap();
        let at = r.pos();
        r.skip(2).unwrap();
        r.skip(2).unwrap();
        assert_eq!(r.since(at), [0x01, 0xa1, b'x']);
    }

    #[test]
    fn canonical_readers_take_exactly_the_canonical_forms() {
        let mut values: Vec<i64> = vec![i64::MIN, i64::MAX, 0, -1, 127, 128, -32, -33];
        for b in 0..63 {
            for d in [-1i64, 0, 1] {
                values.push((1i64 << b) + d);
                values.push(-(1i64 << b) + d);
            }
        }
        for &v in &values {
            // every form that reads as v, canonical or not
            let mut forms: Vec<Vec<u8>> = vec![written(|o| write_int(o, v))];
            for (tag, width) in [(0xccu8, 1usize), (0xcd, 2), (0xce, 4), (0xcf, 8), (0xd0, 1), (0xd1, 2), (0xd2, 4), (0xd3, 8)] {
                let signed = tag >= 0xd0;
                let fits = if signed { width == 8 || (v >> (8 * width - 1)) == 0 || (v >> (8 * width - 1)) == -1 }
                           else { v >= 0 && (width == 8 || (v as u64) >> (8 * width) == 0) };
                if fits {
                    let mut f = vec![tag];
                    f.extend_from_slice(&v.to_be_bytes()[8 - width..]);
                    forms.push(f);
                }
            }
            for f in forms {
                let canonical = int_is_canonical(&f, v);
                assert_eq!(Reader::new(&f).token().unwrap(), Token::Int(v), "{f:02x?}");
                assert_eq!(Reader::new(&f).canonical_int().unwrap(), canonical.then_some(v), "{f:02x?}");
            }
        }
        assert_eq!(Reader::new(&[0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0]).canonical_int().unwrap(), None); // past int64
        assert_eq!(Reader::new(&[0xa1, b'x']).canonical_int().unwrap(), None);
        for n in [0usize, 31, 32, 255, 256, 65535, 65536] {
            let s = vec![b'a'; n];
            let canon = written(|o| write_str_bytes(o, &s));
            assert_eq!(Reader::new(&canon).canonical_str().unwrap(), Some(&s[..]));
            for (tag, width) in [(0xd9u8, 1usize), (0xda, 2), (0xdb, 4)] {
                if width < 4 && n >> (8 * width) != 0 {
                    continue;
                }
                let mut f = vec![tag];
                f.extend_from_slice(&(n as u32).to_be_bytes()[4 - width..]);
                f.extend_from_slice(&s);
                let ok = f.len() == canon.len();
                assert_eq!(Reader::new(&f).canonical_str().unwrap(), ok.then_some(&s[..]), "str {n} as {tag:02x}");
            }
            let canon = written(|o| write_bin(o, &s));
            assert_eq!(Reader::new(&canon).canonical_bin().unwrap(), Some(&s[..]));
            for (tag, width) in [(0xc4u8, 1usize), (0xc5, 2), (0xc6, 4)] {
                if width < 4 && n >> (8 * width) != 0 {
                    continue;
                }
                let mut f = vec![tag];
                f.extend_from_slice(&(n as u32).to_be_bytes()[4 - width..]);
                f.extend_from_slice(&s);
                let ok = f.len() == canon.len();
                assert_eq!(Reader::new(&f).canonical_bin().unwrap(), ok.then_some(&s[..]), "bin {n} as {tag:02x}");
            }
            for map in [false, true] {
                let mut canon = Vec::new();
                if map { write_map_header(&mut canon, n) } else { write_array_header(&mut canon, n) }
                canon.extend(std::iter::repeat_n(0xc0u8, if map { 2 * n } else { n }));
                assert_eq!(Reader::new(&canon).canonical_container(map).unwrap(), Some(n));
                assert_eq!(Reader::new(&canon).canonical_container(!map).unwrap(), None);
                let mut long = vec![if map { 0xdf } else { 0xdd }];
                long.extend_from_slice(&(n as u32).to_be_bytes());
                long.extend_from_slice(&canon[container_header_len(n)..]);
                assert_eq!(Reader::new(&long).canonical_container(map).unwrap(), (n > 65535).then_some(n));
            }
        }
        assert!(Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).canonical_container(false).is_err());
    }

    #[test]
    fn written_values_read_back() {
        let mut out = Vec::new();
        write_array_header(&mut out, 4);
        write_int(&mut out, -70000);
        write_uint(&mut out, u64::MAX);
        write_str(&mut out, &"é".repeat(40));
        write_bin(&mut out, &[1, 2, 3]);
        let mut r = Reader::new(&out);
        assert_eq!(r.token().unwrap(), Token::Array(4));
        assert_eq!(r.token().unwrap(), Token::Int(-70000));
        assert_eq!(r.token().unwrap(), Token::UInt(u64::MAX));
        assert_eq!(r.token().unwrap(), Token::Str("é".repeat(40).as_bytes()));
        assert_eq!(r.token().unwrap(), Token::Bin(&[1, 2, 3]));
        assert_eq!(r.remaining(), 0);
        assert!(r.token().is_err());
    }

    #[test]
    fn hostile_lengths_are_refused_before_use() {
        assert!(Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).token().is_err());
        assert!(Reader::new(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0]).token().is_err());
        assert!(Reader::new(&[0xdb, 0xff, 0xff, 0xff, 0xff, 0]).token().is_err());
        assert!(Reader::new(&[0xc1]).token().is_err());
        assert!(Reader::new(&[0xcb, 1, 2]).token().is_err());
    }

    #[test]
    fn skip_passes_whole_values_and_bounds_depth() {
        let data = [0x92, 0x81, 0xa1, b'a', 0x91, 0x01, 0xc3, 0x05];
        let mut r = Reader::new(&data);
        r.skip(8).unwrap();
        assert_eq!(r.token().unwrap(), Token::Int(5));
        let deep = vec![0x91u8; 100];
        assert!(Reader::new(&deep).skip(1000).is_err()); // ends early
        let mut deep = vec![0x91u8; 100];
        deep.push(0xc0);
        assert!(Reader::new(&deep).skip(10).is_err());
        assert!(Reader::new(&deep).skip(200).is_ok());
    }

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn scalars_take_msgpack_pythons_forms() {
        assert_eq!(written(write_nil), [0xc0]);
        assert_eq!(written(|o| write_bool(o, true)), [0xc3]);
        assert_eq!(written(|o| write_bool(o, false)), [0xc2]);
        // msgpack.packb(1.5) and packb(-0.0): float64 always, the sign of zero kept
        assert_eq!(written(|o| write_f64(o, 1.5)), [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(written(|o| write_f64(o, -0.0)), [0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        let nan = f64::from_bits(0x7ff8_0000_0000_0001);
        assert_eq!(written(|o| write_f64(o, nan))[1..], 0x7ff8_0000_0000_0001u64.to_be_bytes());
        assert_eq!(written(|o| write_uint(o, u64::MAX))[0], 0xcf);
    }

    #[test]
    fn str_and_bin_headers_switch_at_msgpacks_bounds() {
        for (n, head) in [(0, vec![0xa0]), (31, vec![0xbf]), (32, vec![0xd9, 32]),
                          (255, vec![0xd9, 255]), (256, vec![0xda, 1, 0]),
                          (65535, vec![0xda, 255, 255]), (65536, vec![0xdb, 0, 1, 0, 0])] {
            let out = written(|o| write_str_bytes(o, &vec![b'x'; n]));
            assert_eq!(out[..head.len()], head[..], "str of {n}");
            assert_eq!(out.len(), head.len() + n);
            assert_eq!(str_or_bin_header_len(out[0]), Some(head.len()));
        }
        for (n, head) in [(0, vec![0xc4, 0]), (255, vec![0xc4, 255]), (256, vec![0xc5, 1, 0]),
                          (65536, vec![0xc6, 0, 1, 0, 0])] {
            let out = written(|o| write_bin(o, &vec![7; n]));
            assert_eq!(out[..head.len()], head[..], "bin of {n}");
            assert_eq!(str_or_bin_header_len(out[0]), Some(head.len()));
        }
        assert_eq!(str_or_bin_header_len(0xc0), None);
    }

    #[test]
    fn map_headers_switch_at_msgpacks_bounds() {
        assert_eq!(written(|o| write_map_header(o, 0)), [0x80]);
        assert_eq!(written(|o| write_map_header(o, 15)), [0x8f]);
        assert_eq!(written(|o| write_map_header(o, 16)), [0xde, 0, 16]);
        assert_eq!(written(|o| write_map_header(o, 65536)), [0xdf, 0, 1, 0, 0]);
        assert_eq!(written(|o| write_array_header(o, 65536)), [0xdd, 0, 1, 0, 0]);
    }

    #[test]
    fn ext_framing_is_fixext_for_fixed_sizes() {
        // msgpack.packb(ExtType(1, b"1.50")) == b"\xd6\x011.50"
        assert_eq!(written(|o| write_ext(o, 1, b"1.50")), b"\xd6\x011.50");
        assert_eq!(written(|o| write_ext(o, 1, b"5")), b"\xd4\x015");
        assert_eq!(written(|o| write_ext(o, 1, b"-5")), b"\xd5\x01-5");
        assert_eq!(written(|o| write_ext(o, 3, &[0; 8]))[..2], [0xd7, 3]);
        assert_eq!(written(|o| write_ext(o, 6, &[0; 16]))[..2], [0xd8, 6]);
        assert_eq!(written(|o| write_ext(o, 1, b"")), [0xc7, 0, 1]);
        assert_eq!(written(|o| write_ext(o, 5, &[0; 11]))[..3], [0xc7, 11, 5]);
        assert_eq!(written(|o| write_ext(o, 5, &[0; 300]))[..4], [0xc8, 1, 44, 5]);
        let mut r = Reader::new(b"\xd6\x011.50");
        assert_eq!(r.token().unwrap(), Token::Ext(1, b"1.50"));
    }
}
