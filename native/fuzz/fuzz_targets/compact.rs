//! Format-2 files (compact bases) over arbitrary bytes: `header::parse_own`, then, for a
//! format-2 file, `verify` with records and its codings, every entry's probe and
//! `Codings::canonical` of every entry's record.
//!
//! Properties: nothing panics; on a file that verified, the key of every entry probes to
//! that entry and its record rebuilds (`canonical`) without an error, so that no lookup,
//! iteration or merge can fail on it.
//!
//! The checksum is taken as the prefix states it (verify is handed the file's own digest):
//! arbitrary bytes never match their xxh3-128, and the structural checks behind it are
//! what this target exercises.
#![no_main]

use feedkit_core::header::parse_own;
use feedkit_core::probe::{probe, record_at, Found};
use feedkit_core::verify::verify;
use libfuzzer_sys::fuzz_target;

/// Entries probed and rebuilt per input: enough for any file a fuzzer grows.
const ENTRIES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_own(data) else { return };
    let Some(codings) = parsed.codings.as_ref() else { return }; // format 1: the verify target's
    let table = &parsed.table;
    let mut expected = parsed.expected.clone();
    expected.records = true;
    let digest = data[32..48].to_vec(); // parse_own checked the 48-byte prefix
    let verified = verify(data, table, &expected, Some(&digest)).is_ok();
    let Ok(slots) = table.slots(data) else {
        panic!("parse_own accepted entries outside the file");
    };
    let keys: Vec<u64> = slots.map(|(k, _)| k).collect();
    let records = keys.len().saturating_sub(1); // the terminal entry holds none
    let mut buf = Vec::new();
    for (j, &key) in keys.iter().enumerate().take(ENTRIES) {
        let found = probe(data, table, key);
        if verified && j < records {
            assert!(matches!(found, Ok(Found::Record { slot, .. }) if slot == j), "entry {j}: {found:?}");
        }
        // what iteration and merges read: the entry itself, then its canonical record
        let Ok(Found::Record { start, end, .. }) = record_at(data, table, j) else {
            assert!(!verified || j >= records, "entry {j} of a verified file holds no record");
            continue;
        };
        buf.clear();
        let canonical = codings.canonical(data, key, &data[start..end], &mut buf);
        assert!(!verified || canonical.is_ok(), "entry {j} verified, not rebuilt: {canonical:?}");
    }
    // keys no entry holds, and the empty sentinel, miss (or fail, unverified) without a panic
    for key in [0u64, 1, u64::MAX, table.empty, keys.first().map_or(7, |k| k ^ 1)] {
        let found = probe(data, table, key);
        assert!(!verified || found.is_ok(), "a verified file failed a probe of {key}");
    }
});
