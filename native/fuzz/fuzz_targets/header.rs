//! The header check over arbitrary files: `header::parse_own` never panics, and a file it
//! accepts is one whose slot table and index tables lie inside it (every slot and entry
//! readable), so that verify and the probes can start from its numbers.
#![no_main]

use feedkit_core::header::parse_own;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_own(data) else { return };
    let table = &parsed.table;
    assert!(table.slots(data).is_ok_and(|slots| slots.len() == table.slot_count));
    for (_, index) in &parsed.expected.indexes {
        assert!(index.entries(data).is_ok());
        assert!(index.postings(data).is_ok());
    }
});
