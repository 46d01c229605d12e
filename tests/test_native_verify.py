"""The refresh path's compiled code against its numpy oracles, on random files.

``StateFile.verify`` (native/core/src/verify.rs) must accept exactly the files
``tests.oracles.write.verify_py`` accepts, and refuse the others with the same message; with
``records=True`` it also refuses a file with a record that does not decode, as the
walker below (an independent msgpack reader following the decoder's rules) says.
``apply_delta`` and ``compact`` (native/core/src/merge.rs) must give the record counts,
digests and files their numpy versions give, and those must be the truth: a model of
the state kept as a dict of rows.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import event, given
from hypothesis import strategies as st

from feedkit import IntegrityError, _native
from feedkit.codec import pack_value
from feedkit.format import PREFIX_SIZE, RecordSet, StateFile, write_state
from feedkit.keys import M64, KeySpec, value_hash
from feedkit.merge import _numpy_columns, _record_set, _unshadowed, apply_delta, compact
from tests.fuzz.support import (
    HUGE_INTS,
    Seed,
    byte_mutations,
    fix_checksum,
    fuzz_settings,
    join_state,
    split_state,
    state_seeds,
)
from tests.oracles.merge import delta_effect_py, unshadowed_py
from tests.oracles.write import verify_py

MAX_DEPTH = 256  # native/src/decode.rs: containers nested deeper in a value are damage


# -- random state files ---------------------------------------------------------------------

Row = list[Any]
TOMB = None  # a tombstone in an overlay's rows


def _schema(width: int) -> list[dict[str, Any]]:
    kinds = ["str", "int", "float", "list"]
    return [{"name": "k", "kind": "int", "type": "int64", "nullable": False}] + [
        {"name": f"c{i}", "kind": kinds[i % 4], "type": "x", "nullable": True}
        for i in range(1, width)]


def slot_key(key: Any) -> int:
    return key if isinstance(key, int) else xxhash.xxh3_64_intdigest(key.encode())


def write(path: Path, rows: dict[Any, Row | None], *, width: int, kind: str = "base",
          index: bool = False, state: dict[Any, Row] | None = None,
          str_keys: bool | None = None) -> StateFile:
    """A state file of ``rows`` (None: a tombstone), its header's record count and digest
    those of ``state`` (the whole state at its version; ``rows`` by default); str keys
    if ``str_keys`` (by default: if the first key is a str)."""
    state = {k: r for k, r in rows.items() if r is not None} if state is None else state
    keys = list(rows)
    if str_keys is None:
        str_keys = bool(keys) and isinstance(keys[0], str)
    records = [b"\xc0" if rows[k] is None else pack_value(rows[k]) for k in keys]
    lengths = np.array([len(r) for r in records], dtype=np.int64)
    spec = KeySpec(("k",), ("str" if str_keys else "int",))
    schema = _schema(width)
    if str_keys:
        schema[0] = {"name": "k", "kind": "str", "type": "string", "nullable": False}
    fields = ["c1"] if index and width > 1 else []
    header = {"feed": "t.native", "version": 9 if kind == "overlay" else 5, "kind": kind,
              "key": spec.to_json(), "schema": schema, "index_fields": fields,
              "use_list": True, "record_count": len(state),
              "state_digest": f"{truth_digest(state):016x}"}
    if kind == "overlay":
        header["base_version"] = 5
    tomb = np.array([rows[k] is None for k in keys], dtype=bool)
    write_state(path, header, RecordSet(
        keys=np.array([slot_key(k) for k in keys], dtype=np.uint64 if str_keys else np.int64),
        starts=np.cumsum(lengths) - lengths, lengths=lengths,
        sources=[np.frombuffer(b"".join(records) or b"\0", dtype=np.uint8)],
        tombstone=tomb if tomb.any() else None,
        index_hashes={f: np.array([0 if rows[k] is None else value_hash(rows[k][1]) for k in keys],
                                  dtype=np.uint64) for f in fields}))
    return StateFile(path)


def truth_digest(state: dict[Any, Row]) -> int:
    return sum(xxhash.xxh3_64_intdigest(pack_value(r)) for r in state.values()) & M64


values = st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=6),
                   st.floats(allow_nan=False), st.lists(st.integers(-5, 500), max_size=3))


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 40) -> tuple[dict[Any, Row], int, bool]:
    """Rows by key (int or str keys), a width (1..20: array16 headers past 15), an index."""
    width = draw(st.integers(1, 20))
    str_keys = draw(st.booleans())
    keys = draw(st.lists(st.text(max_size=5) if str_keys
                         else st.integers(-(2**63), 2**63 - 1) | st.integers(-50, 50),
                         unique=True, max_size=max_rows))
    rows = {k: [k] + [draw(values) for _ in range(width - 1)] for k in keys}
    return rows, width, draw(st.booleans())


# -- the verify oracle for records=True --------------------------------------------------------

def decodes(record: bytes, width: int) -> bool:
    """Whether ``record`` is one msgpack array of ``width`` values with UTF-8 strings,
    nested at most MAX_DEPTH deep (fields at depth 0), and nothing after it."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(record):
            raise ValueError("ends early")
        pos += n
        return record[pos - n:pos]

    def size(width: int) -> int:
        return int.from_bytes(take(width), "big")

    def value(depth: int) -> None:
        b = take(1)[0]
        items = None
        if 0x80 <= b <= 0x8F:
            items = 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            items = b & 0x0F
        elif b in (0xDC, 0xDD):
            items = size(2 if b == 0xDC else 4)
        elif b in (0xDE, 0xDF):
            items = 2 * size(2 if b == 0xDE else 4)
        elif 0xA0 <= b <= 0xBF or 0xD9 <= b <= 0xDB:
            take(b & 0x1F if b <= 0xBF else size(1 << (b - 0xD9))).decode()
        elif 0xC4 <= b <= 0xC6:
            take(size(1 << (b - 0xC4)))
        elif 0xC7 <= b <= 0xC9:
            take(size(1 << (b - 0xC7)) + 1)
        elif 0xD4 <= b <= 0xD8:
            take(1 + (1 << (b - 0xD4)))
        elif b in (0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3):
            take({0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
                  0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}[b])
        elif b == 0xC1:
            raise ValueError("0xc1")
        if items is not None:
            if depth >= MAX_DEPTH:
                raise ValueError("too deep")
            for _ in range(items):
                value(depth + 1)

    try:
        head = take(1)[0]
        n = head & 0x0F if 0x90 <= head <= 0x9F else size(2) if head == 0xDC else -1
        if n != width:
            return False
        for _ in range(width):
            value(0)
        return pos == len(record)
    except (ValueError, UnicodeDecodeError):
        return False


