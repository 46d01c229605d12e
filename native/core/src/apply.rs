//! The consumer's delta refresh in one pass (feedkit/loader.py, `Loader._apply`): a
//! delta blob and the state it applies to in, a verified overlay file out.
//!
//! The steps and checks are the Python path's (`decompress_file`, `StateFile.verify`
//! with `records`, the header against the manifest, `merge.apply_delta`, `write_state`,
//! `verify` of what was written), in the same order, so that both refuse a damaged blob
//! or state with the same message; what differs is where they run: here, with no
//! Python object in reach, so that the caller releases the GIL once for all of them.
//! The new file is written under a scratch name, read back and verified, and only then
//! renamed to its final name.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::blob::{decompress, BlobInfo, Failure};
use crate::error::{Error, Result};
use crate::header::{parse, render, Parsed};
use crate::layout::{IndexTable, TOMBSTONE};
use crate::merge::{delta_effect, posted_hashes, unshadowed, Layer};
use crate::records::Records;
use crate::snapshot::{decode_delta, delta_header, Key, Part, DELTA_MAGIC};
use crate::verify::verify;
use crate::write::{plan, write_file};

/// The state a delta applies to: `[overlay, base]` or `[base]`, overlay first, with the
/// state's record count and digest (its first file's header) and, for the overlay, its
/// indexes in `Shape::index_fields` order.
pub struct Current<'a> {
    pub layers: Vec<Layer<'a>>,
    pub overlay_indexes: Vec<IndexTable>,
    pub record_count: u64,
    pub state_digest: u64,
}

/// What the state's files have in common (the base's header): the slot kind, the
/// schema's width, the key (as JSON) and the indexed fields.
pub struct Shape {
    pub int_keys: bool,
    pub width: usize,
    pub key: Value,
    pub index_fields: Vec<String>,
}

/// What the manifest of the new version says.
pub struct Target {
    pub feed: String,
    pub version: u64,
    pub parent: u64,
    pub record_count: u64,
    pub state_digest: u64,
}

/// Where the files go: the blob (removed once read), a scratch name for the write, one
/// for the written file while it is verified, and the final name.
pub struct Paths<'a> {
    pub blob: &'a Path,
    pub tmp: &'a Path,
    pub part: &'a Path,
    pub target: &'a Path,
}

/// Why a refresh failed: damage (`IntegrityError`) or the cache folder (`OSError`).
#[derive(Debug)]
pub enum LoadError {
    Damaged(Error),
    Io(io::Error, std::path::PathBuf),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> LoadError {
        LoadError::Damaged(e)
    }
}

/// Decompresses and checks the delta blob at `paths.blob` (`info`), merges it into
/// `current` and writes the new overlay's file to `paths.target`, its header's
/// descriptive fields rendered from `fields` (name, JSON text). The blob file is
/// removed whatever happens; nothing is left under `tmp`, `part` or `target` on an error.
pub fn apply_delta_blob(
    info: &BlobInfo,
    current: &Current<'_>,
    shape: &Shape,
    target: &Target,
    fields: &[(String, String)],
    paths: &Paths<'_>,
) -> std::result::Result<(), LoadError> {
    let delta = match read_columnar(info, paths.blob) {
        Ok(Some(bytes)) => {
            let _ = fs::remove_file(paths.blob);
            columnar_overlay(&bytes, info, shape, current.record_count, paths)
        }
        Ok(None) => {
            let delta = read_blob(info, paths.blob);
            let _ = fs::remove_file(paths.blob);
            delta
        }
        Err(e) => {
            let _ = fs::remove_file(paths.blob);
            Err(e)
        }
    };
    let delta = delta?;
    let parsed = check_delta(&delta, shape, target)?;
    let result = merge_and_write(&delta, &parsed, current, shape, target, fields, paths);
    if result.is_err() {
        let _ = fs::remove_file(paths.part);
    }
    result
}

