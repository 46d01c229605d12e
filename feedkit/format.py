"""The state file: writer and reader side by side. ``docs/FORMAT.md`` describes it byte by byte.

A state file holds every record of a feed at one version (``kind="base"``), or the
merged upserts and tombstones that take a base to a later version
(``kind="overlay"``). A snapshot blob is a base file compressed with zstd; a delta
blob is an overlay file compressed with zstd. Consumers memory-map these files.

Layout (little-endian)::

    prefix   48 bytes: magic, format version, header length, body offset, file size,
             xxh3-128 of everything after the prefix
    header   UTF-8 JSON: feed, version, schema, key, section offsets (relative to body)
    body     (at a 64-byte aligned offset)
      slots  int64 pairs [slot key, absolute file offset of the slot's record]; records are
             stored in slot order, so a record ends where the next slot's record starts
             (empty slots have zero length). The last slot is a terminal empty slot.
      heap   one msgpack array per record; a tombstone is the single byte 0xC0
      index  per indexed field: a slot table [value hash, first posting] and the postings
             (uint32 record slots), grouped by value and sorted by slot
"""

from __future__ import annotations

import json
import keyword
import mmap
import os
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedkit import _native
from feedkit.blobs import BlobInfo
from feedkit.errors import IntegrityError
from feedkit.keys import (
    PART_KINDS,
    KeySpec,
    hash_homes,
    int_homes,
)
from feedkit.names import validate_feed

PREFIX_SIZE = 48  # the fixed prefix before the checksummed body (see _PREFIX)

__all__ = [
    "FORMATS",
    "FORMAT_COMPACT",
    "FORMAT_VERSION",
    "PREFIX_SIZE",
    "MAGIC",
    "TOMBSTONE",
    "RecordSet",
    "StateFile",
    "derived_header",
    "build_snapshot",
    "write_delta_blob",
    "write_snapshot_blob",
    "write_state",
]

MAGIC = b"FEEDKIT\x00"
FORMAT_VERSION = 1
FORMAT_COMPACT = 2  # compact bases (FORMAT.md, 10)
FORMATS = (FORMAT_VERSION, FORMAT_COMPACT)
TOMBSTONE = 0xC0
_PREFIX = struct.Struct("<8sIIQQ16s")
assert _PREFIX.size == PREFIX_SIZE
_GATHER_BYTES = 8 << 20  # bytes gathered per write while copying records


@dataclass
class RecordSet:
    """Records to write, in any order, with the bytes left where they are.

    ``sources`` are uint8 arrays (a producer's encoded batches, or the heaps of
    memory-mapped state files); record ``i`` is
    ``sources[source[i]][starts[i]:starts[i] + lengths[i]]``.
    """

    keys: np.ndarray  # int64 keys (int slot kind) or uint64 key hashes, unique
    starts: np.ndarray
    lengths: np.ndarray
    sources: list[np.ndarray]
    source: np.ndarray | None = None  # per record index into sources; None: all from sources[0]
    tombstone: np.ndarray | None = None  # per record bool; None: no tombstones
    index_hashes: dict[str, np.ndarray] = field(default_factory=dict)  # field -> uint64/record

    def __len__(self) -> int:
        return len(self.keys)


