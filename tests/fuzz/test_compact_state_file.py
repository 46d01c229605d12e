"""Fuzzing format-2 state files (compact bases, ``native/core/src/compact.rs``): ``StateFile``,
``verify`` and a ``State``'s lookups over files ``write_state(..., format=2)`` wrote from
drawn tables, then damaged section by section: the header's numbers, entry keys and
record offsets, the bucket directory, the coded records, each dictionary's offsets and
values, the index tables and postings; or flipped, truncated and extended anywhere. Most
damage is re-sealed (the prefix's checksum recomputed), so that the structural checks of
``verify``, not the checksum, are what stand between it and a lookup.

The properties (the guarantees of docs/FORMAT.md 4.8, which format 2 keeps):

- opening raises ``IntegrityError`` or succeeds; so do ``verify`` and ``verify(records=True)``;
- on a file that opened, every lookup (``get``, ``in``, ``get_many``, ``keys``, ``items``,
  ``find``) and the merge path's ``canonical`` raise nothing but ``IntegrityError`` (never
  a Rust panic turned into one), and allocate little; after ``verify`` none fails on the
  tables (a probe leaving the entries or the heap);
- on a file that passed ``verify(records=True)``, no lookup fails but on a value's meaning
  (an ext payload, an unhashable map key); the lookups agree with each other and with the
  canonical records; the key of every entry finds its record; and every key whose entry
  and records the damage left alone answers exactly what the undamaged file answers (so
  does ``find`` when the index was left alone too).
"""

from __future__ import annotations

import itertools
import json
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from feedkit import IntegrityError, KeyTypeError
from feedkit.codec import pack_value, unpack_record
from feedkit.format import PREFIX_SIZE, StateFile
from feedkit.keys import KeySpec, value_hash
from feedkit.state import State
from tests.fuzz.support import (
    HUGE_INTS,
    TIMEOUT,
    Section,
    apply_edits,
    byte_mutations,
    compact_sections,
    fix_checksum,
    fuzz_settings,
    join_state,
    json_edits,
    leaf_paths,
    split_state,
    write_rows,
)

pytestmark = pytest.mark.timeout(TIMEOUT)

ALLOCATION_BOUND = 16 << 20  # bytes: the files are a few KiB, so this is "nothing large"
PANIC = "internal error in feedkit's state layer"  # a Rust panic the boundary caught
# What a probe says when it meets damaged tables: after verify, no lookup may say it.
TABLE_FAULTS = ("lies outside the heap", "outside the slot table", "lies outside the file",
                "no empty terminal slot")


# -- tables -------------------------------------------------------------------------------------


def _column(name: str, kind: str, arrow: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "type": arrow, "nullable": True}


class Table:
    """Rows to write as a format-2 base, and optionally an overlay (format 1) served over it."""

    def __init__(self, name: str, key: KeySpec, schema: list[dict[str, Any]],
                 rows: list[list[Any]], index_fields: tuple[str, ...] = (),
                 use_list: bool = False, overlay: list[list[Any]] | None = None,
                 deleted: frozenset[int] = frozenset()) -> None:
        self.name, self.key, self.schema, self.rows = name, key, schema, rows
        self.index_fields, self.use_list = index_fields, use_list
        self.overlay, self.deleted = overlay, deleted  # overlay rows; which are tombstones

    def __repr__(self) -> str:
        return f"Table({self.name!r}, {len(self.rows)} rows)"

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.schema]

    def key_of(self, row: list[Any]) -> Any:
        parts = tuple(row[self.names.index(c)] for c in self.key.columns)
        return parts if self.key.composite else parts[0]

    def slot_keys(self, rows: list[list[Any]]) -> list[int]:
        return [self.key.slot_key(self.key_of(r), "fuzz.feed") for r in rows]