def outcome(call: Any) -> str:
    try:
        call()
    except IntegrityError as exc:
        return str(exc)
    return "ok"


def live_records(sf: StateFile) -> Iterator[tuple[int, bytes]]:
    """(slot, bytes) of every live record of a file that passed ``verify_py``."""
    slots = sf.occupied()
    starts, lengths = sf.record_ranges(slots)
    for j, a, n in zip(slots.tolist(), starts.tolist(), lengths.tolist(), strict=True):
        if sf.mm[a] != 0xC0:
            yield j, sf.mm[a:a + n]


def agree(path: Path, data: bytes) -> str:
    """Write ``data`` at ``path``; if it opens, native and numpy verify must agree (with
    and without a handed-over digest), and records=True must agree with the walker."""
    path.write_bytes(data)
    try:
        sf = StateFile(path)
    except IntegrityError:
        return "refused on open"
    expected = outcome(lambda: verify_py(sf))
    assert outcome(sf.verify) == expected
    digest = xxhash.xxh3_128(data[PREFIX_SIZE:]).digest()
    assert outcome(lambda: sf.verify(digest)) == outcome(lambda: verify_py(sf, digest))
    deep = outcome(lambda: sf.verify(records=True))
    if expected != "ok":
        # Refused too: for the same reason, or for a record that does not decode, which
        # records=True checks while it walks the slots, before the indexes.
        assert deep == expected or "does not decode" in deep, (deep, expected)
        return "refused"
    width = len(sf.header["schema"])
    bad = [j for j, rec in live_records(sf) if not decodes(rec, width)]
    if bad:
        assert f"the record of slot {bad[0]} does not decode" in deep, deep
        return "refused by records=True"
    assert deep == "ok"
    return "accepted"


# -- verify ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    return state_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("files")
    counter = itertools.count()
    yield lambda: folder / f"f{next(counter)}"


def test_valid_files_pass_both(seeds: list[Seed], scratch: Any) -> None:
    for seed in seeds:
        assert agree(scratch(), seed.data) == "accepted", seed.name