def byte_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + l)`` for every (s, l), vectorised."""
    total = int(lengths.sum())
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(total, dtype=np.int64)


def _as_i64(value: int) -> int:
    """A uint64 slot value as the int64 the table's numpy view holds."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _tmp_path(target: Path) -> Path:
    """Where a state file is written before its rename (FORMAT.md 4.1)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def write_state(path: str | os.PathLike[str], header: dict[str, Any], rs: RecordSet,
                *, format: int = FORMAT_VERSION) -> dict[str, Any]:
    """Write ``rs`` as a state file at ``path`` (atomically: temp file, then rename).

    ``header`` carries feed, version, kind, key, schema and the other descriptive
    fields; the writer adds the layout. Returns the complete header. ``format`` 2
    writes a compact base (FORMAT.md, 10: sorted entries, coded records; no
    tombstones); 1 the format of every overlay (FORMAT.md, 4).

    The byte work (placement, sentinels, index tables, dictionaries, the records
    gathered in entry order, the checksum, the temp file and its rename) runs compiled
    with the GIL released (``native/core/src/write.rs``, ``compact.rs``); in between,
    this function renders the JSON header from the writer's numbers. The numpy writer
    of format 1 it replaced is the tests' oracle (``tests/oracles/write.py``).

    Raises:
        OSError: the file cannot be written.
        IntegrityError: a record lies outside its source, or (format 2) a record is
            not a canonical array of the schema's width.
        ValueError: an unknown format, or tombstones in a format-2 file.
    """
    if format not in FORMATS:
        raise ValueError(f"state format {format!r}: feedkit writes {FORMATS}")
    spec = KeySpec.from_json(header["key"])
    int_keys = spec.slot_kind == "int"
    keys = rs.keys.astype(np.int64 if int_keys else np.uint64, copy=False)
    fields = list(header.get("index_fields", []))
    render, full = _renderer(header, format, fields)
    target = Path(path)
    starts, lengths, sources, source = _record_arrays(rs)
    hashes = [np.ascontiguousarray(rs.index_hashes[f], dtype=np.uint64) for f in fields]
    key_view = np.ascontiguousarray(keys).view(np.uint64)
    if format == FORMAT_COMPACT:
        if rs.tombstone is not None and rs.tombstone.any():
            raise ValueError("a format-2 state file holds no tombstones")
        names = [c["name"] for c in header["schema"]]
        _native.write_compact_state(
            _tmp_path(target), target, key_view, int_keys, starts, lengths, sources, source,
            hashes, [c["kind"] for c in header["schema"]],
            [names.index(c) for c in spec.columns], render)
        return full
    _native.write_state(
        _tmp_path(target), target, key_view, int_keys, starts, lengths, sources, source,
        None if rs.tombstone is None
        else np.ascontiguousarray(rs.tombstone, dtype=bool).view(np.uint8),
        hashes, render)
    return full


def _record_arrays(rs: RecordSet) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray | None]:
    """A RecordSet's byte ranges as the native writers take them."""
    sources = [np.ascontiguousarray(s, dtype=np.uint8)
               for s in (rs.sources if rs.source is not None else rs.sources[:1])]
    source = None if rs.source is None else np.ascontiguousarray(rs.source, dtype=np.uint8)
    return (np.ascontiguousarray(rs.starts, dtype=np.int64),
            np.ascontiguousarray(rs.lengths, dtype=np.int64), sources, source)


def _shape(header: dict[str, Any]) -> tuple[int, list[int], list[str]]:
    """Schema width, the key's record fields and its part kinds."""
    spec = KeySpec.from_json(header["key"])
    names = [c["name"] for c in header["schema"]]
    return len(names), [names.index(c) for c in spec.columns], list(spec.parts)


def write_snapshot_blob(path: str | os.PathLike[str], header: dict[str, Any], rs: RecordSet,
                        key: str, level: int) -> BlobInfo:
    """Write the columnar snapshot blob (FORMAT.md, 11) of the base ``rs`` (canonical
    records without tombstones) with the descriptive ``header`` at ``path``: what a
    format-2 version's manifest names as its snapshot. Encoding and compression run
    compiled with the GIL released (``native/core/src/snapshot.rs``, ``columnar.rs``).

    Raises:
        IntegrityError: a record is not a canonical array of the schema's width.
        OSError: the file cannot be written.
    """
    if rs.tombstone is not None and rs.tombstone.any():
        raise ValueError("a snapshot holds no tombstones")
    width, key_fields, parts = _shape(header)
    starts, lengths, sources, source = _record_arrays(rs)
    size, sha256, raw_size = _native.write_snapshot_blob(
        path, json.dumps(header, separators=(",", ":"), sort_keys=True).encode(),
        starts, lengths, sources, source, width, key_fields, parts, level)
    return BlobInfo(key, size, sha256, raw_size)