/// The blob's decompressed bytes, every check of `blobs.decompress_file` passed.
pub fn read_blob(info: &BlobInfo, path: &Path) -> std::result::Result<Vec<u8>, LoadError> {
    let io_err = |e: io::Error| LoadError::Io(e, path.to_path_buf());
    let file = fs::File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let mut out = Vec::new();
    match decompress(io::BufReader::with_capacity(1 << 20, file), size, info, &mut out, 0) {
        Ok(_) => Ok(out),
        Err(Failure::Damaged(e)) => Err(LoadError::Damaged(e)),
        Err(Failure::Read(e) | Failure::Write(e)) => Err(io_err(e)),
    }
}

/// The bytes of the blob at `path` when it is a columnar delta (FORMAT.md, 11.5: its
/// first bytes are `FEEDKITD`), its size (before it is read) and SHA-256 checked
/// against `info`; `None` when it is not one (a zstd frame: a format-1 delta).
pub fn read_columnar(info: &BlobInfo, path: &Path) -> std::result::Result<Option<Vec<u8>>, LoadError> {
    let io_err = |e: io::Error| LoadError::Io(e, path.to_path_buf());
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 8];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]).map_err(io_err)? {
            0 => break,
            n => got += n,
        }
    }
    if got < magic.len() || magic != DELTA_MAGIC {
        return Ok(None);
    }
    let key = &info.key;
    let size = file.metadata().map_err(io_err)?.len();
    if size != info.size {
        return Err(Error::damaged(format!("blob {key}: {size} bytes, the manifest says {}", info.size)).into());
    }
    let mut bytes = magic.to_vec();
    bytes.reserve_exact((size as usize).saturating_sub(magic.len()));
    file.take(size - magic.len() as u64).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 != info.size {
        return Err(Error::damaged(format!("blob {key}: {} bytes, the manifest says {}", bytes.len(), info.size)).into());
    }
    if Sha256::digest(&bytes)[..] != info.sha256 {
        return Err(Error::damaged(format!("blob {key}: SHA-256 mismatch (corrupt or replaced blob)")).into());
    }
    Ok(Some(bytes))
}