@fuzz_settings(300)
@given(st.data())
def test_damaged_seeds(seeds: list[Seed], scratch: Any, data: st.DataObject) -> None:
    """Flipped, truncated, spliced seeds, the checksum repaired or not."""
    seed = data.draw(st.sampled_from(seeds))
    damaged = data.draw(byte_mutations())(seed.data)
    if data.draw(st.booleans()):
        damaged = fix_checksum(damaged)
    event(agree(scratch(), damaged))


@fuzz_settings(300)
@given(st.data())
def test_damaged_body_words(seeds: list[Seed], scratch: Any, data: st.DataObject) -> None:
    """Slot keys, offsets, value-table words and postings set to extreme values behind a
    valid checksum: only the structural checks can refuse them."""
    seed = data.draw(st.sampled_from(seeds))
    header, body = split_state(seed.data)
    words = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(words) // 4 - 1)) * 4
        if data.draw(st.booleans()) and at + 8 <= len(words):
            value = data.draw(st.sampled_from(HUGE_INTS) | st.integers(-(2**63), 2**64 - 1))
            struct.pack_into("<Q", words, at - at % 8, value % 2**64)
        else:  # a 32-bit posting, or half of a word
            struct.pack_into("<I", words, at, data.draw(st.integers(0, 2**32 - 1)))
    event(agree(scratch(), join_state(header, bytes(words), like=seed.data)))


@fuzz_settings(150)
@given(tables(), st.data())
def test_random_files_and_their_damage(scratch: Any, table: Any, data: st.DataObject) -> None:
    """Random tables (int and str keys, widths 1-20, an index or none), valid, then with
    their slots, records or heap bytes damaged behind a repaired checksum."""
    rows, width, index = table
    path = scratch()
    write(path, rows, width=width, index=index)
    data_ = path.read_bytes()
    assert agree(scratch(), data_) == "accepted"
    header, body = split_state(data_)
    body_offset = struct.unpack_from("<Q", data_, 16)[0]
    heap = header["heap"]["offset"]
    damaged = bytearray(body)
    where = data.draw(st.sampled_from(["offset", "key", "heap", "anywhere"]))
    for _ in range(data.draw(st.integers(1, 3))):
        if where in ("offset", "key"):
            slot = data.draw(st.integers(0, header["slots"]["count"] - 1))
            at = 16 * slot + (8 if where == "offset" else 0)
            old = struct.unpack_from("<q", damaged, at)[0]
            new = data.draw(st.sampled_from([old + 1, old - 1, 0, -1, 2**63 - 1, -(2**63),
                                             body_offset + heap, body_offset + heap - 1])
                            | st.integers(-(2**63), 2**63 - 1))
            struct.pack_into("<q", damaged, at, max(-(2**63), min(2**63 - 1, new)))
        elif where == "heap" and header["heap"]["length"]:
            at = heap + data.draw(st.integers(0, header["heap"]["length"] - 1))
            damaged[at] = data.draw(st.sampled_from([0xC0, 0xC1, 0xFF, 0x90, 0xDC, 0xD9, 0xA5])
                                    | st.integers(0, 255))
        else:
            at = data.draw(st.integers(0, len(damaged) - 1))
            damaged[at] ^= data.draw(st.integers(1, 255))
    event(f"{where}: {agree(scratch(), join_state(header, bytes(damaged), like=data_))}")


def test_wrapping_offsets_are_refused_by_both(scratch: Any) -> None:
    """Offsets that ascend only modulo 2**64 (an int64 subtraction of them wraps) are not
    ascending: the numpy oracle compares instead of subtracting, as the native code does."""
    path = scratch()
    write(path, {1: [1, "a"], 2: [2, "b"]}, width=2)
    data = path.read_bytes()
    header, body = split_state(data)
    words = bytearray(body)
    struct.pack_into("<q", words, 16 * 1 + 8, 2**63 - 10)  # key 1's record starts near the top
    struct.pack_into("<q", words, 16 * 2 + 8, -(2**63) + 5)  # and key 2's "after" it
    msg = agree(scratch(), join_state(header, bytes(words), like=data))
    assert msg == "refused"


def test_a_base_holding_a_tombstone_is_refused(scratch: Any) -> None:
    path = scratch()
    write(path, {1: [1, "a"], 2: None}, width=2, kind="overlay")
    header, body = split_state(path.read_bytes())
    header["kind"] = "base"
    del header["base_version"]
    p = scratch()
    p.write_bytes(join_state(header, body, like=path.read_bytes()))
    sf = StateFile(p)
    with pytest.raises(IntegrityError, match="a tombstone in a base file"):
        sf.verify()
    with pytest.raises(IntegrityError, match="a tombstone in a base file"):
        verify_py(sf)