def write_delta_blob(path: str | os.PathLike[str], header: dict[str, Any], rs: RecordSet,
                     key: str, level: int) -> BlobInfo:
    """Write the columnar delta blob (FORMAT.md, 11.5) of the delta ``rs`` (upserts and
    tombstones) with the overlay's descriptive ``header`` at ``path``: what a version
    over a format-2 state names as its delta. The upserts travel as a columnar body,
    the tombstones as their slot keys; the consumer writes the overlay they stand for
    (``native/core/src/apply.rs``). The manifest's ``raw_size`` is the upserts' bytes.

    Raises:
        IntegrityError: a record is not a canonical array of the schema's width.
        OSError: the file cannot be written.
    """
    width, key_fields, parts = _shape(header)
    dead = (np.zeros(len(rs), dtype=bool) if rs.tombstone is None
            else np.asarray(rs.tombstone, dtype=bool))
    live = ~dead
    upserts = RecordSet(rs.keys[live], rs.starts[live], rs.lengths[live], rs.sources,
                        None if rs.source is None else rs.source[live])
    starts, lengths, sources, source = _record_arrays(upserts)
    deleted = np.ascontiguousarray(rs.keys[dead]).view(np.uint64)
    size, sha256, raw_size = _native.write_delta_blob(
        path, json.dumps(header, separators=(",", ":"), sort_keys=True).encode(),
        starts, lengths, sources, source, deleted, width, key_fields, parts, level)
    return BlobInfo(key, size, sha256, raw_size)


def build_snapshot(blob: str | os.PathLike[str], info: BlobInfo, expected: dict[str, Any],
                   target: str | os.PathLike[str]) -> None:
    """Rebuild the format-2 state file a columnar snapshot blob holds, at ``target``.

    ``expected``: what the manifest says of the state (feed, version, key, schema,
    index_fields, record_count, state_digest as an int). The blob's header must say
    the same; its size and SHA-256 must be the manifest's, its records' bytes, count
    and digest too. The slot keys and index hashes are derived from the records.
    The caller still verifies the file (``StateFile.verify(records=True)``).

    Raises:
        IntegrityError: the blob is damaged or is not the manifest's state.
        OSError: a file cannot be read or written.
    """
    where = f"snapshot blob {info.key}"
    try:
        head = _native.snapshot_blob_header(blob)
        header = json.loads(head)
        if not isinstance(header, dict):
            raise TypeError("not an object")
        _check_python_fields(header)
        _shape(header)
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: {exc}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise IntegrityError(f"{where}: its header is not one feedkit writes: {exc!r}") from None
    want = dict(expected, kind="base", state_digest=f"{expected['state_digest']:016x}")
    wrong = {k: header.get(k) for k, v in want.items() if header.get(k) != v}
    if wrong:
        raise IntegrityError(f"{where} does not match its manifest: {wrong}")
    width, key_fields, parts = _shape(header)
    names = [c["name"] for c in header["schema"]]
    fields = list(header["index_fields"])
    target = Path(target)
    _native.build_snapshot(
        (blob, info.key, info.size, info.sha256, info.raw_size), head,
        (width, key_fields, parts, [names.index(f) for f in fields],
         [c["kind"] for c in header["schema"]]),
        (expected["record_count"], expected["state_digest"]),
        _tmp_path(target), target, _renderer(header, FORMAT_COMPACT, fields)[0])


def _renderer(header: dict[str, Any], format: int,
              fields: list[str]) -> tuple[Callable[[dict[str, Any]], bytes], dict[str, Any]]:
    """The native writers' callback (the file's JSON header from its layout) and the
    complete header it fills in."""
    full = dict(header)

    def render(layout: dict[str, Any]) -> bytes:
        full.update(layout, format=format, indexes=dict(zip(fields, layout["indexes"], strict=True)))
        return json.dumps(full, separators=(",", ":"), sort_keys=True).encode()

    return render, full


DESCRIPTIVE = ("feed", "key", "schema", "index_fields", "use_list")