/// The format-1 overlay file a columnar delta blob (`bytes`, authenticated) stands
/// for: its upserts, and its deleted keys as tombstones, planned and written as the
/// producer of a format-1 delta would have (its header's descriptive fields are the
/// blob's), then read back. What follows ([`check_delta`], the merge) is then the same
/// for both kinds of delta. The file is written under `paths.tmp` and `paths.part`,
/// and removed once read. `max_deleted`: the state's record count.
///
/// Going through a file costs a write and a read of the delta's size (small beside the
/// merge, which writes the whole overlay) and keeps one parser and one set of checks.
pub fn columnar_overlay(bytes: &[u8], info: &BlobInfo, shape: &Shape, max_deleted: u64,
                        paths: &Paths<'_>) -> std::result::Result<Vec<u8>, LoadError> {
    let key = &info.key;
    let bad = |why: String| LoadError::Damaged(Error::damaged(format!("delta blob {key}: {why}")));
    let header: Value = serde_json::from_slice(delta_header(bytes)?)
        .map_err(|e| bad(format!("its header is not JSON: {e}")))?;
    let Value::Object(header) = header else { return Err(bad("its header is not a JSON object".into())) };
    let names: Vec<&str> = header.get("schema").and_then(Value::as_array)
        .and_then(|cols| cols.iter().map(|c| c.get("name").and_then(Value::as_str)).collect())
        .ok_or_else(|| bad("its header has no schema of named columns".into()))?;
    let position = |name: &str, what: &str| {
        names.iter().position(|n| *n == name).ok_or_else(|| bad(format!("no {what} column {name:?} in its schema")))
    };
    let columns = shape.key.get("columns").and_then(Value::as_array);
    let parts = shape.key.get("parts").and_then(Value::as_array);
    let (Some(columns), Some(parts)) = (columns, parts) else {
        return Err(bad(format!("the state's key {} has no columns and parts", shape.key)));
    };
    let fields = columns.iter().map(|c| position(c.as_str().unwrap_or(""), "key")).collect::<std::result::Result<Vec<_>, _>>()?;
    let parts = parts.iter().map(|p| Part::parse(p.as_str().unwrap_or(""))).collect::<Result<Vec<_>>>()?;
    let index = shape.index_fields.iter().map(|f| position(f, "indexed")).collect::<std::result::Result<Vec<_>, _>>()?;
    let k = Key { fields: &fields, parts: &parts };
    let delta = decode_delta(bytes, names.len(), &k, &index, info.raw_size, max_deleted)
        .map_err(|e| bad(e.message().to_string()))?;
    let (live, deleted) = (delta.derived.keys.len(), delta.deleted.len());
    let mut keys = delta.derived.keys;
    keys.extend_from_slice(&delta.deleted);
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("slot key {:016x} upserted or deleted twice", w[0])));
    }
    drop(sorted);
    let mut starts = delta.upserts.starts.clone();
    let mut lengths = delta.upserts.lengths.clone();
    starts.resize(live + deleted, 0);
    lengths.resize(live + deleted, 1);
    let mut source = vec![0u8; live];
    source.resize(live + deleted, 1);
    let tombstone = &source; // source 1 is the one tombstone byte
    let tomb_byte = [TOMBSTONE];
    let records = Records::new(vec![&delta.upserts.heap, &tomb_byte], Some(&source), &starts, &lengths)?;
    let hashes: Vec<Vec<u64>> = delta.derived.index_hashes.into_iter().map(|mut h| {
        h.resize(live + deleted, 0); // ignored: a tombstone is in no index
        h
    }).collect();
    let hashes: Vec<&[u64]> = hashes.iter().map(Vec::as_slice).collect();
    let p = plan(&keys, shape.int_keys, &records, Some(tombstone), &hashes)?;
    let described: Vec<(String, String)> = header.iter().map(|(n, v)| (n.clone(), v.to_string())).collect();
    let rendered = render(&described, &p, shape.int_keys, &shape.index_fields);
    write_file(&p, &keys, &records, &rendered, paths.tmp, paths.part)
        .map_err(|e| LoadError::Io(e, paths.tmp.to_path_buf()))?;
    let written = fs::read(paths.part).map_err(|e| LoadError::Io(e, paths.part.to_path_buf()));
    let _ = fs::remove_file(paths.part);
    written
}

/// Parses and verifies the delta's state file (records too: its bytes are untrusted)
/// and checks its header against the manifest and the state's shape.
pub fn check_delta(bytes: &[u8], shape: &Shape, target: &Target) -> Result<Parsed> {
    let mut parsed = parse(bytes, shape.int_keys)?;
    parsed.expected.records = true;
    verify(bytes, &parsed.table, &parsed.expected, None)?;
    parsed.expected.records = false;
    let mut wrong = Vec::new();
    let h = &parsed.header;
    if h.get("feed").and_then(Value::as_str) != Some(target.feed.as_str()) {
        wrong.push(format!("'feed': {}", h.get("feed").unwrap_or(&Value::Null)));
    }
    if parsed.version != target.version {
        wrong.push(format!("'version': {}", parsed.version));
    }
    if parsed.kind != "overlay" {
        wrong.push(format!("'kind': '{}'", parsed.kind));
    }
    if parsed.record_count != target.record_count {
        wrong.push(format!("'record_count': {}", parsed.record_count));
    }
    if parsed.int("base_version") != Some(target.parent as i128) {
        wrong.push(format!("'base_version': {}", h.get("base_version").unwrap_or(&Value::Null)));
    }
    // A delta of another key or schema is not this state's (a new schema comes as a
    // snapshot): its slot keys and records would not mean what the base's mean.
    if h.get("key") != Some(&shape.key) {
        wrong.push(format!("'key': {}", h.get("key").unwrap_or(&Value::Null)));
    }
    if parsed.expected.width != shape.width {
        wrong.push(format!("'schema': {} columns, the state has {}", parsed.expected.width, shape.width));
    }
    if let Some(missing) = shape.index_fields.iter().find(|f| parsed.index(f).is_none()) {
        wrong.push(format!("'indexes': no index on '{missing}'"));
    }
    if !wrong.is_empty() {
        return Err(Error::damaged(format!(
            "feed '{}': overlay blob of version {} does not match its manifest: {{{}}}",
            target.feed, target.version, wrong.join(", ")
        )));
    }
    Ok(parsed)
}

