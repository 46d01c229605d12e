//! feedkit's state layer in plain Rust: the format-1 layout, the slot probe, key
//! hashing, the msgpack codec and the producer's encoder (Arrow arrays to records).
//! Nothing here knows Python; `feedkit-native` is the boundary. Every input is
//! untrusted bytes: functions return `Err` on damage and never index past a slice's
//! end.

pub mod apply;
pub mod codings;
pub mod columnar;
pub mod compact;
pub mod blob;
pub mod diff;
pub mod encode;
pub mod error;
pub mod header;
pub mod keyhash;
pub mod layout;
pub mod merge;
pub mod msgpack;
pub mod probe;
pub mod records;
pub mod snapshot;
pub mod state;
pub mod verify;
pub mod write;

pub use error::{Error, Result};