def derived_header(template: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A header for a new file of the same feed and schema as ``template``'s file.

    ``fields`` give version, kind, base_version, record_count and state_digest.
    """
    header = {k: template[k] for k in DESCRIPTIVE}
    header.update(fields)
    if isinstance(header.get("state_digest"), int):
        header["state_digest"] = f"{header['state_digest']:016x}"
    return header


def _check_python_fields(header: dict[str, Any]) -> None:
    """Check what of a header becomes Python, beyond the format's own checks
    (``_native.check_header``, ``native/core/src/header.rs``: every number, table and
    section): the feed's name, the column names (named-tuple fields: identifiers, no
    leading underscore, no keyword, none twice), the key's columns and part kinds, the
    indexed fields.

    Raises:
        ValueError, KeyError, TypeError: the header is not one the writer could have
            written (the caller turns them into IntegrityError).
    """
    validate_feed(header["feed"])
    if type(header["use_list"]) is not bool:
        raise ValueError(f"use_list {header['use_list']!r}")
    schema = header["schema"]
    if not isinstance(schema, list) or not schema:
        raise ValueError("schema is not a list of columns")
    names: list[str] = []
    for column in schema:
        name = column["name"]
        if (not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name)
                or name.startswith("_") or name in names):
            raise ValueError(f"column name {name!r}")
        if not isinstance(column["kind"], str) or not isinstance(column.get("type", ""), str):
            raise ValueError(f"column {name!r}: kind or type is not a string")
        names.append(name)
    key = header["key"]
    columns, parts = key["columns"], key["parts"]
    if (not isinstance(columns, list) or not isinstance(parts, list) or not parts
            or len(columns) != len(parts) or any(p not in PART_KINDS for p in parts)
            or any(c not in names for c in columns) or len(set(columns)) != len(columns)):
        raise ValueError(f"key {key!r} does not fit the schema")
    fields = header["index_fields"]
    if any(f not in names for f in fields) or len(set(fields)) != len(fields):
        raise ValueError(f"index_fields {fields!r} do not match the schema")


class StateFile:
    """A memory-mapped state file (read side).

    Opening checks the prefix, the size and every header field a reader uses (types,
    ranges, sections inside the file), not the body: a cached file was verified when
    it was written (:meth:`verify`), and reading a large file would make opening slow.
    A file that opened may still hold damaged slots or records; lookups on it never
    reach outside the file and raise nothing but ``IntegrityError``, but may return
    wrong records until :meth:`verify` passed.

    Raises:
        IntegrityError: not a state file, a truncated one, or an unreadable header.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _PREFIX.size:
                    raise IntegrityError(f"{self.path}: not a feedkit state file (too short)")
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise IntegrityError(f"{self.path}: cannot open state file: {exc}") from exc
        try:
            self._open(size)
        except BaseException:
            self.mm.close()  # nothing refers to the mapping yet: do not wait for the collector
            raise

    @classmethod
    def from_mapping(cls, path: str | os.PathLike[str], mm: Any) -> StateFile:
        """The state file ``path`` from its read-only mapping ``mm`` (a
        ``_native.Mapping``, made without giving the GIL up; opening the file here gives
        it up four times). Checked as :class:`StateFile` checks a file it opens.

        Raises:
            IntegrityError: as :class:`StateFile`.
        """
        sf = cls.__new__(cls)
        sf.path, sf.mm = Path(path), mm
        try:
            if len(mm) < _PREFIX.size:
                raise IntegrityError(f"{sf.path}: not a feedkit state file (too short)")
            sf._open(len(mm))
        except BaseException:
            mm.close()
            raise
        return sf

    def _open(self, size: int) -> None:
        try:
            _native.check_header(self.mm)  # the prefix, and every number the header holds
        except IntegrityError as exc:
            raise IntegrityError(f"{self.path}: {exc}") from None
        _, _, header_length, body_offset, _, digest = _PREFIX.unpack_from(self.mm)
        try:
            self.header: dict[str, Any] = json.loads(self.mm[_PREFIX.size:_PREFIX.size + header_length])
            _check_python_fields(self.header)
        except KeyError as exc:
            raise IntegrityError(f"{self.path}: unreadable state header: no field {exc}") from exc
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            # RecursionError: deeply nested JSON; ValueError covers bad UTF-8 and numbers
            # too long to convert, as well as the checks above.
            raise IntegrityError(f"{self.path}: unreadable state header: {exc}") from exc
        heap = self.header["heap"]
        self.format: int = self.header["format"]
        self.count: int = self.header["count"]
        self.spec = KeySpec.from_json(self.header["key"])
        self.digest = digest
        self.body_offset = body_offset
        self.heap_offset = body_offset + heap["offset"]
        self.heap_end = self.heap_offset + heap["length"]
        self.feed: str = self.header["feed"]
        self.version: int = self.header["version"]
        self.kind: str = self.header["kind"]
        if self.format == FORMAT_COMPACT:
            # Sorted entries [slot key, heap-relative record offset] (FORMAT.md, 10.3)
            entries = self.header["entries"]
            self.slot_count: int = entries["count"]
            self.method: str = entries["hash"]
            self.empty: int = entries["empty"]
            width = entries["size"] - 8
            dtype = np.dtype({"names": ["key", "offset"],
                              "formats": ["<i8", "<u4" if width == 4 else "<i8"],
                              "offsets": [0, 8], "itemsize": entries["size"]})
            self._entries = np.frombuffer(self.mm, dtype=dtype, count=self.slot_count,
                                          offset=body_offset)
            self.heap = np.frombuffer(self.mm, dtype=np.uint8)
            return
        slots = self.header["slots"]
        self.slot_count = slots["count"]
        self.bits: int = slots["bits"]
        self.method = slots["hash"]
        self.empty = slots["empty"]
        self.max_probe: int = slots["max_probe"]
        view = memoryview(self.mm)
        # Scalar probes index a memoryview (fast per item); vectorised ones use numpy views.
        slot_view = view[body_offset:body_offset + 16 * self.slot_count]
        self.slots = slot_view.cast("q") if self.spec.slot_kind == "int" else slot_view.cast("Q")
        self.table = np.frombuffer(self.mm, dtype=np.int64, count=2 * self.slot_count,
                                   offset=body_offset)
        self.heap = np.frombuffer(self.mm, dtype=np.uint8)

    @property
    def tombstones(self) -> int:
        return int(self.header["tombstones"])

    def table_args(self) -> Any:
        """The file as the native functions take it: its read-only mapping (they parse
        and check its header themselves, ``native/core/src/header.rs``)."""
        return self.mm

    @property
    def compact(self) -> bool:
        """A format-2 file: its records are coded (``canonical`` rebuilds their bytes)."""
        return self.format == FORMAT_COMPACT

    def verify(self, body_digest: bytes | None = None, *, records: bool = False) -> None:
        """Check the body checksum and the structure every lookup relies on
        (``docs/FORMAT.md``, 4.8), in compiled code (the GIL released for large files).

        ``body_digest``: the xxh3-128 of the file past its prefix, already computed while
        the file was written (see ``blobs.decompress_file``); None hashes the file here.

        The checksum finds damage; the structural checks refuse a file whose checksum was
        computed over bad tables (a buggy or hostile writer): slot offsets ascend from the
        heap start to the heap end, every occupied slot has a record and every empty one
        none, the terminal slot is empty, the header's entry and tombstone counts hold,
        tombstones are one byte and only in overlays, every record opens an array of the
        schema's width, and every index's value table is well formed and its postings
        point at live records. After ``verify`` no lookup can fail on the tables.

        ``records``: also check that every record decodes (one msgpack array of the
        schema's width, UTF-8 strings, nested no deeper than the decoder allows, nothing
        after it), so that a lookup on the file can only fail on a value's meaning (an
        ext payload, an unhashable map key). The loader asks it of every downloaded blob.

        Raises:
            IntegrityError: the file's bytes are not the ones its writer hashed, or its
                tables contradict each other (names the file).
        """
        indexes = [(name, *self.index_args(name)) for name in self.header["indexes"]]
        try:
            _native.verify_state(self.table_args(), self.count, self.tombstones,
                                 len(self.header["schema"]), indexes, body_digest, records)
        except IntegrityError as exc:
            raise IntegrityError(f"{self.path}: {exc}") from None


    # -- vectorised access (merging, get_many, iteration) -------------------------------
    #
    # These never read outside the file, even on a damaged file that was opened but not
    # verified: ranges are clipped to the heap and probes stop at the terminal slot, so a
    # caller never indexes out of bounds nor allocates more than the file's size. Their
    # answers are only right on a verified file.

    def occupied(self) -> np.ndarray:
        """Slot numbers of every record (and tombstone), ascending."""
        if self.compact:
            return np.arange(self.slot_count - 1, dtype=np.int64)  # every entry holds a record
        # The terminal slot is empty in every valid file; leaving it out keeps slot + 1
        # (where a record ends) inside the table on a damaged one too.
        return np.flatnonzero(self.table[0:-2:2] != _as_i64(self.empty))

    def slot_keys(self, slots: np.ndarray) -> np.ndarray:
        keys = self._entries["key"][slots] if self.compact else self.table[2 * slots]
        return keys if self.spec.slot_kind == "int" else keys.view(np.uint64)

    def record_ranges(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of the records of ``slots`` (below the terminal slot), as stored:
        in a format-2 file, coded (:meth:`canonical` gives their canonical bytes)."""
        if self.compact:
            offsets = self._entries["offset"].astype(np.int64) + self.heap_offset
            starts = np.clip(offsets[slots], self.heap_offset, self.heap_end)
            ends = np.clip(offsets[slots + 1], starts, self.heap_end)
            return starts, ends - starts
        starts = np.clip(self.table[2 * slots + 1], self.heap_offset, self.heap_end)
        # A start at the very end of the file (an empty heap last) would make heap[start],
        # the tombstone test, fail; on a verified file no record starts there.
        np.minimum(starts, len(self.mm) - 1, out=starts)
        ends = np.clip(self.table[2 * slots + 3], starts, self.heap_end)
        return starts, ends - starts

    def canonical(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The canonical record bytes (FORMAT.md, 6) of ``slots``: ``(heap, starts,
        lengths)``, record ``i`` being ``heap[starts[i]:starts[i] + lengths[i]]`` (the
        file's own heap in format 1; rebuilt, compiled, in format 2).

        Raises:
            IntegrityError: a record that does not decode, or a slot outside the table.
        """
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        if not self.compact:
            starts, lengths = self.record_ranges(slots)
            return self.heap, starts, lengths
        try:
            heap, lengths = _native.canonical_records(self.mm, slots)
        except IntegrityError as exc:
            raise IntegrityError(f"{self.path}: {exc}") from None
        lengths = np.frombuffer(lengths, dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        return np.frombuffer(heap, dtype=np.uint8), starts, lengths

    def homes(self, slot_keys: np.ndarray) -> np.ndarray:
        if self.spec.slot_kind == "int":
            return int_homes(slot_keys.astype(np.int64, copy=False), self.method, self.bits)
        return hash_homes(slot_keys.astype(np.uint64, copy=False), self.bits)

    def probe_many(self, slot_keys: np.ndarray) -> np.ndarray:
        """Slot of each key, or -1 where absent; vectorised linear probing."""
        keys = slot_keys.astype(np.int64 if self.spec.slot_kind == "int" else np.uint64, copy=False)
        keys = keys.view(np.int64)
        found = np.full(len(keys), -1, dtype=np.int64)
        cur = self.homes(slot_keys)
        empty = _as_i64(self.empty)
        todo = np.flatnonzero(keys != empty)  # the empty marker is never a key of this file
        cur = cur[todo]
        table = self.table
        last = self.slot_count - 1  # the terminal slot: homes lie below it (checked on open)
        for _ in range(self.max_probe + 1):
            if not len(todo):
                break
            k = table[2 * cur]
            hit = k == keys[todo]
            found[todo[hit]] = cur[hit]
            go = ~hit & (k != empty) & (cur < last)  # a damaged table may lack its empty end
            todo, cur = todo[go], cur[go] + 1
        found[found == last] = -1  # only a damaged terminal slot holds a key
        return found

    def _index_meta(self, name: str) -> dict[str, Any]:
        try:
            return self.header["indexes"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise IntegrityError(f"{self.path}: no index on {name!r} in this file") from None

    def index_args(self, name: str) -> tuple[int, int, int, int, int, int]:
        """Index ``name``'s numbers as the native functions take them: value table offset,
        entries, empty sentinel, distinct values, postings offset, postings.

        Raises:
            IntegrityError: the file has no index on ``name``.
        """
        meta = self._index_meta(name)
        return (self.body_offset + meta["table"], meta["slots"], meta["empty"], meta["values"],
                self.body_offset + meta["postings"], meta["count"])

    def _index_table(self, meta: dict[str, Any]) -> np.ndarray:
        return np.frombuffer(self.mm, dtype=np.uint64, count=2 * meta["slots"],
                             offset=self.body_offset + meta["table"])

    def _postings(self, meta: dict[str, Any]) -> np.ndarray:
        return np.frombuffer(self.mm, dtype=np.uint32, count=meta["count"],
                             offset=self.body_offset + meta["postings"])

    def index_hashes(self, name: str) -> np.ndarray:
        """The value hash of every record's field ``name``, indexed by slot (0 where none).

        Raises:
            IntegrityError: the file has no index on ``name``.
        """
        meta = self._index_meta(name)
        table = self._index_table(meta)
        postings = self._postings(meta).astype(np.int64)
        # Posting bounds clipped into [0, count] and made ascending: on a damaged file the
        # repeat below would otherwise allocate as much as the bounds claim.
        bounds = np.maximum.accumulate(np.clip(table[1::2], 0, len(postings)).astype(np.int64))
        owner = np.repeat(table[0::2][:-1], np.diff(bounds))
        posted = postings[bounds[0]:bounds[-1]]
        inside = posted < self.slot_count
        out = np.zeros(self.slot_count, dtype=np.uint64)
        out[posted[inside]] = owner[inside]
        return out

    def postings(self, name: str, vhash: int) -> np.ndarray:
        """Record slots whose field ``name`` has a value hashing to ``vhash``.

        Raises:
            IntegrityError: the file has no index on ``name``.
        """
        meta = self._index_meta(name)
        table = self._index_table(meta)
        count, last = meta["count"], meta["slots"] - 1
        i = vhash >> (64 - meta["bits"])
        empty = meta["empty"]
        while i < last:  # the terminal entry is empty in a valid table: the walk ends there
            k = int(table[2 * i])
            if k == empty:
                break
            if k == vhash:
                a = min(max(int(table[2 * i + 1]), 0), count)
                b = min(max(int(table[2 * i + 3]), a), count)
                posted = np.frombuffer(self.mm, dtype=np.uint32, count=b - a,
                                       offset=self.body_offset + meta["postings"] + 4 * a)
                return posted[posted < self.slot_count - 1]
            i += 1
        return np.empty(0, dtype=np.uint32)


# -- scalar lookups ------------------------------------------------------------------------
#
# get() is the hot path (hundreds of nanoseconds), so it is generated per state from the
# templates below, as namedtuple and dataclasses generate code: every constant becomes a
# closure variable, the home function and key check are inlined, and nothing is looked up
# on self. The generated function is what Consumer.get is bound to.


def damaged_record(files: Sequence[StateFile], key: Any, exc: BaseException) -> IntegrityError:
    """The error for a record that cannot be decoded (names the feed, the key and the files)."""
    where = " over ".join(str(sf.path) for sf in files)
    return IntegrityError(f"feed {files[-1].feed!r}: the record of key {key!r} is unreadable "
                          f"({where}): {exc}")


