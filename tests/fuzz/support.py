"""Seeds, mutations and settings shared by the fuzz tests.

Seeds are real files written by feedkit's own writers (``write_state``,
``compress_file``, ``Manifest.to_bytes``); the strategies below damage them in the
ways storage, transfer and a lying producer do: flipped bits, truncation, spliced
ranges, and header values replaced by huge, negative or ill-typed ones (with the
checksum repaired, so that the structural checks behind it are reached too).

The number of examples scales with ``FEEDKIT_FUZZ``: unset (CI) runs each property a
few hundred times with a fixed seed (``derandomize``); ``FEEDKIT_FUZZ=deep`` (``make
fuzz``) runs 50 times more, randomised, and prints a reproduction blob on failure.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from feedkit.codec import pack_value
from feedkit.format import PREFIX_SIZE, RecordSet, write_state
from feedkit.keys import KeySpec, value_hash

DEEP = os.environ.get("FEEDKIT_FUZZ", "") == "deep"
DEEP_FACTOR = 50
TIMEOUT = 3600 if DEEP else 300  # seconds per test (pytest-timeout): a hang fails, not blocks


def fuzz_settings(examples: int) -> settings:
    """Settings for one property: ``examples`` in CI, ``DEEP_FACTOR`` times more in ``make fuzz``.

    The deadline catches a slow example (a loop that walks far past a table, a large
    allocation); pytest-timeout catches a true hang.
    """
    return settings(
        max_examples=examples * DEEP_FACTOR if DEEP else examples,
        derandomize=not DEEP,
        database=None,
        deadline=dt.timedelta(seconds=5 if DEEP else 2),
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
    )


# -- seeds: state files -----------------------------------------------------------------------


class Seed:
    """One valid state file and what lookups to try on it.

    A plain class, not a dataclass: hypothesis prints a failing example's arguments, and
    the seed's name is enough there (a dataclass would be printed byte by byte).
    """

    def __init__(self, name: str, data: bytes, keys: list[Any], finds: list[tuple[str, Any]],
                 base: bytes | None = None) -> None:
        self.name = name
        self.data = data
        self.keys = keys  # present keys, then absent ones
        self.finds = finds  # (indexed field, value) pairs
        self.base = base  # an overlay's base (valid), served beneath it

    def __repr__(self) -> str:
        return f"Seed({self.name!r})"


def _column(name: str, kind: str, arrow: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "type": arrow, "nullable": True}


def write_rows(path: Path, *, key: KeySpec, schema: list[dict[str, Any]], rows: list[list[Any]],
           slot_keys: list[int], kind: str = "base", index_fields: tuple[str, ...] = (),
           tombstones: frozenset[int] = frozenset(), use_list: bool = False,
           format: int = 1) -> bytes:
    """Write ``rows`` (one list of values per record, in schema order) as a state file of
    ``format`` at ``path`` with ``write_state``; return its bytes."""
    records = [b"\xc0" if i in tombstones else pack_value(row) for i, row in enumerate(rows)]
    lengths = np.array([len(r) for r in records], dtype=np.int64)
    names = [c["name"] for c in schema]
    live = [i for i in range(len(rows)) if i not in tombstones]
    header: dict[str, Any] = {
        "feed": "fuzz.feed", "version": 7, "kind": kind, "key": key.to_json(), "schema": schema,
        "index_fields": list(index_fields), "use_list": use_list, "record_count": len(live),
        "state_digest": "0123456789abcdef",
    }
    if kind == "overlay":
        header["base_version"] = 5
    index_hashes = {f: np.array([0 if i in tombstones else value_hash(rows[i][names.index(f)])
                                 for i in range(len(rows))], dtype=np.uint64)
                    for f in index_fields}
    dtype = np.int64 if key.slot_kind == "int" else np.uint64
    write_state(path, header, RecordSet(
        keys=np.array(slot_keys, dtype=dtype),
        starts=np.cumsum(lengths) - lengths, lengths=lengths,
        sources=[np.frombuffer(b"".join(records) or b"\0", dtype=np.uint8)],
        tombstone=np.array([i in tombstones for i in range(len(rows))], dtype=bool)
        if tombstones else None,
        index_hashes=index_hashes), format=format)
    return path.read_bytes()


def state_seeds(folder: Path) -> list[Seed]:
    """Valid state files of every slot kind, with an index, an overlay, ext values, and none."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = []

    countries = ("DE", "US", "FR", None)
    ids = [3, 11, 42, 50, -7, 2**40, 9, 10, 17, 25]
    rows = [[k, f"name {k}", countries[i % 4]] for i, k in enumerate(ids)]
    schema = [_column("id", "int", "int64"), _column("name", "str", "string"),
              _column("country", "str", "string")]
    data = write_rows(folder / "int", key=KeySpec(("id",), ("int",)), schema=schema, rows=rows,
                  slot_keys=ids, index_fields=("country",))
    seeds.append(Seed("int", data, ids + [4, -1, 2**63 - 1, -(2**63)],
                      [("country", "DE"), ("country", None), ("country", "XX")]))

    codes = [f"c{i}" for i in range(12)]
    rows = [[c, i] for i, c in enumerate(codes)]
    schema = [_column("code", "str", "string"), _column("n", "int", "int64")]
    data = write_rows(folder / "overlay", key=KeySpec(("code",), ("str",)), schema=schema, rows=rows,
                  slot_keys=[xxhash.xxh3_64_intdigest(c.encode()) for c in codes],
                  kind="overlay", index_fields=("n",), tombstones=frozenset({2, 5, 11}))
    old = [f"c{i}" for i in range(0, 30, 2)]
    base = write_rows(folder / "base", key=KeySpec(("code",), ("str",)), schema=schema,
                  rows=[[c, -i] for i, c in enumerate(old)],
                  slot_keys=[xxhash.xxh3_64_intdigest(c.encode()) for c in old],
                  index_fields=("n",))
    seeds.append(Seed("str-overlay", data, codes + ["c20", "", "zz"], [("n", 1), ("n", -10)],
                      base))

    parts = [(i, f"p{i % 3}") for i in range(9)]
    rows = [[a, b, float(a) / 3] for a, b in parts]
    schema = [_column("a", "int", "int64"), _column("b", "str", "string"),
              _column("score", "float", "double")]
    data = write_rows(folder / "composite", key=KeySpec(("a", "b"), ("int", "str")), schema=schema,
                  rows=rows, slot_keys=[xxhash.xxh3_64_intdigest(msgpack.packb(p)) for p in parts])
    seeds.append(Seed("composite", data, parts + [(0, "p1"), (99, "x")], []))

    blobs = [bytes([i]) * i for i in range(1, 7)]
    rows = [[b, len(b)] for b in blobs]
    schema = [_column("raw", "bytes", "binary"), _column("size", "int", "int32")]
    data = write_rows(folder / "bytes", key=KeySpec(("raw",), ("bytes",)), schema=schema, rows=rows,
                  slot_keys=[xxhash.xxh3_64_intdigest(b) for b in blobs])
    seeds.append(Seed("bytes", data, blobs + [b"", b"\xff"], []))

    zone = ZoneInfo("Europe/Berlin")
    rows = [[i, dt.date(2020, 1, 1 + i), dt.datetime(2021, 3, 4, 5, i, tzinfo=zone),
             Decimal(f"{i}.50"), uuid.UUID(int=i), [i, i + 1], dt.time(1, 2, i)]
            for i in range(6)]
    schema = [_column("id", "int", "int64"), _column("day", "date", "date32[day]"),
              _column("at", "timestamptz", "timestamp[us, tz=Europe/Berlin]"),
              _column("price", "decimal", "decimal128(10, 2)"), _column("ref", "uuid", "uuid"),
              _column("tags", "list", "list<item: int64>"), _column("t", "time", "time64[us]")]
    data = write_rows(folder / "ext", key=KeySpec(("id",), ("int",)), schema=schema, rows=rows,
                  slot_keys=list(range(6)), index_fields=("day",), use_list=True)
    seeds.append(Seed("ext", data, list(range(8)), [("day", dt.date(2020, 1, 2))]))

    schema = [_column("id", "int", "int64")] + [_column(f"c{i}", "int", "int8") for i in range(16)]
    rows = [[i] + list(range(16)) for i in range(5)]  # 17 columns: a DC array header
    data = write_rows(folder / "wide", key=KeySpec(("id",), ("int",)), schema=schema, rows=rows,
                  slot_keys=list(range(5)))
    seeds.append(Seed("wide", data, [0, 4, 5], []))

    data = write_rows(folder / "empty", key=KeySpec(("id",), ("int",)),
                  schema=[_column("id", "int", "int64")], rows=[], slot_keys=[])
    seeds.append(Seed("empty", data, [0, 1], []))
    return seeds


