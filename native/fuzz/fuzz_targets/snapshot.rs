//! Columnar snapshot and delta blobs (feedkit_core::snapshot) over arbitrary bytes:
//! `decode` and `decode_delta`, then plan the format-2 file of what decoded, with the
//! blob's dictionaries (as a consumer's rebuild does).
//!
//! Properties: nothing panics; what decodes holds exactly the raw size asked for, its
//! derived keys are one per record, and a delta's deleted keys ascend.
#![no_main]

use feedkit_core::compact::plan_compact;
use feedkit_core::snapshot::{decode, decode_delta, Expected, Key, Part};
use libfuzzer_sys::fuzz_target;

const KEY: Key<'static> = Key { fields: &[0], parts: &[Part::Int] };
const KINDS: [&str; 3] = ["int", "str", "list"];

fuzz_target!(|data: &[u8]| {
    let Some((&raw, blob)) = data.split_first() else { return };
    let raw_size = u64::from(raw) * 16;
    let expected = Expected { width: 3, key: KEY, index: &[1], raw_size, record_count: 0, state_digest: 0 };
    // the count and digest are rarely right: decode up to them, then plan what decoded
    for count in [0u64, 1, 2, 4, 8] {
        if let Ok(rebuilt) = decode(blob, &Expected { record_count: count, ..expected }) {
            assert_eq!(rebuilt.records.heap.len() as u64, raw_size);
            let records = rebuilt.records.records().expect("decoded records are in bounds");
            let hashes: Vec<&[u64]> = rebuilt.derived.index_hashes.iter().map(Vec::as_slice).collect();
            let _ = plan_compact(&rebuilt.derived.keys, true, &records, &hashes, &KINDS, &[0], &rebuilt.records.taps);
        }
    }
    if let Ok(d) = decode_delta(blob, 3, &KEY, &[1], raw_size, 64) {
        assert_eq!(d.upserts.heap.len() as u64, raw_size);
        assert_eq!(d.derived.keys.len(), d.upserts.starts.len());
        assert!(d.deleted.windows(2).all(|w| w[0] < w[1]));
    }
});
