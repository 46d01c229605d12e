//! `verify` and the merge functions over arbitrary files and header numbers.
//!
//! Input: 25 little-endian u64 (the numbers a header would give, see `Params`), then the
//! file. Properties: nothing panics; a file that passes `verify` is one every probe,
//! `delta_effect` and `unshadowed` walk without an error (the terminal slot stops every
//! probe, every record lies in the heap).
#![no_main]

use feedkit_core::layout::{Home, IndexTable, Table};
use feedkit_core::merge::{delta_effect, unshadowed, Layer};
use feedkit_core::probe::probe;
use feedkit_core::verify::{verify, Expected};
use libfuzzer_sys::fuzz_target;

const WORDS: usize = 25;

fn word(data: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 * WORDS {
        return;
    }
    let (params, file) = data.split_at(8 * WORDS);
    let w = |i| word(params, i);
    let small = |i| (w(i) % (1 << 32)) as usize; // sizes and offsets of a fuzzable file
    let home = [Home::Low, Home::Fib, Home::Xxh3][(w(3) % 3) as usize];
    let Ok(table) = Table::new(
        file.len(), small(0), small(1), (w(2) % 64) as u32, home, w(4), small(5), small(6),
        w(7) & 1 == 1,
    ) else {
        return;
    };
    let mut indexes = Vec::new();
    for i in 0..(w(12) % 3) as usize {
        let b = 13 + 6 * i;
        if let Ok(index) =
            IndexTable::new(file.len(), small(b), small(b + 1), w(b + 2), small(b + 3), small(b + 4), small(b + 5))
        {
            indexes.push((format!("f{i}"), index));
        }
    }
    let expected = Expected {
        count: small(8),
        tombstones: small(9),
        width: (w(10) % 70_000) as usize,
        indexes,
        records: w(11) & 1 == 1,
        codings: None, // format 2: the compact target's
    };
    let body = w(11) & 2 == 2; // hash here, or take the prefix's digest as handed over
    let digest = file.get(32..48).map(<[u8]>::to_vec);
    let verified = verify(file, &table, &expected, if body { digest.as_deref() } else { None });
    let layer = Layer { bytes: file, table: &table, codings: None };
    let effect = delta_effect(&[layer], &layer);
    let kept = unshadowed(&layer, &layer);
    let keys: Vec<u64> = table.slots(file).map(|s| s.map(|(k, _)| k).collect()).unwrap_or_default();
    for &k in keys.iter().take(64) {
        let found = probe(file, &table, k);
        assert!(verified.is_err() || found.is_ok(), "a verified file failed a probe");
    }
    if verified.is_ok() {
        assert!(effect.is_ok(), "a verified file failed delta_effect: {effect:?}");
        assert!(kept.is_ok(), "a verified file failed unshadowed");
    }
});