# -- taking a state file apart and putting it back together -----------------------------------

_PREFIX = struct.Struct("<8sIIQQ16s")


def split_state(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and the body of a valid state file."""
    _, _, length, body_offset, _, _ = _PREFIX.unpack_from(data)
    return json.loads(data[PREFIX_SIZE:PREFIX_SIZE + length]), data[body_offset:]


def join_state(header: dict[str, Any] | bytes, body: bytes, *, digest: bytes | None = None,
               like: bytes | None = None, format: int | None = None) -> bytes:
    """A state file from a header and a body, the header written as the writer does.

    Slot offsets are absolute, so the body keeps the place it has in ``like`` (the
    file it came from) when the new header still fits before it; else it moves to the
    next 64-byte boundary. The checksum is recomputed (so only the structural checks
    can refuse the file) unless ``digest`` is given. The prefix names ``format``, else
    ``like``'s format, else 1.
    """
    head = header if isinstance(header, bytes) else json.dumps(
        header, separators=(",", ":"), sort_keys=True).encode()
    offset = -(-(PREFIX_SIZE + len(head)) // 64) * 64
    if like is not None:
        offset = max(offset, _PREFIX.unpack_from(like)[3])
        format = _PREFIX.unpack_from(like)[1] if format is None else format
    rest = head + b"\0" * (offset - PREFIX_SIZE - len(head)) + body
    checksum = digest if digest is not None else xxhash.xxh3_128(rest).digest()
    return _PREFIX.pack(b"FEEDKIT\0", format or 1, len(head), offset, PREFIX_SIZE + len(rest),
                        checksum) + rest


def fix_checksum(data: bytes) -> bytes:
    """``data`` with its prefix's checksum recomputed (when there is a prefix at all)."""
    if len(data) < PREFIX_SIZE:
        return data
    return data[:32] + xxhash.xxh3_128(data[PREFIX_SIZE:]).digest() + data[PREFIX_SIZE:]


# -- generic mutations ------------------------------------------------------------------------

Mutation = Callable[[bytes], bytes]

HUGE_INTS = [-1, 0, 1, 7, 8, 63, 64, 65, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64,
             2**64 + 1, -(2**63), -(2**63) - 1, 10**30, -(10**30)]
ODD_VALUES: list[Any] = [None, True, False, 1.5, -0.0, 1e308, float("nan"), float("inf"), "",
                         "x", "low", "fib", "xxh3", "base", "overlay", "int", "str", "bytes",
                         "__import__('os').getpid()", "0" * 16, "../..", [], [1], {}, {"a": 1}]
interesting_values = st.one_of(st.sampled_from(HUGE_INTS), st.sampled_from(ODD_VALUES),
                               st.integers(), st.text(max_size=8))


def _flip(data: bytes, at: int, mask: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


@st.composite
def byte_mutations(draw: st.DrawFn) -> Mutation:
    """One damage to a byte string: flips, a truncation, a spliced or overwritten range."""
    kind = draw(st.sampled_from(["flip", "truncate", "overwrite", "insert", "delete", "splice"]))
    at = draw(st.integers(0, 1 << 20))
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)),
                              min_size=1, max_size=8))

        def flip(data: bytes) -> bytes:
            for pos, mask in flips:
                data = _flip(data, pos, mask)
            return data
        return flip
    if kind == "truncate":
        return lambda data: data[:at % (len(data) + 1)]
    junk = draw(st.binary(min_size=1, max_size=64))
    if kind == "overwrite":
        return lambda data: (data[:at % (len(data) + 1)] + junk
                             + data[at % (len(data) + 1) + len(junk):])
    if kind == "insert":
        return lambda data: data[:at % (len(data) + 1)] + junk + data[at % (len(data) + 1):]
    length = draw(st.integers(1, 4096))
    if kind == "delete":
        return lambda data: data[:at % (len(data) + 1)] + data[at % (len(data) + 1) + length:]
    other = draw(st.integers(0, 1 << 20))

    def splice(data: bytes) -> bytes:  # a range of the file copied over another place
        a, b = at % (len(data) + 1), other % (len(data) + 1)
        return data[:b] + data[a:a + length] + data[b + length:]
    return splice


