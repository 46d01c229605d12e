//! The columnar body codec over arbitrary bytes.
//!
//! Input: a mode byte (its low nibble: the width), then the rest. Mode bit 7 clear: the
//! rest is a body; `decode` never panics, and what it returns is within its bound.
//! Bit 7 set: the rest's msgpack values, `width` to a record, are records (canonical or
//! not); `encode` takes them and `decode` gives them back byte for byte.
#![no_main]

use feedkit_core::columnar::{decode, encode};
use feedkit_core::msgpack::{write_array_header, Reader};
use feedkit_core::records::Records;
use feedkit_core::verify::MAX_DEPTH;
use libfuzzer_sys::fuzz_target;

/// The bound a body is decoded under.
const MAX_BYTES: usize = 1 << 22;
const MAX_RECORDS: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let width = (mode & 0x0f) as usize;
    if mode & 0x80 == 0 {
        if let Ok(back) = decode(rest, width, MAX_BYTES) {
            assert!(back.heap.len() <= MAX_BYTES);
            assert_eq!(back.starts.len(), back.lengths.len());
            assert_eq!(back.lengths.iter().sum::<i64>() as usize, back.heap.len());
            assert!(back.records().is_ok());
        }
        return;
    }
    let (mut heap, mut starts, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    let mut r = Reader::new(rest);
    'records: while starts.len() < MAX_RECORDS && (r.remaining() > 0 || (width == 0 && starts.len() < rest.len())) {
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
    let records = Records::new(vec![&heap[..]], None, &starts, &lengths).expect("records inside their heap");
    let body = encode(&records, width, 1).expect("records of msgpack values encode");
    let back = decode(&body, width, heap.len()).expect("an encoded body decodes");
    assert_eq!(back.heap, heap);
    assert_eq!(back.lengths, lengths);
});