def test_records_true_refuses_what_lookups_could_not_decode(seeds: list[Seed],
                                                           scratch: Any) -> None:
    """A record with a byte msgpack never uses, behind a valid checksum: ``verify()``
    passes (its lookups raise IntegrityError, tests/fuzz), ``verify(records=True)`` refuses."""
    seed = seeds[0]
    path = scratch()
    path.write_bytes(seed.data)
    sf = StateFile(path)
    slot = int(sf.probe_many(np.array([42]))[0])
    start = int(sf.record_ranges(np.array([slot]))[0][0])
    damaged = bytearray(seed.data)
    damaged[start + 2] = 0xC1
    path.write_bytes(fix_checksum(bytes(damaged)))
    sf = StateFile(path)
    sf.verify()
    with pytest.raises(IntegrityError, match=f"{path}: the record of slot {slot} does not decode"):
        sf.verify(records=True)
    # nesting as deep as the decoder allows passes, one level more does not
    for levels in (MAX_DEPTH, MAX_DEPTH + 1):
        deep: Any = []
        for _ in range(levels - 1):
            deep = [deep]
        sf = write(scratch(), {1: [1, deep]}, width=2)
        assert outcome(sf.verify) == "ok"  # the array header is right
        said = outcome(lambda sf=sf: sf.verify(records=True))
        assert (said == "ok") if levels == MAX_DEPTH else ("does not decode" in said), said


def test_verify_refuses_a_buffer_that_is_not_read_only(scratch: Any) -> None:
    """The native code reads files with the GIL released: only memory no Python code can
    write to is accepted (a read-only mmap)."""
    path = scratch()
    sf = write(path, {1: [1, "a"]}, width=2)
    args = bytearray(sf.mm)
    with pytest.raises(TypeError, match="read-only"):
        _native.verify_state(args, sf.count, sf.tombstones, 2, [], None, False)


# -- apply_delta and compact -------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[Any, list[dict[Any, Row | None]]]:
    """A base table and two deltas (rows by key, None: delete), keys old and new."""
    (rows, width, index) = draw(tables(max_rows=30))
    str_keys = bool(rows) and isinstance(next(iter(rows)), str)
    fresh = st.text(max_size=5) if str_keys else st.integers(-100, 100)
    deltas = []
    known = list(rows)
    for _ in range(2):
        keys = draw(st.lists(st.sampled_from(known) | fresh if known else fresh,
                             unique=True, max_size=12))
        delta: dict[Any, Row | None] = {}
        for k in keys:
            delta[k] = None if draw(st.booleans()) else [k] + [draw(values)
                                                             for _ in range(width - 1)]
        deltas.append(delta)
        known = list(dict.fromkeys(known + keys))
    return (rows, width, index, str_keys), deltas


def _python_records(files: list[StateFile], delta: StateFile) -> RecordSet:
    """apply_delta's records through the numpy oracle."""
    parts: list[tuple[StateFile, np.ndarray]] = [(delta, delta.occupied())]
    if len(files) == 2:
        parts.append((files[0], unshadowed_py(delta, files[0])))
    return _record_set(parts, list(files[-1].header["index_fields"]), drop_tombstones=False,
                       columns=_numpy_columns)


