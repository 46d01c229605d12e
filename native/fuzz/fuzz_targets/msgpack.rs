//! The msgpack reader over arbitrary bytes: `Reader::token` and `skip` never panic and
//! never read past the input; `verify::decodes` (the record check) accepts exactly what
//! a walk through the Reader's tokens accepts.
#![no_main]

use feedkit_core::msgpack::{Reader, Token};
use feedkit_core::verify::{decodes, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;

fn by_tokens(record: &[u8], width: usize) -> bool {
    let mut r = Reader::new(record);
    if !matches!(r.token(), Ok(Token::Array(n)) if n == width) {
        return false;
    }
    let (mut stack, mut pending) = (Vec::new(), width);
    loop {
        while pending == 0 {
            match stack.pop() {
                Some(p) => pending = p,
                None => return r.remaining() == 0,
            }
        }
        pending -= 1;
        let items = match r.token() {
            Err(_) => return false,
            Ok(Token::Array(n)) => n,
            Ok(Token::Map(n)) => 2 * n,
            Ok(Token::Str(s)) if std::str::from_utf8(s).is_err() => return false,
            Ok(_) => continue,
        };
        if stack.len() >= MAX_DEPTH {
            return false;
        }
        stack.push(pending);
        pending = items;
    }
}

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
    assert_eq!(decodes(data, width, &mut stack).is_ok(), by_tokens(data, width));
});