WORDS = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "eta", "theta"]
KEY_COLUMNS = {
    "int": ([_column("id", "int", "int64")], KeySpec(("id",), ("int",)),
            st.integers(-(2**63), 2**63 - 1)),
    "str": ([_column("code", "str", "string")], KeySpec(("code",), ("str",)),
            st.text(max_size=8)),
    "bytes": ([_column("raw", "bytes", "binary")], KeySpec(("raw",), ("bytes",)),
              st.binary(max_size=8)),
    "composite": ([_column("a", "int", "int64"), _column("b", "str", "string")],
                  KeySpec(("a", "b"), ("int", "str")),
                  st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=4))),
}
# Value columns: (kind, Arrow type, a strategy of a strategy of values): pools make a
# column's values (or a list's elements) repeat, so that the writer codes them `dict`
# (or `elements`, at 1 to 6 bits an id); free values stay `plain`.
POOL_SIZES = [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 64]


def _pool(values: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return st.lists(values, min_size=1, max_size=max_size, unique_by=repr).map(st.sampled_from)


def _elements(make: Callable[[int], Any]) -> st.SearchStrategy[st.SearchStrategy[Any]]:
    return st.sampled_from(POOL_SIZES).map(
        lambda n: st.lists(st.sampled_from([make(i) for i in range(n)]), max_size=12))


VALUE_COLUMNS: dict[str, tuple[str, str, st.SearchStrategy[st.SearchStrategy[Any]]]] = {
    "word": ("str", "string", _pool(st.sampled_from(WORDS) | st.text(min_size=2, max_size=6))),
    "title": ("str", "string", st.just(st.text(max_size=12))),
    "tags": ("list", "list<item: string>", _elements(lambda i: f"tag{i}")),
    "codes": ("list", "list<item: int64>", _elements(lambda i: 1000 + 37 * i)),
    "count": ("int", "int64", st.just(st.integers(-(2**63), 2**63 - 1))),
    "score": ("float", "double", st.just(st.floats(allow_nan=False))),
    "price": ("decimal", "decimal128(10, 2)",
              _pool(st.integers(-10**6, 10**6).map(lambda c: Decimal(c).scaleb(-2)))),
    "blob": ("bytes", "binary", _pool(st.binary(min_size=2, max_size=6))),
    "meta": ("map", "map<string, int64>",
             _pool(st.dictionaries(st.sampled_from("xyz"), st.integers(-9, 999), max_size=2))),
    "day": ("date", "date32[day]", st.just(st.dates())),
}
POOLED = ("word", "tags", "codes", "price", "blob", "meta")
INDEXABLE = ("word", "count", "price", "blob", "day")


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """A table of up to 64 rows: a key of every kind, one to four value columns (nullable)."""
    kind = draw(st.sampled_from(sorted(KEY_COLUMNS)))
    key_schema, spec, key_values = KEY_COLUMNS[kind]
    size = draw(st.sampled_from([0, 1, 2, 24, 64]))
    keys = draw(st.lists(key_values, min_size=size * 3 // 4, max_size=size, unique_by=repr))
    # pooled columns twice as often as free ones: most files code a column or two
    columns = draw(st.lists(st.sampled_from(sorted(VALUE_COLUMNS) + list(POOLED)), min_size=1,
                            max_size=4, unique=True))
    schema = list(key_schema) + [_column(c, *VALUE_COLUMNS[c][:2]) for c in columns]
    makers = [draw(VALUE_COLUMNS[c][2]) for c in columns]
    rows = []
    for k in keys:
        parts = list(k) if kind == "composite" else [k]
        rows.append(parts + [draw(st.none() | m) if draw(st.integers(0, 9)) == 0 else draw(m)
                             for m in makers])
    indexable = [c for c in columns if c in INDEXABLE]
    index_fields = tuple(draw(st.lists(st.sampled_from(indexable), max_size=2, unique=True))
                         if indexable else [])
    return Table(f"drawn {kind}", spec, schema, rows, index_fields, draw(st.booleans()))


def fixed_tables() -> list[Table]:
    """Tables that reach what drawn ones rarely do: wide element ids, every coding in one
    file, an overlay over a compact base, a record that is only its key, none, one."""
    out = []
    schema = [_column("id", "int", "int64"), _column("word", "str", "string"),
              _column("tags", "list", "list<item: string>"), _column("title", "str", "string"),
              _column("price", "decimal", "decimal128(10, 2)"),
              _column("codes", "list", "list<item: int64>"),
              _column("flags", "list", "list<item: string>")]
    rows = [[i * 7 - 100, WORDS[i % 3], [f"tag{(i + k) % 5}" for k in range(i % 6)],
             f"title {i}", Decimal(i % 4).scaleb(-2), None if i % 9 == 0 else [1000 + i % 3] * (i % 4),
             [("yes", "no")[(i >> k) & 1] for k in range(i % 7)]]
            for i in range(48)]
    out.append(Table("every coding", KeySpec(("id",), ("int",)), schema, rows, ("word", "price")))
    # 520 distinct elements: ids of 10 bits
    schema = [_column("id", "int", "int64"), _column("tags", "list", "list<item: string>")]
    rows = [[i, [f"t{(i * 37 + k * 11) % 520}" for k in range(16)]] for i in range(264)]
    out.append(Table("wide ids", KeySpec(("id",), ("int",)), schema, rows))
    schema = [_column("code", "str", "string"), _column("word", "str", "string"),
              _column("n", "int", "int64")]
    rows = [[f"c{i}", WORDS[i % 4], i] for i in range(40)]
    out.append(Table("str over", KeySpec(("code",), ("str",)), schema, rows, ("word",),
                     overlay=[[f"c{i}", WORDS[(i + 1) % 4], -i] for i in range(30, 50, 2)],
                     deleted=frozenset({1, 3})))
    schema = [_column("a", "int", "int64"), _column("b", "str", "string"),
              _column("blob", "bytes", "binary")]
    rows = [[i // 3, f"p{i % 3}", bytes([65 + i % 2]) * 3] for i in range(30)]
    out.append(Table("composite", KeySpec(("a", "b"), ("int", "str")), schema, rows, ("blob",),
                     use_list=True))
    only_key = [_column("id", "int", "int64")]
    out.append(Table("only the key", KeySpec(("id",), ("int",)), only_key,
                     [[k] for k in (-(2**63), -1, 0, 5, 2**63 - 1)]))
    out.append(Table("empty", KeySpec(("id",), ("int",)), only_key + [_column("word", "str", "string")], []))
    out.append(Table("one", KeySpec(("raw",), ("bytes",)),
                     [_column("raw", "bytes", "binary"), _column("word", "str", "string")],
                     [[b"k", "alpha"]], ("word",)))
    return out


# -- a case: the valid file, what it answers, and what to ask ---------------------------------


class Case:
    """A table written as a format-2 base (and its overlay), with the undamaged answers."""

    def __init__(self, table: Table, path: Path, overlay: Path | None, answers: dict[str, Any]) -> None:
        self.table, self.path, self.overlay, self.answers = table, path, overlay, answers
        self.data = path.read_bytes()
        self.asked: list[Any] = answers["asked"]
        self.finds: list[tuple[str, Any]] = answers["finds"]
        self.header, _ = split_state(self.data)
        self.sections = compact_sections(self.data)

    def __repr__(self) -> str:
        return f"Case({self.table!r})"

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


ABSENT = {"int": [0, -1, 2**63 - 1, -(2**63), 12345], "str": ["", "zz", "é"],
          "bytes": [b"", b"\x00", b"zz"], "composite": [(0, ""), (-1, "a"), (7, "é")]}


def _kind(spec: KeySpec) -> str:
    return "composite" if spec.composite else spec.parts[0]


def _canonical(sf: StateFile) -> list[bytes]:
    """The canonical bytes of every record of ``sf`` (what format 1 would hold), sorted."""
    heap, starts, lengths = sf.canonical(sf.occupied())
    return sorted(heap[a:a + n].tobytes() for a, n in zip(starts.tolist(), lengths.tolist(), strict=True))


def make_case(folder: Path, table: Table) -> Case:
    """Write ``table`` into ``folder`` (format 2, and its overlay) and read its answers."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base"
    write_rows(path, key=table.key, schema=table.schema, rows=table.rows,
               slot_keys=table.slot_keys(table.rows), index_fields=table.index_fields,
               use_list=table.use_list, format=2)
    overlay = None
    if table.overlay is not None:
        overlay = folder / "overlay"
        write_rows(overlay, key=table.key, schema=table.schema, rows=table.overlay,
                   slot_keys=table.slot_keys(table.overlay), kind="overlay",
                   index_fields=table.index_fields, tombstones=table.deleted,
                   use_list=table.use_list)
    files = [StateFile(path)] if overlay is None else [StateFile(overlay), StateFile(path)]
    for sf in files:
        sf.verify(records=True)
    state = State(files)
    keys = [table.key_of(r) for r in table.rows + (table.overlay or [])]
    keys = keys[:24] + keys[24::max(1, len(keys) // 16)]  # at most 40 or so
    asked = list({repr(k): k for k in keys + ABSENT[_kind(table.key)]}.values())
    finds = [(f, v) for f in table.index_fields
             for v in {repr(r[table.names.index(f)]): r[table.names.index(f)]
                       for r in table.rows[:6]}.values()]
    answers = {
        "asked": asked,
        "finds": finds,
        "get": [repr(state.get(k)) for k in asked],
        "find": [sorted(map(repr, state.find(f, v))) for f, v in finds],
        "solo keys": [repr(k) for k in State(files[-1:])],
        "pairs": sorted(repr((k, tuple(r))) for k, r in State(files[-1:]).items()),
        "canonical": _canonical(files[-1]),
    }
    return Case(table, path, overlay, answers)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compact")


@pytest.fixture(scope="module")
def fixed(folder: Path) -> list[Case]:
    return [make_case(folder / f"fixed{i}", t) for i, t in enumerate(fixed_tables())]


@pytest.fixture(scope="module")
def cases(folder: Path, fixed: list[Case]) -> Callable[[st.DataObject], Case]:
    """``cases(data)``: a fixed case, or a drawn table written as one (over the last)."""
    def draw(data: st.DataObject) -> Case:
        if data.draw(st.integers(0, 3)) == 0:
            return data.draw(st.sampled_from(fixed))
        return make_case(folder / "drawn", data.draw(tables()))
    return draw


# -- the property ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def check(folder: Path) -> Iterator[Callable[[Case, bytes], str]]:
    """``check(case, damaged, role)``: write ``damaged`` to a fresh file and hold it to the
    property, served as the case's base (under its overlay, if it has one) or, with
    ``role="overlay"``, over the case's base."""
    counter = itertools.count()

    def run(case: Case, damaged: bytes, role: str = "base") -> str:
        path = folder / f"damaged{next(counter)}"
        path.write_bytes(damaged)
        tracemalloc.start()
        try:
            outcome = _exercise(path, case, damaged, role)
            if currently_in_test_context():
                event(outcome)
            return outcome
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            path.unlink()
            assert peak < ALLOCATION_BOUND, f"{peak} bytes allocated for a {len(damaged)}-byte file"

    yield run


def _refused(exc: IntegrityError) -> None:
    """What any refusal must be: an IntegrityError of feedkit's own, not a caught panic."""
    assert PANIC not in str(exc), exc
    cause = exc.__cause__
    while cause is not None:
        assert PANIC not in str(cause), cause
        cause = cause.__cause__


def _meaning(exc: IntegrityError) -> bool:
    """A lookup's failure on a value's meaning (an ext payload, an unhashable map key):
    what is left to fail after ``verify(records=True)``."""
    chain, cause = [], exc.__cause__
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    return ("unreadable msgpack ext value" in str(exc)
            or any(isinstance(c, TypeError) or "unreadable msgpack ext value" in str(c) for c in chain))


class Lookups:
    """Runs lookups, letting only IntegrityError through (and KeyTypeError, for the
    undamaged file's keys asked of a file whose key changed), and notes how they failed."""

    def __init__(self, verified: bool, strict: bool, key_changed: bool) -> None:
        self.verified, self.strict, self.key_changed = verified, strict, key_changed
        self.failed = False

    def __call__(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except KeyTypeError:
            if not self.key_changed:
                raise
            self.failed = True
            return None
        except IntegrityError as exc:
            _refused(exc)
            message = str(exc)
            if self.verified:
                assert not any(f in message for f in TABLE_FAULTS), f"after verify: {message}"
            if self.strict:
                assert _meaning(exc), f"after verify(records=True): {message}"
            self.failed = True
            return None


def _exercise(path: Path, case: Case, damaged: bytes, role: str) -> str:
    try:
        sf = StateFile(path)
    except IntegrityError as exc:
        _refused(exc)
        assert str(path) in str(exc)  # the message names the file
        return "refused on open"
    if role == "overlay":
        files = [sf, StateFile(case.path)]
    else:
        files = [sf] if case.overlay is None else [StateFile(case.overlay), sf]
    key_changed = files[0].spec != case.table.key
    _lookups(sf, files, case, Lookups(verified=False, strict=False, key_changed=key_changed))
    # Both checks, each on its own: the loader asks records=True of a download directly.
    passed = {}
    for records in (False, True):
        try:
            sf.verify(records=records)
            passed[records] = True
        except IntegrityError as exc:
            _refused(exc)
            assert str(path) in str(exc)
            passed[records] = False
    assert passed[False] or not passed[True], "verify(records=True) passed what verify() refused"
    if not passed[False]:
        return "refused by verify"
    _lookups(sf, files, case, Lookups(verified=True, strict=False, key_changed=key_changed))
    if not passed[True]:
        return "refused by verify(records=True)"
    run = Lookups(verified=True, strict=True, key_changed=key_changed)
    answered = _lookups(sf, files, case, run)
    if run.failed or answered is None:
        return "accepted, a value refused"
    if role == "base":
        _agree(sf, case, damaged, *answered)
    return "accepted"


def _lookups(sf: StateFile, files: list[StateFile], case: Case, run: Lookups) -> tuple[State, State] | None:
    """Every lookup form over the state ``files`` (``sf`` among them), and the vectorised
    accessors merges use over ``sf``."""
    state = run(lambda: State(files))
    solo = run(lambda: State([sf]))
    if state is None or solo is None:
        return None
    for key in case.asked:
        rec = run(lambda key=key: state.get(key))
        assert rec is None or isinstance(rec, state.Record)
        run(lambda key=key: key in state)
    run(lambda: state.get_many(case.asked))
    if state.spec.slot_kind == "int":
        run(lambda: state.get_many(np.array(case.asked, dtype=np.int64)))
    for s in (state, solo):
        run(lambda s=s: list(s.keys()))
        run(lambda s=s: list(s.items()))
    for field, value in case.finds:
        run(lambda field=field, value=value: state.find(field, value))
    occupied = sf.occupied()
    assert ((occupied >= 0) & (occupied < sf.slot_count - 1)).all()
    starts, lengths = sf.record_ranges(occupied)
    assert ((lengths >= 0) & (starts >= sf.heap_offset) & (starts + lengths <= sf.heap_end)).all()
    run(lambda: sf.canonical(occupied))
    for name in sf.header["indexes"]:
        hashes = sf.index_hashes(name)
        assert len(hashes) == sf.slot_count
        for value in [None, "alpha", 1, *hashes[:3].tolist()]:
            posted = sf.postings(name, value if isinstance(value, int) else value_hash(value))
            assert len(posted) <= sf.header["indexes"][name]["count"]
    return state, solo


def _same(a: bytes, b: bytes, sections: list[Section], names: Callable[[str], bool]) -> bool:
    return all(a[at:at + s.width] == b[at:at + s.width]
               for s in sections if names(s.name) for at in s.at)


def _agree(sf: StateFile, case: Case, damaged: bytes, state: State, solo: State) -> None:
    """On a file that passed ``verify(records=True)``, and whose lookups all answered."""
    # The lookups agree with each other, entry by entry.
    n = sf.slot_count - 1
    items = list(solo.items())
    assert len(items) == n
    assert [repr(k) for k in solo] == [repr(k) for k, _ in items]
    slot_keys = sf.slot_keys(np.arange(n)).tolist()
    heap, starts, lengths = sf.canonical(np.arange(n))
    for j, (key, rec) in enumerate(items):
        raw = heap[starts[j]:starts[j] + lengths[j]].tobytes()
        assert repr(tuple(unpack_record(raw, sf.header["use_list"]))) == repr(tuple(rec)), j
        try:
            slot_key = sf.spec.slot_key(key, sf.feed)
        except KeyTypeError:  # a damaged key field holding no key at all
            continue
        if slot_key != slot_keys[j]:
            continue  # a damaged key field naming another key
        # the entry's own key finds it (the directory and the order say where)
        assert repr(solo.get(key)) == repr(rec), (j, key)
        assert repr(solo.get_many([key])) == repr([rec])
    got = [repr(state.get(k)) for k in case.asked]
    assert [repr(r) for r in state.get_many(case.asked)] == got
    for (field, value), found in zip(case.finds, [state.find(f, v) for f, v in case.finds], strict=True):
        pos = state.names.index(field)
        served = {repr(r) for _, r in state.items()}
        assert all(r[pos] == value and repr(r) in served for r in found), (field, value)

    # What the damage left alone answers as the undamaged file did.
    if len(damaged) != len(case.data):
        return
    original = case.data
    header_length = struct.unpack_from("<I", original, 12)[0]
    records_intact = (damaged[8:32] == original[8:32]  # the prefix's numbers and the header
                      and damaged[PREFIX_SIZE:PREFIX_SIZE + header_length]
                      == original[PREFIX_SIZE:PREFIX_SIZE + header_length]
                      and _same(damaged, original, case.sections,
                                lambda s: s == "heap" or s == "entry offsets" or s.startswith("dictionary")))
    if not records_intact:
        return
    keys = case.section("entry keys")
    assert keys is not None
    moved = {j for j in range(len(keys.at)) if keys.get(damaged, j) != keys.get(original, j)}
    solo_keys = {repr(k) for k in solo}
    original_keys = case.answers["solo keys"]
    for key, want, answer in zip(case.asked, case.answers["get"], got, strict=True):
        r = repr(key)
        if r in original_keys and original_keys.index(r) not in moved:
            assert answer == want, key  # its entry and its record are the undamaged file's
        elif r not in original_keys and r not in solo_keys:
            assert answer == want, key  # the overlay's answer, or none
    if not moved and _same(damaged, original, case.sections, lambda s: s.startswith("index")):
        assert [sorted(map(repr, state.find(f, v))) for f, v in case.finds] == case.answers["find"]


# -- damage -------------------------------------------------------------------------------------

WORD_VALUES = [0, 1, 2, 3, 7, 8, 0x7F, 0x80, 0x90, 0x9F, 0xC0, 0xC1, 0xCC, 0xCD, 0xD9, 0xDC,
               0xDD, 0xFF, 0xFFFF, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


@st.composite
def word_damage(draw: st.DrawFn, section: Section) -> Callable[[bytearray], None]:
    """One change to a word of ``section``: set, nudged, copied from or swapped with another
    word of it, or a bit flipped."""
    kind = draw(st.sampled_from(["set", "nudge", "copy", "swap", "flip"]))
    i = draw(st.integers(0, len(section.at) - 1))
    j = draw(st.integers(0, len(section.at) - 1))
    if kind == "set":
        value = draw(st.sampled_from(WORD_VALUES) | st.integers(0, 2 ** (8 * section.width) - 1))
        return lambda d: section.put(d, i, value)
    if kind == "nudge":
        delta = draw(st.sampled_from([-16, -8, -4, -2, -1, 1, 2, 4, 8, 16]))
        return lambda d: section.put(d, i, section.get(d, i) + delta)
    if kind == "copy":
        return lambda d: section.put(d, i, section.get(d, j))
    if kind == "swap":
        def swap(d: bytearray) -> None:
            a, b = section.get(d, i), section.get(d, j)
            section.put(d, i, b)
            section.put(d, j, a)
        return swap
    bit = draw(st.integers(0, 8 * section.width - 1))

    def flip(d: bytearray) -> None:
        d[section.at[i] + bit // 8] ^= 1 << (bit % 8)
    return flip


def _as_written(table: Table) -> list[str]:
    """The (key, record) pairs a table's rows should read back as (arrays as tuples unless
    the feed uses lists)."""
    def convert(v: Any) -> Any:
        if isinstance(v, list):
            return [convert(x) for x in v] if table.use_list else tuple(convert(x) for x in v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v
    return sorted(repr((table.key_of(r), tuple(convert(v) for v in r))) for r in table.rows)


def test_the_fixed_tables_are_valid_and_answer(fixed: list[Case], check: Any) -> None:
    """Every fixed table verifies and answers as written, its canonical records the bytes
    format 1 holds; together they code columns every way, with ids of 1 to 10 bits: the
    fuzzing starts from real, varied files."""
    codings, bits = set(), set()
    for case in fixed:
        assert check(case, case.data) == "accepted", case
        for column in case.header["columns"]:
            codings.add(column["coding"])
            bits.add(column.get("bits"))
        if case.table.overlay is None:
            assert case.answers["pairs"] == _as_written(case.table), case
        assert case.answers["canonical"] == sorted(map(pack_value, case.table.rows)), case
    assert codings == {"plain", "key", "dict", "elements"}
    assert {1, 2, 10} <= bits


@fuzz_settings(10)
@given(st.data())
def test_drawn_tables_are_valid_and_answer(folder: Path, cases: Any, check: Any,
                                           data: st.DataObject) -> None:
    """The drawn tables too (so the undamaged answers the properties compare with are right)."""
    case = make_case(folder / "undamaged", data.draw(tables()))
    for column in case.header["columns"]:
        event(f"coding {column['coding']}" + (f", {column['bits']} bits" if "bits" in column else ""))
    assert check(case, case.data) == "accepted"
    assert case.answers["pairs"] == _as_written(case.table)
    assert case.answers["canonical"] == sorted(map(pack_value, case.table.rows))


@fuzz_settings(80)
@given(st.data())
def test_damaged_sections(cases: Any, check: Any, data: st.DataObject) -> None:
    """A word or byte of one section (entry keys, record offsets, the directory, the heap's
    coded fields, a dictionary's offsets or values, an index table or its postings)
    damaged one to three times, re-sealed mostly."""
    case = cases(data)
    section = data.draw(st.sampled_from(case.sections))
    event(section.name.split(" ", 2)[0] + " " + section.name.rsplit(" ", 1)[-1])
    damaged = bytearray(case.data)
    for change in data.draw(st.lists(word_damage(section), min_size=1, max_size=3)):
        change(damaged)
    sealed = data.draw(st.integers(0, 4)) > 0
    check(case, fix_checksum(bytes(damaged)) if sealed else bytes(damaged))


@fuzz_settings(50)
@given(st.data())
def test_header_numbers(cases: Any, check: Any, data: st.DataObject) -> None:
    """Header fields (entries, buckets, heap, each column's coding and dictionary, the
    indexes) nudged by a few, replaced by huge, negative or ill-typed values, or removed;
    re-sealed mostly."""
    case = cases(data)
    header = case.header
    how = data.draw(st.sampled_from(["nudge", "replace", "columns"]))
    if how == "nudge":
        numbers = [p for p in leaf_paths(header) if type(_at(header, p)) is int]
        edits = [(p, _at(header, p) + data.draw(st.sampled_from([-64, -8, -4, -1, 1, 4, 8, 64])),
                  False) for p in data.draw(st.lists(st.sampled_from(numbers), min_size=1, max_size=2))]
        edited = apply_edits(header, edits)
    elif how == "replace":
        edited = apply_edits(header, data.draw(json_edits(header)))
    else:
        edited = data.draw(column_edits(header))
    _, body = split_state(case.data)
    digest = None if data.draw(st.integers(0, 4)) > 0 else case.data[32:48]
    check(case, join_state(edited, body, like=case.data, digest=digest))


@st.composite
def column_edits(draw: st.DrawFn, header: dict[str, Any]) -> dict[str, Any]:
    """A header whose columns changed consistently enough to open: one dropped (from the
    schema and, in format 2, its codings), one added, a coding changed, a dictionary's
    numbers copied from another column's (two columns sharing, or overlapping, one)."""
    doc = json.loads(json.dumps(header))
    schema, columns = doc["schema"], doc.get("columns")
    i = draw(st.integers(0, len(schema) - 1))
    how = draw(st.sampled_from(["drop", "add", "coding", "share"]))
    if how == "drop":
        del schema[i]
        if columns is not None:
            del columns[i]
    elif how == "add":
        schema.insert(i, {"name": "extra", "kind": "int", "type": "int64", "nullable": True})
        if columns is not None:
            columns.insert(i, draw(st.sampled_from(columns)))
    elif columns is not None and how == "coding":
        columns[i]["coding"] = draw(st.sampled_from(["plain", "key", "dict", "elements"]))
        if columns[i]["coding"] in ("dict", "elements"):
            coded = [c for c in columns if "offset" in c]
            if coded:
                columns[i].update({k: v for k, v in draw(st.sampled_from(coded)).items()
                                   if k != "coding"})
            columns[i].setdefault("bits", draw(st.integers(1, 32)))
    elif columns is not None:
        coded = [c for c in columns if "offset" in c]
        if coded:
            source = draw(st.sampled_from(coded))
            columns[i].update(source)
            if draw(st.booleans()):
                columns[i]["offset"] += 4 * draw(st.integers(1, 2))  # inside the other one
                columns[i]["values"] = max(0, columns[i]["values"] - 2)
    return doc  # type: ignore[no-any-return]


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@fuzz_settings(40)
@given(st.data())
def test_damaged_bytes(cases: Any, check: Any, data: st.DataObject) -> None:
    """Flipped, truncated, spliced files anywhere; and files extended, with their prefix's
    size (and checksum) made to match."""
    case = cases(data)
    if data.draw(st.booleans()):
        damaged = data.draw(byte_mutations())(case.data)
    else:
        damaged = case.data + data.draw(st.binary(min_size=1, max_size=80))
        if data.draw(st.booleans()):
            damaged = damaged[:24] + struct.pack("<Q", len(damaged)) + damaged[32:]
    check(case, fix_checksum(damaged) if data.draw(st.booleans()) else damaged)


@fuzz_settings(20)
@given(st.data())
def test_prefix_fields(cases: Any, check: Any, data: st.DataObject) -> None:
    """The prefix's format, header length, body offset and file size."""
    case = cases(data)
    fields = list(struct.unpack_from("<8sIIQQ16s", case.data))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.sampled_from([1, 2, 3, 4]))
        limit = 2**32 if i < 3 else 2**64
        fields[i] = data.draw(st.sampled_from(HUGE_INTS) | st.integers(0, limit - 1)) % limit
    check(case, struct.pack("<8sIIQQ16s", *fields) + case.data[48:])


@fuzz_settings(30)
@given(st.data())
def test_a_damaged_overlay_over_a_compact_base(fixed: list[Case], check: Any,
                                               data: st.DataObject) -> None:
    """The overlay (format 1) of a compact base damaged: its header edited, or its bytes."""
    case = next(c for c in fixed if c.overlay is not None)
    assert case.overlay is not None
    overlay = case.overlay.read_bytes()
    how = data.draw(st.sampled_from(["replace", "columns", "bytes"]))
    if how != "bytes":
        header, body = split_state(overlay)
        edited = (apply_edits(header, data.draw(json_edits(header))) if how == "replace"
                  else data.draw(column_edits(header)))
        damaged = join_state(edited, body, like=overlay)
    else:
        damaged = fix_checksum(data.draw(byte_mutations())(overlay))
    check(case, damaged, "overlay")