@fuzz_settings(120)
@given(histories())
def test_apply_delta_and_compact_match_numpy_and_the_truth(tmp_path_factory: Any,
                                                           history: Any) -> None:
    (rows, width, index, str_keys), deltas = history
    folder = tmp_path_factory.mktemp("merge")
    state = dict(rows)
    base = write(folder / "base", rows, width=width, index=index, str_keys=str_keys)
    files = [base]
    for n, delta_rows in enumerate(deltas):
        for k, r in delta_rows.items():
            if r is None:
                state.pop(k, None)
            else:
                state[k] = r
        delta = write(folder / f"delta{n}", delta_rows, width=width, kind="overlay",
                      index=index, state=state, str_keys=str_keys)
        delta.verify(records=True)
        native = _native.delta_effect([sf.table_args() for sf in files], delta.table_args())
        assert native == delta_effect_py(files, delta)
        records = apply_delta(files, delta, len(state), truth_digest(state))
        with pytest.raises(IntegrityError, match="the manifest says"):
            apply_delta(files, delta, len(state) + 1, truth_digest(state))
        with pytest.raises(IntegrityError, match="the manifest says"):
            apply_delta(files, delta, len(state), truth_digest(state) ^ 1)
        header = {**{k: base.header[k] for k in ("feed", "key", "schema", "index_fields",
                                                  "use_list")},
                  "version": 10 + n, "kind": "overlay", "base_version": 5,
                  "record_count": len(state), "state_digest": f"{truth_digest(state):016x}"}
        write_state(folder / f"o{n}", header, records)
        write_state(folder / f"p{n}", header, _python_records(files, delta))
        assert (folder / f"o{n}").read_bytes() == (folder / f"p{n}").read_bytes()
        if len(files) == 2:
            assert _unshadowed(delta, files[0]).tolist() == unshadowed_py(delta, files[0]).tolist()
        files = [StateFile(folder / f"o{n}"), base]
        files[0].verify(records=True)
    # compaction: the truth, and what the numpy oracle keeps of the base
    overlay = files[0]
    assert _unshadowed(overlay, base).tolist() == unshadowed_py(overlay, base).tolist()
    rs = compact(files)
    header = {**{k: base.header[k] for k in ("feed", "key", "schema", "index_fields",
                                              "use_list")},
              "version": 12, "kind": "base", "record_count": len(state),
              "state_digest": f"{truth_digest(state):016x}"}
    write_state(folder / "compacted", header, rs)
    python = _record_set([(overlay, overlay.occupied()), (base, unshadowed_py(overlay, base))],
                         list(base.header["index_fields"]), drop_tombstones=True,
                         columns=_numpy_columns)
    write_state(folder / "compacted-py", header, python)
    assert (folder / "compacted").read_bytes() == (folder / "compacted-py").read_bytes()
    sf = StateFile(folder / "compacted")
    sf.verify(records=True)
    slots = sf.occupied()
    starts, lengths = sf.record_ranges(slots)
    got = sorted(bytes(sf.mm[a:a + n]) for a, n in zip(starts.tolist(), lengths.tolist(),
                                                       strict=True))
    assert got == sorted(pack_value(r) for r in state.values())


def test_apply_delta_over_a_damaged_cached_file_is_an_integrity_error(tmp_path: Path) -> None:
    """Cached files are not verified again when a consumer restarts: a probe that meets a
    damaged table raises IntegrityError naming the feed and the files (the loader then
    fetches the nearest snapshot), never a wrong merge."""
    def damaged(path: Path, sf: StateFile) -> StateFile:
        data = bytearray(path.read_bytes())
        for j in range(sf.slot_count):  # every slot holds key 5: no empty slot ends a probe
            struct.pack_into("<q", data, sf.body_offset + 16 * j, 5)
        path.unlink()  # the old mapping keeps its inode
        path.write_bytes(bytes(data))
        return StateFile(path)

    rows = {k: [k, f"v{k}"] for k in range(20)}
    base = write(tmp_path / "base", rows, width=2)
    delta = write(tmp_path / "delta", {3: [3, "x"]}, width=2, kind="overlay", state=rows)
    with pytest.raises(IntegrityError, match=r"feed 't.native': applying delta 5->9 \(.*base"):
        apply_delta([damaged(tmp_path / "base", base)], delta, 20, 0)
    base = write(tmp_path / "base2", rows, width=2)
    with pytest.raises(IntegrityError, match="compacting"):
        compact([damaged(tmp_path / "delta", delta), base])


def test_compacting_over_a_lying_cached_base_is_refused(tmp_path: Path) -> None:
    """A cached base whose records are not its state's (behind a valid checksum, so
    verify passes it) is not rewritten into a base that would pass verify too: compact
    checks the records' count and digest against the state's."""
    truth = {1: (1, "a"), 2: (2, "B")}
    overlay = write(tmp_path / "o", {2: (2, "B")}, width=2, kind="overlay", state=truth)
    honest = write(tmp_path / "b", {1: (1, "a"), 2: (2, "b")}, width=2)
    rs = compact([overlay, honest])
    assert len(rs) == 2
    lying = write(tmp_path / "lying", {1: (1, "x"), 2: (2, "b")}, width=2,
                  state={1: (1, "a"), 2: (2, "b")})
    lying.verify(records=True)  # nothing a reader checks is wrong with it alone
    with pytest.raises(IntegrityError, match=r"t\.native.*compacting.*2 records \(digest"):
        compact([overlay, lying])