/// The columns of a new overlay's records (`merge._record_set` without dropping
/// tombstones): every entry of the delta, then the overlay's entries it does not shadow.
#[derive(Debug, Default)]
pub struct Merged {
    pub keys: Vec<u64>,
    pub starts: Vec<i64>,
    pub lengths: Vec<i64>,
    pub source: Vec<u8>,
    pub tombstone: Vec<u8>,
    pub hashes: Vec<Vec<u64>>,
}

impl Merged {
    fn take(&mut self, source: u8, layer: &Layer<'_>, slots: &[usize], indexes: &[&IndexTable]) -> Result<()> {
        for &j in slots {
            let t = layer.table;
            let key = t.slot_key(layer.bytes, j).ok_or_else(|| Error::damaged(format!("slot {j} outside the table")))?;
            let (start, end) = match (t.record_offset(layer.bytes, j), t.record_offset(layer.bytes, j + 1)) {
                (Some(a), Some(b)) if a >= t.heap_start as u64 && a < b && b <= t.heap_end as u64 => (a, b),
                _ => return Err(Error::damaged(format!("slot {j}'s record lies outside the heap"))),
            };
            self.keys.push(key);
            self.starts.push(start as i64);
            self.lengths.push((end - start) as i64);
            self.source.push(source);
            self.tombstone.push(u8::from(layer.bytes[start as usize] == TOMBSTONE));
        }
        for (column, index) in self.hashes.iter_mut().zip(indexes) {
            column.extend(posted_hashes(layer.bytes, layer.table.slot_count, index, slots)?);
        }
        Ok(())
    }
}

/// `merge.apply_delta`: the new state's count and digest recomputed from what the delta
/// changes and compared with the manifest's, then the new overlay's records.
pub fn merge(current: &Current<'_>, delta: &Layer<'_>, delta_indexes: &[&IndexTable], target: &Target) -> Result<Merged> {
    let effect = delta_effect(&current.layers, delta)?;
    let overlay = (current.layers.len() == 2).then(|| current.layers[0]);
    let kept = overlay.as_ref().map(|o| unshadowed(delta, o)).transpose()?;
    let (count, digest) = effect
        .apply(current.record_count, current.state_digest)
        .unwrap_or((u64::MAX, 0));
    if count != target.record_count || digest != target.state_digest {
        return Err(Error::damaged(format!(
            "gives {} records (digest {digest:016x}), the manifest says {} ({:016x})",
            count as i64, target.record_count, target.state_digest
        )));
    }
    let mut merged = Merged { hashes: vec![Vec::new(); delta_indexes.len()], ..Merged::default() };
    merged.take(0, delta, &delta.occupied()?, delta_indexes)?;
    if let (Some(o), Some(kept)) = (overlay, kept) {
        let theirs: Vec<&IndexTable> = current.overlay_indexes.iter().collect();
        merged.take(1, &o, &kept, &theirs)?;
    }
    Ok(merged)
}

