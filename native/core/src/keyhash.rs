//! Key hashing fixed by the format (docs/FORMAT.md, section 5).

use xxhash_rust::xxh3::xxh3_64;

/// One part of a composite key.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    Int(i64),
    /// A non-negative int past `i64::MAX` (msgpack packs it as uint64).
    UInt(u64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// xxh3-64 of raw bytes: str keys (their UTF-8) and bytes keys.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// xxh3-64 of the msgpack array of the parts, the bytes `msgpack.packb(tuple(parts))`
/// writes. `buf` is scratch space, reused between keys.
pub fn hash_composite(parts: &[Part<'_>], buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    crate::msgpack::write_array_header(buf, parts.len());
    for part in parts {
        match *part {
            Part::Int(v) => crate::msgpack::write_int(buf, v),
            Part::UInt(v) => crate::msgpack::write_uint(buf, v),
            Part::Str(s) => crate::msgpack::write_str(buf, s),
            Part::Bytes(b) => crate::msgpack::write_bin(buf, b),
        }
    }
    xxh3_64(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_hash_their_msgpack_array() {
        let mut buf = Vec::new();
        // msgpack.packb((7, "ab")) == b"\x92\x07\xa2ab"
        let h = hash_composite(&[Part::Int(7), Part::Str("ab")], &mut buf);
        assert_eq!(buf, b"\x92\x07\xa2ab");
        assert_eq!(h, xxh3_64(b"\x92\x07\xa2ab"));
        hash_composite(&[Part::Int(-1), Part::UInt(u64::MAX), Part::Bytes(b"x")], &mut buf);
        assert_eq!(buf, b"\x93\xff\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xc4\x01x");
    }
}