def leaf_paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (dict keys and list positions), containers included."""
    out = [path] if path else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += leaf_paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += leaf_paths(v, (*path, i))
    return out


def set_path(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> None:
    for part in path[:-1]:
        doc = doc[part]
    # A path taken from the document before an earlier edit may no longer fit it (a list
    # replaced by a dict): an int index into a dict would add a key JSON cannot sort.
    if isinstance(doc, dict) is not isinstance(path[-1], str):
        raise TypeError(f"path part {path[-1]!r} does not fit a {type(doc).__name__}")
    if delete:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


@st.composite
def json_edits(draw: st.DrawFn, doc: Any) -> list[tuple[tuple[Any, ...], Any, bool]]:
    """One to three edits of a JSON document: a value replaced by an interesting one, or removed."""
    paths = leaf_paths(doc)
    delete = st.sampled_from([False, False, True])  # mostly replace, sometimes remove
    return draw(st.lists(st.tuples(st.sampled_from(paths), interesting_values, delete),
                         min_size=1, max_size=3))


def apply_edits(doc: Any, edits: list[tuple[tuple[Any, ...], Any, bool]]) -> Any:
    """A deep copy of ``doc`` with ``edits``; edits whose path no longer exists are skipped."""
    doc = json.loads(json.dumps(doc))
    for path, value, delete in edits:
        with contextlib.suppress(KeyError, IndexError, TypeError):
            # A copy: ODD_VALUES' lists and dicts are shared, and a later edit inside one
            # would otherwise make the document refer to itself.
            set_path(doc, path, copy.deepcopy(value), delete and isinstance(path[-1], str))
    return doc


DEEP_JSON = [b"[" * 100_000, b'{"a":' * 50_000, b"[" * 3000 + b"]" * 3000,
             b'{"slots": ' + b"9" * 5000 + b"}", b"1e999999", b"-" + b"1" * 100_000]


# -- format 2: where each section of a compact base lies --------------------------------------


class Section:
    """One section of a format-2 file: the absolute offsets of its words (``width`` bytes
    each, little-endian; 1 for byte sections: the heap, dictionary values)."""

    def __init__(self, name: str, at: list[int], width: int) -> None:
        self.name, self.at, self.width = name, at, width

    def __repr__(self) -> str:
        return f"Section({self.name!r}, {len(self.at)} words of {self.width})"

    def get(self, data: bytes | bytearray, i: int) -> int:
        return int.from_bytes(data[self.at[i]:self.at[i] + self.width], "little")

    def put(self, data: bytearray, i: int, value: int) -> None:
        data[self.at[i]:self.at[i] + self.width] = (value % (1 << 8 * self.width)).to_bytes(
            self.width, "little")


def compact_sections(data: bytes) -> list[Section]:
    """The sections of the valid format-2 file ``data`` (FORMAT.md, 10; the writer is
    ``native/core/src/compact.rs``): entry keys and record offsets (the terminal entry
    included), the bucket directory, the heap, each dictionary's offsets and values, each
    index's value table and postings. Empty sections are left out."""
    header, _ = split_state(data)
    body = _PREFIX.unpack_from(data)[3]
    entries, size = header["entries"], header["entries"]["size"]
    out = [
        Section("entry keys", [body + j * size for j in range(entries["count"])], 8),
        Section("entry offsets", [body + j * size + 8 for j in range(entries["count"])], size - 8),
    ]
    buckets = header["buckets"]
    out.append(Section("directory", [body + buckets["offset"] + 4 * i
                                     for i in range(buckets["count"] + 1)], 4))
    heap = body + header["heap"]["offset"]
    out.append(Section("heap", list(range(heap, heap + header["heap"]["length"])), 1))
    for c, column in enumerate(header["columns"]):
        if "offset" not in column:
            continue
        at = body + column["offset"]
        out.append(Section(f"dictionary {c} offsets",
                           [at + 4 * i for i in range(column["values"] + 1)], 4))
        values = at + 4 * (column["values"] + 1)
        out.append(Section(f"dictionary {c} values", list(range(values, values + column["length"])), 1))
    for name, meta in header["indexes"].items():
        table = body + meta["table"]
        out.append(Section(f"index {name} table", [table + 8 * i for i in range(2 * meta["slots"])], 8))
        postings = body + meta["postings"]
        out.append(Section(f"index {name} postings", [postings + 4 * i for i in range(meta["count"])], 4))
    return [s for s in out if s.at]