fn merge_and_write(
    delta_bytes: &[u8],
    parsed: &Parsed,
    current: &Current<'_>,
    shape: &Shape,
    target: &Target,
    fields: &[(String, String)],
    paths: &Paths<'_>,
) -> std::result::Result<(), LoadError> {
    let delta = Layer { bytes: delta_bytes, table: &parsed.table, codings: None };
    let indexes: Vec<&IndexTable> = shape
        .index_fields
        .iter()
        .map(|f| parsed.index(f).expect("checked by check_delta"))
        .collect();
    let what = || format!("feed '{}': applying delta {}->{}", target.feed, target.parent, target.version);
    let merged = merge(current, &delta, &indexes, target)
        .map_err(|e| Error::damaged(format!("{} {}", what(), e.message())))?;
    let mut sources = vec![delta_bytes];
    if current.layers.len() == 2 {
        sources.push(current.layers[0].bytes);
    }
    let records = Records::new(sources, Some(&merged.source), &merged.starts, &merged.lengths)?;
    let hashes: Vec<&[u64]> = merged.hashes.iter().map(Vec::as_slice).collect();
    let p = plan(&merged.keys, shape.int_keys, &records, Some(&merged.tombstone), &hashes)?;
    let header = render(fields, &p, shape.int_keys, &shape.index_fields);
    write_file(&p, &merged.keys, &records, &header, paths.tmp, paths.part)
        .map_err(|e| LoadError::Io(e, paths.tmp.to_path_buf()))?;
    // What reaches the final name is what was verified: the written file, read back.
    let written = fs::read(paths.part).map_err(|e| LoadError::Io(e, paths.part.to_path_buf()))?;
    parse(&written, shape.int_keys)
        .and_then(|w| verify(&written, &w.table, &w.expected, None))
        .map_err(|e| Error::damaged(format!("{}: the overlay written: {}", what(), e.message())))?;
    fs::rename(paths.part, paths.target).map_err(|e| LoadError::Io(e, paths.target.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use sha2::{Digest, Sha256};
    use xxhash_rust::xxh3::xxh3_64;

    use super::*;
    use crate::msgpack::{write_array_header, write_int, write_str};
    use crate::probe::{probe, Found};
    use crate::verify::Expected;

    fn record(k: i64, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_array_header(&mut out, 2);
        write_int(&mut out, k);
        write_str(&mut out, name);
        out
    }

    fn digest(state: &BTreeMap<i64, String>) -> u64 {
        state.iter().fold(0u64, |t, (k, v)| t.wrapping_add(xxh3_64(&record(*k, v))))
    }

    fn fields(version: u64, base: Option<u64>, count: usize, digest: u64) -> Vec<(String, String)> {
        let mut f = vec![
            ("feed".to_string(), "\"t.apply\"".to_string()),
            ("key".to_string(), KEY.to_string()),
            ("schema".to_string(), "[{\"kind\":\"int\",\"name\":\"k\"},{\"kind\":\"str\",\"name\":\"v\"}]".to_string()),
            ("index_fields".to_string(), "[]".to_string()),
            ("use_list".to_string(), "true".to_string()),
            ("version".to_string(), version.to_string()),
            ("kind".to_string(), if base.is_some() { "\"overlay\"" } else { "\"base\"" }.to_string()),
            ("record_count".to_string(), count.to_string()),
            ("state_digest".to_string(), format!("\"{digest:016x}\"")),
        ];
        if let Some(b) = base {
            f.push(("base_version".to_string(), b.to_string()));
        }
        f
    }

    const KEY: &str = "{\"columns\":[\"k\"],\"parts\":[\"int\"]}";

    /// A state file of `rows` (None: a tombstone) written by the core writer.
    fn state_file(dir: &Path, name: &str, rows: &[(i64, Option<&str>)], f: &[(String, String)]) -> Vec<u8> {
        let recs: Vec<Vec<u8>> = rows.iter().map(|(k, v)| v.map_or(vec![TOMBSTONE], |v| record(*k, v))).collect();
        let heap: Vec<u8> = recs.concat();
        let lengths: Vec<i64> = recs.iter().map(|r| r.len() as i64).collect();
        let starts: Vec<i64> = lengths.iter().scan(0, |a, &l| { *a += l; Some(*a - l) }).collect();
        let keys: Vec<u64> = rows.iter().map(|(k, _)| *k as u64).collect();
        let tomb: Vec<u8> = rows.iter().map(|(_, v)| u8::from(v.is_none())).collect();
        let records = Records::new(vec![&heap], None, &starts, &lengths).unwrap();
        let p = plan(&keys, true, &records, Some(&tomb), &[]).unwrap();
        let header = render(f, &p, true, &[]);
        let target = dir.join(name);
        write_file(&p, &keys, &records, &header, &dir.join(format!(".{name}.tmp")), &target).unwrap();
        fs::read(target).unwrap()
    }

    #[derive(Clone)]
    struct Case {
        dir: PathBuf,
        base: Vec<u8>,
        state: BTreeMap<i64, String>,
        base_state: BTreeMap<i64, String>,
        blob: Vec<u8>,
        raw: usize,
    }

    fn case(tag: &str) -> Case {
        let dir = std::env::temp_dir().join(format!("feedkit-apply-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let base_state: BTreeMap<i64, String> = (0..60).map(|k| (k * 3, format!("v{k}"))).collect();
        let rows: Vec<(i64, Option<&str>)> = base_state.iter().map(|(k, v)| (*k, Some(v.as_str()))).collect();
        let base = state_file(&dir, "b.base", &rows, &fields(5, None, rows.len(), digest(&base_state)));
        // change every 4th key, delete every 5th, add new ones, delete one never there
        let mut state = base_state.clone();
        let mut delta: Vec<(i64, Option<String>)> = Vec::new();
        for (i, k) in base_state.keys().enumerate() {
            if i % 4 == 0 {
                delta.push((*k, Some(format!("w{k}"))));
            } else if i % 5 == 0 {
                delta.push((*k, None));
            }
        }
        delta.extend((1000..1010).map(|k| (k, Some(format!("n{k}")))));
        delta.push((7777, None));
        for (k, v) in &delta {
            match v {
                Some(v) => state.insert(*k, v.clone()),
                None => state.remove(k),
            };
        }
        let rows: Vec<(i64, Option<&str>)> = delta.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        let raw_delta = state_file(&dir, "d.overlay", &rows, &fields(9, Some(5), state.len(), digest(&state)));
        let blob = zstd::bulk::compress(&raw_delta, 3).unwrap();
        Case { dir, base, state, base_state, blob, raw: raw_delta.len() }
    }

    fn run(c: &Case, blob: &[u8], count: u64, state_digest: u64) -> std::result::Result<Vec<u8>, LoadError> {
        let blob_path = c.dir.join("blob.zst");
        fs::write(&blob_path, blob).unwrap();
        let sha: String = Sha256::digest(&c.blob).iter().map(|b| format!("{b:02x}")).collect();
        let info = BlobInfo::new("t.apply/deltas/x.delta.zst", c.blob.len() as u64, &sha, c.raw as u64).unwrap();
        let parsed = parse(&c.base, true).unwrap();
        let current = Current {
            layers: vec![Layer { bytes: &c.base, table: &parsed.table, codings: None }],
            overlay_indexes: vec![],
            record_count: c.base_state.len() as u64,
            state_digest: digest(&c.base_state),
        };
        let shape = Shape { int_keys: true, width: 2, key: serde_json::from_str(KEY).unwrap(), index_fields: vec![] };
        let target = Target { feed: "t.apply".into(), version: 9, parent: 5, record_count: count, state_digest };
        let out = c.dir.join("o.overlay");
        let paths = Paths { blob: &blob_path, tmp: &c.dir.join(".o.tmp"), part: &c.dir.join(".o.part"), target: &out };
        let f = fields(9, Some(5), count as usize, state_digest);
        let result = apply_delta_blob(&info, &current, &shape, &target, &f, &paths);
        assert!(!blob_path.exists() && !paths.tmp.exists() && !paths.part.exists());
        result.map(|()| fs::read(&out).unwrap())
    }

    fn damaged(r: std::result::Result<Vec<u8>, LoadError>) -> String {
        match r {
            Err(LoadError::Damaged(e)) => e.message().to_string(),
            other => panic!("not refused as damage: {:?}", other.map(|b| b.len())),
        }
    }

    #[test]
    fn a_delta_blob_becomes_a_verified_overlay_holding_the_new_state() {
        let c = case("good");
        let out = run(&c, &c.blob, c.state.len() as u64, digest(&c.state)).unwrap();
        let p = parse(&out, true).unwrap();
        verify(&out, &p.table, &Expected { records: true, ..p.expected.clone() }, None).unwrap();
        assert_eq!((p.version, p.kind.as_str(), p.record_count), (9, "overlay", c.state.len() as u64));
        assert_eq!(p.state_digest(), Some(digest(&c.state)));
        // the base with the overlay over it is the new state, key by key
        let base = parse(&c.base, true).unwrap();
        for k in c.base_state.keys().chain(c.state.keys()).chain([&7777]) {
            let got = match probe(&out, &p.table, *k as u64).unwrap() {
                Found::Record { start, end, .. } => Some(out[start..end].to_vec()),
                Found::Deleted => None,
                Found::Miss => match probe(&c.base, &base.table, *k as u64).unwrap() {
                    Found::Record { start, end, .. } => Some(c.base[start..end].to_vec()),
                    _ => None,
                },
            };
            assert_eq!(got, c.state.get(k).map(|v| record(*k, v)), "key {k}");
        }
        // the header is the writer's: rendered again from the parsed numbers, the same bytes
        let text = &out[48..48 + crate::layout::Prefix::parse(&out).unwrap().header_length];
        let v: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(v["slots"]["hash"], Value::from(p.table.home.name()));
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn a_columnar_delta_gives_the_overlay_its_state_file_gives() {
        let c = case("columnar");
        let (count, state_digest) = (c.state.len() as u64, digest(&c.state));
        let want = run(&c, &c.blob, count, state_digest).unwrap();
        // the same delta as a columnar blob: the upserts, and the deleted keys the base holds
        let (mut heap, mut lengths, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
        for k in c.base_state.keys().chain(c.state.keys()).collect::<std::collections::BTreeSet<_>>() {
            match (c.base_state.get(k), c.state.get(k)) {
                (_, Some(v)) if c.base_state.get(k) != Some(v) => {
                    let r = record(*k, v);
                    lengths.push(r.len() as i64);
                    heap.extend_from_slice(&r);
                }
                (Some(_), None) => deleted.push(*k as u64),
                _ => {}
            }
        }
        let starts: Vec<i64> = lengths.iter().scan(0, |a, &l| { *a += l; Some(*a - l) }).collect();
        let records = Records::new(vec![&heap], None, &starts, &lengths).unwrap();
        let header: String = {
            let f = fields(9, Some(5), count as usize, state_digest);
            let body: Vec<String> = f.iter().map(|(n, v)| format!("\"{n}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        };
        let key = Key { fields: &[0], parts: &[Part::Int] };
        let blob = crate::snapshot::encode_delta(&records, &deleted, 2, &key, header.as_bytes(), 3).unwrap();
        let columnar = Case { blob: blob.clone(), raw: heap.len(), ..c.clone() };
        let got = run(&columnar, &blob, count, state_digest).unwrap();
        let (a, b) = (parse(&want, true).unwrap(), parse(&got, true).unwrap());
        assert_eq!((b.version, b.kind.as_str(), b.record_count), (9, "overlay", count));
        // both overlays, over the base, serve the new state (their tombstones differ: the
        // state file's delta also deletes a key the base never held)
        for k in c.base_state.keys().chain(c.state.keys()) {
            let live = |bytes: &[u8], t: &crate::layout::Table| match probe(bytes, t, *k as u64).unwrap() {
                Found::Record { start, end, .. } => Some(bytes[start..end].to_vec()),
                Found::Deleted => None,
                Found::Miss => c.base_state.get(k).map(|v| record(*k, v)),
            };
            assert_eq!(live(&got, &b.table), live(&want, &a.table), "key {k}");
            assert_eq!(live(&got, &b.table), c.state.get(k).map(|v| record(*k, v)), "key {k}");
        }
        // a blob deleting more keys than the state holds is refused
        let many: Vec<u64> = (0..61).map(|k| 5000 + k).collect();
        let blob = crate::snapshot::encode_delta(&records, &many, 2, &key, header.as_bytes(), 3).unwrap();
        let lying = Case { blob: blob.clone(), raw: heap.len(), ..c.clone() };
        assert!(damaged(run(&lying, &blob, count, state_digest)).contains("61 deleted keys, the state holds 60"));
        fs::remove_dir_all(&lying.dir).unwrap();
    }

    #[test]
    fn a_merge_that_is_not_the_manifests_state_writes_nothing() {
        let c = case("count");
        // a count the delta's own header contradicts, then a digest only the merge shows
        let msg = damaged(run(&c, &c.blob, c.state.len() as u64 + 1, digest(&c.state)));
        assert!(msg.contains("does not match its manifest: {'record_count': "), "{msg}");
        let msg = damaged(run(&c, &c.blob, c.state.len() as u64, digest(&c.state) ^ 1));
        assert!(msg.contains("applying delta 5->9 gives") && msg.contains("the manifest says"), "{msg}");
        assert!(!c.dir.join("o.overlay").exists());
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn damaged_blobs_are_refused_before_anything_is_merged() {
        let c = case("damage");
        let mut flipped = c.blob.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(damaged(run(&c, &flipped, c.state.len() as u64, digest(&c.state))).contains("SHA-256 mismatch"));
        let cut = &c.blob[..c.blob.len() - 1];
        assert!(damaged(run(&c, cut, c.state.len() as u64, digest(&c.state))).contains("the manifest says"));
        assert!(!c.dir.join("o.overlay").exists());
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn headers_parse_back_and_damaged_ones_are_refused() {
        let c = case("header");
        let p = parse(&c.base, true).unwrap();
        assert_eq!((p.version, p.kind.as_str(), p.expected.count), (5, "base", 60));
        assert!(parse(&c.base, false).is_err(), "int keys are not hashed keys");
        // on its own, the slot kind comes from the key: an int key here
        assert_eq!(crate::header::parse_own(&c.base).unwrap().expected.count, 60);
        // a header that lies about a number (and a checksum fixed behind it)
        let h = crate::layout::Prefix::parse(&c.base).unwrap().header_length;
        let text = String::from_utf8(c.base[48..48 + h].to_vec()).unwrap();
        for (from, to) in [("\"format\":1", "\"format\":2"), ("\"kind\":\"base\"", "\"kind\":\"bass\""),
                           ("\"offset\":0", "\"offset\":8"), ("\"hash\":\"low\"", "\"hash\":\"lox\"")] {
            assert!(text.contains(from), "{from} in {text}");
            let mut bytes = c.base.clone();
            bytes[48..48 + h].copy_from_slice(text.replacen(from, to, 1).as_bytes());
            assert!(parse(&bytes, true).is_err(), "{to} passed");
            assert!(crate::header::parse_own(&bytes).is_err(), "{to} passed");
        }
        // a key of another kind than the slots' hash, and a header without a key
        let mut bytes = c.base.clone();
        let hashed = text.replacen("\"parts\":[\"int\"]", "\"parts\":[\"str\"]", 1);
        assert_ne!(hashed, text);
        bytes[48..48 + h].copy_from_slice(hashed.as_bytes());
        assert!(crate::header::parse_own(&bytes).is_err(), "a str key over low-hashed slots passed");
        let keyless = text.replacen("\"key\":", "\"kez\":", 1);
        bytes[48..48 + h].copy_from_slice(keyless.as_bytes());
        assert!(crate::header::parse_own(&bytes).is_err(), "a header without a key passed");
        let mut s = String::new();
        crate::header::push_str(&mut s, "é\"\n😀");
        assert_eq!(s, "\"\\u00e9\\\"\\n\\ud83d\\ude00\"");
        fs::remove_dir_all(&c.dir).unwrap();
    }
}
