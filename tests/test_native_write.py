"""The compiled writer and diff against their numpy oracles (issue 12).

``write_state`` (native/core/src/write.rs) must write the very bytes
``tests.oracles.write.write_state_py`` writes for the same RecordSet, and ``merge.diff``,
``merge.present`` and ``merge.record_digest`` (native/core/src/diff.rs) must answer as
``diff_py``, ``present_py`` and ``record_digest_py`` (``tests/oracles/merge.py``) do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedkit import IntegrityError
from feedkit.format import RecordSet, StateFile, write_state
from feedkit.keys import KeySpec
from feedkit.merge import Diff, diff, present, record_digest
from tests.oracles.merge import diff_py, present_py, record_digest_py
from tests.oracles.write import write_state_py

from .fuzz.support import fuzz_settings

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SCHEMA = [{"name": "k", "kind": "int", "type": "int64", "nullable": False},
          {"name": "v", "kind": "bytes", "type": "binary", "nullable": True}]
INT_KEY = KeySpec(("k",), ("int",)).to_json()
HASH_KEY = KeySpec(("k",), ("bytes",)).to_json()


def header(key: dict[str, Any], kind: str, fields: list[str]) -> dict[str, Any]:
    # A non-ASCII value: the header is rendered with ensure_ascii either way.
    return {"feed": "t.native", "version": 7, "kind": kind, "key": key, "schema": SCHEMA,
            "index_fields": fields, "use_list": False, "record_count": 3,
            "state_digest": "00000000000000ff", "note": "caf\u00e9 \u2603"}


def record_set(keys: list[int], values: list[bytes], tomb: list[bool], hashes: dict[str, list[int]],
               dtype: Any, spread: bool, seed: int) -> RecordSet:
    """Records packed into one or more sources in a shuffled order, tombstones from a
    one-byte source of their own (as ``delta_records`` builds them)."""
    rng = np.random.default_rng(seed)
    n = len(keys)
    packed = [msgpack.packb([k if dtype == np.int64 else 0, v]) for k, v in zip(keys, values, strict=True)]
    n_sources = 2 if spread else 1
    source = rng.integers(0, n_sources, size=n).astype(np.uint8)
    starts = np.zeros(n, np.int64)
    lengths = np.array([len(p) for p in packed], np.int64)
    sources = []
    for s in range(n_sources):
        members = [i for i in rng.permutation(n).tolist() if source[i] == s]
        blob = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 5)), dtype=np.uint8).tobytes())
        for i in members:
            starts[i] = len(blob)
            blob += packed[i]
        sources.append(np.frombuffer(bytes(blob), dtype=np.uint8))
    tombstone = np.array(tomb, dtype=bool)
    if tombstone.any():
        sources.append(np.array([0xC0], np.uint8))
        source[tombstone] = len(sources) - 1
        starts[tombstone], lengths[tombstone] = 0, 1
    one_source = n_sources == 1 and not tombstone.any()
    return RecordSet(
        keys=np.array(keys, dtype=np.int64).astype(dtype) if n else np.empty(0, dtype),
        starts=starts, lengths=lengths, sources=sources,
        source=None if one_source else source,
        tombstone=tombstone if tombstone.any() else None,
        index_hashes={f: np.array(h, dtype=np.uint64) for f, h in hashes.items()})


def assert_same_file(tmp_path: Path, head: dict[str, Any], rs: RecordSet) -> bytes:
    rust, py = tmp_path / "rust.state", tmp_path / "py.state"
    full = write_state(rust, head, rs)
    assert full == write_state_py(py, head, rs)
    data = rust.read_bytes()
    assert data == py.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["py.state", "rust.state"]  # no temp file left
    assert rust.stat().st_mode & 0o777 == 0o600
    sf = StateFile(rust)
    sf.verify()
    assert sf.header == full
    return data


INT64S = st.integers(INT64_MIN, INT64_MAX)
# Keys that crowd the table: extremes, a dense run (low homes collide nowhere), strides
# of powers of two (low homes collide everywhere: fib wins) and the sentinel's values.
INT_KEYS = st.one_of(
    st.lists(INT64S, max_size=60, unique=True),
    st.lists(st.sampled_from([INT64_MIN, INT64_MIN + 1, INT64_MIN + 2, -1, 0, 1, INT64_MAX,
                              INT64_MAX - 1]), unique=True),
    st.builds(lambda a, n, step: [a + i * step for i in range(n)],
              st.integers(-1000, 1000), st.integers(0, 300), st.sampled_from([1, 2, 8, 64, 1 << 20])),
)
HASH_KEYS = st.lists(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 40),
                               st.integers(2**64 - 40, 2**64 - 1)), max_size=80, unique=True)
INDEX_VALUES = st.sampled_from([0, 1, 2, 3, 2**63, 2**64 - 1, 0xDEADBEEF, 1 << 61, 7 << 60])


@st.composite
def record_sets(draw: st.DrawFn) -> tuple[dict[str, Any], RecordSet]:
    hashed = draw(st.booleans())
    keys = draw(HASH_KEYS if hashed else INT_KEYS)
    keys = draw(st.permutations(keys))
    n = len(keys)
    values = draw(st.lists(st.binary(max_size=12), min_size=n, max_size=n))
    overlay = draw(st.booleans())
    tomb = draw(st.lists(st.booleans(), min_size=n, max_size=n)) if overlay else [False] * n
    fields = draw(st.sampled_from([[], ["v"], ["k", "v"]]))
    hashes = {f: draw(st.lists(INDEX_VALUES, min_size=n, max_size=n)) for f in fields}
    rs = record_set(keys if not hashed else [k - (1 << 64) if k >= 1 << 63 else k for k in keys],
                    values, tomb, hashes, np.uint64 if hashed else np.int64,
                    draw(st.booleans()), draw(st.integers(0, 1000)))
    return header(HASH_KEY if hashed else INT_KEY, "overlay" if overlay else "base", fields), rs


@fuzz_settings(300)
@given(case=record_sets())
def test_the_compiled_writer_writes_the_numpy_writers_bytes(tmp_path_factory: Any,
                                                            case: tuple[dict[str, Any], RecordSet]) -> None:
    head, rs = case
    assert_same_file(tmp_path_factory.mktemp("w"), head, rs)


@pytest.mark.parametrize("name, keys, hashed", [
    ("dense", np.arange(-5000, 15000), False),  # low, no probing
    ("strided", np.arange(20000) << 16, False),  # fib
    ("random", np.random.default_rng(1).integers(INT64_MIN, INT64_MAX, 30000, dtype=np.int64), False),
    ("hashed", np.random.default_rng(2).integers(0, 2**64 - 1, 30000, dtype=np.uint64), True),
    ("empty", np.empty(0, np.int64), False),
])
def test_larger_tables_match_too(tmp_path: Path, name: str, keys: np.ndarray, hashed: bool) -> None:
    keys = np.unique(keys)
    rng = np.random.default_rng(len(keys))
    keys = keys[rng.permutation(len(keys))]
    n = len(keys)
    values = [bytes(rng.integers(0, 256, size=int(rng.integers(0, 30)), dtype=np.uint8)) for _ in range(n)]
    hashes = {"v": rng.integers(0, 50, size=n).astype(np.uint64).tolist(),
              "k": rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64).tolist()}  # unique values
    rs = record_set(keys.astype(np.int64).tolist(), values, [False] * n, hashes,
                    np.uint64 if hashed else np.int64, True, 5)
    head = header(HASH_KEY if hashed else INT_KEY, "base", ["v", "k"])
    data = assert_same_file(tmp_path, head, rs)
    sf = StateFile(tmp_path / "rust.state")
    if name in ("dense", "strided"):
        assert sf.method == {"dense": "low", "strided": "fib"}[name]
    assert len(data) == sf.header["body_length"] + sf.body_offset


def test_write_errors_leave_no_file(tmp_path: Path) -> None:
    rs = record_set([1, 2], [b"a", b"b"], [False, False], {}, np.int64, False, 0)
    with pytest.raises(FileNotFoundError):
        write_state(tmp_path / "missing" / "x.state", header(INT_KEY, "base", []), rs)
    bad = RecordSet(keys=rs.keys, starts=rs.starts + 1000, lengths=rs.lengths, sources=rs.sources)
    with pytest.raises(IntegrityError, match="outside its source"):
        write_state(tmp_path / "x.state", header(INT_KEY, "base", []), bad)
    assert os.listdir(tmp_path) == []


# -- diff ----------------------------------------------------------------------------------

def old_state(tmp_path: Path, base: dict[int, bytes], overlay: dict[int, bytes | None] | None,
              hashed: bool) -> list[StateFile]:
    """``[overlay, base]`` (tombstones where the overlay maps a key to None) or ``[base]``."""
    dtype = np.uint64 if hashed else np.int64
    key = HASH_KEY if hashed else INT_KEY
    keys = list(base)
    rs = record_set(keys, [base[k] for k in keys], [False] * len(keys), {}, dtype, False, 1)
    write_state(tmp_path / "base", header(key, "base", []), rs)
    files = [StateFile(tmp_path / "base")]
    if overlay is not None:
        keys = list(overlay)
        rs = record_set(keys, [overlay[k] or b"" for k in keys], [overlay[k] is None for k in keys],
                        {}, dtype, True, 2)
        write_state(tmp_path / "overlay", header(key, "overlay", []), rs)
        files.insert(0, StateFile(tmp_path / "overlay"))
    return files


def assert_same_diff(a: Diff, b: Diff) -> None:
    assert a.upserts.tolist() == b.upserts.tolist()
    assert [s.tolist() for s in a.deleted] == [s.tolist() for s in b.deleted]
    assert [s.tolist() for s in a.changed_old] == [s.tolist() for s in b.changed_old]
    assert (a.removed_digest, a.added_digest) == (b.removed_digest, b.added_digest)


KEYS = st.integers(-20, 20) | st.sampled_from([INT64_MIN, INT64_MAX, 1 << 40])
VALUES = st.sampled_from([b"", b"a", b"b", b"ab"])


@fuzz_settings(300)
@given(base=st.dictionaries(KEYS, VALUES, max_size=30),
       overlay=st.none() | st.dictionaries(KEYS, st.none() | VALUES, max_size=15),
       new=st.dictionaries(KEYS, VALUES, max_size=30), hashed=st.booleans(),
       seed=st.integers(0, 100))
def test_the_compiled_diff_answers_as_the_numpy_diff(
        tmp_path_factory: Any, base: dict[int, bytes], overlay: dict[int, bytes | None] | None,
        new: dict[int, bytes], hashed: bool, seed: int) -> None:
    tmp = tmp_path_factory.mktemp("d")
    files = old_state(tmp, base, overlay, hashed)
    keys = list(new)
    # One source, as the producer's RecordSets have (the numpy diff needs it).
    rs = record_set(keys, [new[k] for k in keys], [False] * len(keys), {},
                    np.uint64 if hashed else np.int64, False, seed)
    assert_same_diff(diff(files, rs), diff_py(files, rs))
    probe = np.array(list(base) + list(overlay or {}) + keys + [3, -3], dtype=np.int64)
    probe = probe.astype(np.uint64) if hashed else probe
    assert present(files, probe).tolist() == present_py(files, probe).tolist()


def test_record_digest_matches_its_oracle() -> None:
    rng = np.random.default_rng(4)
    heap = rng.integers(0, 256, size=10_000, dtype=np.uint8)
    starts = rng.integers(0, 9_000, size=500)
    lengths = rng.integers(0, 1_000, size=500)
    assert record_digest(heap, starts, lengths) == record_digest_py(heap, starts, lengths)
    assert record_digest(heap, starts[:0], lengths[:0]) == 0
    with pytest.raises(IntegrityError, match="outside"):
        record_digest(heap, np.array([9_999]), np.array([2]))
