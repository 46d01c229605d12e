//! The msgpack reader over arbitrary bytes: `Reader::token` and `skip` never panic and
//! never read past the input; `verify::decodes` (the record check) accepts exactly what
//! a walk through the Reader's tokens accepts.
#![no_main]

use feedkit_core::msgpack::Reader;
use feedkit_core::verify::{decodes, decodes_by_tokens, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    while r.remaining() > 0 {
        let before = r.remaining();
        if r.token().is_err() {
            break;
        }
        assert!(r.remaining() < before);
    }
    let _ = Reader::new(data).skip(MAX_DEPTH + 1);
    let width = match data.first() {
        Some(b @ 0x90..=0x9f) => (b & 0x0f) as usize,
        _ if data.len() >= 3 => u16::from_be_bytes([data[1], data[2]]) as usize,
        _ => 1,
    };
    let mut stack = Vec::new();
    assert_eq!(decodes(data, width, &mut stack).is_ok(), decodes_by_tokens(data, width));
});
