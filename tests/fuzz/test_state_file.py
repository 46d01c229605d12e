"""Fuzzing the state-file reader: ``StateFile``, ``verify``, the generated ``get`` and the
vectorised accessors, and a consumer ``State`` over the file.

The property, for every damaged file: opening raises ``IntegrityError`` or gives a
file whose lookups raise nothing but ``FeedkitError`` (wrong answers are allowed on a
file that was not verified: a cached file is trusted once written), and whose record
ranges stay inside the file; nothing allocates much more than the file; nothing hangs.
A file that passes ``verify`` gets the same lookups plus ``get_many``, ``find`` and
iteration.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from feedkit import FeedkitError, IntegrityError
from feedkit.format import StateFile
from feedkit.keys import value_hash
from feedkit.state import State
from tests.fuzz.support import (
    DEEP_JSON,
    HUGE_INTS,
    TIMEOUT,
    Seed,
    apply_edits,
    byte_mutations,
    fix_checksum,
    fuzz_settings,
    join_state,
    json_edits,
    split_state,
    state_seeds,
)

pytestmark = pytest.mark.timeout(TIMEOUT)

ALLOCATION_BOUND = 16 << 20  # bytes: the seeds are a few KiB, so this is "nothing large"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    return state_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``check(seed, data)``: write ``data`` to a fresh file and hold the reader to the property."""
    folder = tmp_path_factory.mktemp("fuzzed")
    counter = itertools.count()

    def run(seed: Seed, data: bytes) -> str:
        path = folder / f"state{next(counter)}"
        path.write_bytes(data)
        below = None
        if seed.base is not None:  # an overlay is served over its base
            below = StateFile(folder / "base") if (folder / "base").exists() else None
            if below is None:
                (folder / "base").write_bytes(seed.base)
                below = StateFile(folder / "base")
        tracemalloc.start()
        try:
            outcome = _exercise(path, seed, below)
            if currently_in_test_context():  # --hypothesis-show-statistics: how far files got
                event(outcome)
            return outcome
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            path.unlink()
            assert peak < ALLOCATION_BOUND, f"{peak} bytes allocated for a {len(data)}-byte file"

    yield run


def _exercise(path: Path, seed: Seed, below: StateFile | None) -> str:
    try:
        sf = StateFile(path)
    except IntegrityError as exc:
        assert str(path) in str(exc)  # the message names the file
        return "refused on open"
    _lookups(sf, below, seed, verified=False)
    try:
        sf.verify()
    except IntegrityError as exc:
        assert str(path) in str(exc)
        return "refused by verify"
    _lookups(sf, below, seed, verified=True)
    return "accepted"


def _lookups(sf: StateFile, below: StateFile | None, seed: Seed, verified: bool) -> None:
    # An opened file must make a State: no header field may break it.
    state = State([sf] if below is None else [sf, below])
    assert isinstance(len(state), int) and len(state) >= 0
    for key in seed.keys:
        try:
            rec = state.get(key)
        except FeedkitError:
            continue
        assert rec is None or isinstance(rec, state.Record)
        with contextlib.suppress(FeedkitError):
            assert (key in state) == (rec is not None)

    # The vectorised accessors (merges, get_many, compaction) stay inside the file.
    occupied = sf.occupied()
    assert ((occupied >= 0) & (occupied < sf.slot_count - 1)).all()
    starts, lengths = sf.record_ranges(occupied)
    assert (lengths >= 0).all()
    assert ((starts >= 0) & (starts < len(sf.mm)) & (starts + lengths <= sf.heap_end)).all()
    slots = sf.probe_many(sf.slot_keys(occupied))
    assert ((slots >= -1) & (slots < sf.slot_count)).all()
    for name in sf.header["indexes"]:
        hashes = sf.index_hashes(name)
        assert len(hashes) == sf.slot_count
        for value in [None, "DE", 1, *hashes[:3].tolist()]:
            posted = sf.postings(name, value if isinstance(value, int) else value_hash(value))
            assert len(posted) <= sf.header["indexes"][name]["count"]

    if not verified:
        return
    with contextlib.suppress(FeedkitError):
        many = state.get_many(seed.keys)
        assert len(many) == len(seed.keys)
        assert all(r is None or isinstance(r, state.Record) for r in many)
    for field, value in seed.finds:
        with contextlib.suppress(FeedkitError):
            assert all(isinstance(r, state.Record) for r in state.find(field, value))
    with contextlib.suppress(FeedkitError):
        assert all(isinstance(r, state.Record) for _, r in state.items())
    with contextlib.suppress(FeedkitError):
        assert all(k is not None for k in state)  # keys()


def test_the_seeds_are_valid_and_answer(seeds: list[Seed], check: Any) -> None:
    """Without damage every seed opens, verifies and answers: the fuzzing starts from real files."""
    for seed in seeds:
        assert check(seed, seed.data) == "accepted", seed.name


@fuzz_settings(400)
@given(st.data())
def test_damaged_bytes(seeds: list[Seed], check: Any, data: st.DataObject) -> None:
    """Flipped, truncated, spliced files, with and without a repaired checksum."""
    seed = data.draw(st.sampled_from(seeds))
    damaged = data.draw(byte_mutations())(seed.data)
    if data.draw(st.booleans()):
        damaged = fix_checksum(damaged)
    check(seed, damaged)


@fuzz_settings(500)
@given(st.data())
def test_header_values(seeds: list[Seed], check: Any, data: st.DataObject) -> None:
    """Header fields (offsets, counts, bits, sentinels, schema, key) replaced by huge,
    negative or ill-typed values, or removed; the checksum repaired or not."""
    seed = data.draw(st.sampled_from(seeds))
    header, body = split_state(seed.data)
    edited = apply_edits(header, data.draw(json_edits(header)))
    _, _, _, _, _, digest = struct.unpack_from("<8sIIQQ16s", seed.data)
    check(seed, join_state(edited, body, like=seed.data,
                           digest=None if data.draw(st.booleans()) else digest))


@fuzz_settings(200)
@given(st.data())
def test_body_words_with_a_repaired_checksum(seeds: list[Seed], check: Any,
                                             data: st.DataObject) -> None:
    """Slot keys, record offsets and index words set to extreme int64 values behind a valid
    checksum: only the structural checks of ``verify`` stand between them and a lookup."""
    seed = data.draw(st.sampled_from(seeds))
    header, body = split_state(seed.data)
    words = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(words) // 8 - 1)) * 8
        value = data.draw(st.sampled_from(HUGE_INTS) | st.integers(-(2**63), 2**63 - 1))
        struct.pack_into("<Q", words, at, value % 2**64)
    check(seed, join_state(header, bytes(words), like=seed.data))


@fuzz_settings(200)
@given(st.data())
def test_prefix_fields(seeds: list[Seed], check: Any, data: st.DataObject) -> None:
    """The fixed prefix's header length, body offset, file size and format version."""
    seed = data.draw(st.sampled_from(seeds))
    fields = list(struct.unpack_from("<8sIIQQ16s", seed.data))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.sampled_from([1, 2, 3, 4]))
        limit = 2**32 if i < 3 else 2**64
        fields[i] = data.draw(st.sampled_from(HUGE_INTS) | st.integers(0, limit - 1)) % limit
    check(seed, struct.pack("<8sIIQQ16s", *fields) + seed.data[48:])


@fuzz_settings(100)
@given(st.data())
def test_hostile_header_text(seeds: list[Seed], check: Any, data: st.DataObject) -> None:
    """Headers that are not JSON objects: deep nesting, enormous numbers, random bytes."""
    seed = data.draw(st.sampled_from(seeds))
    _, body = split_state(seed.data)
    head = data.draw(st.sampled_from(DEEP_JSON) | st.binary(max_size=200)
                     | st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                                    max_leaves=20).map(lambda v: json.dumps(v).encode()))
    assert check(seed, join_state(head, body)) == "refused on open"


def test_a_header_claiming_2_to_the_40_slots_is_refused_before_mapping_anything(
        seeds: list[Seed], check: Any) -> None:
    header, body = split_state(seeds[0].data)
    header["slots"]["count"] = 2**40 + 1
    header["slots"]["bits"] = 40
    assert check(seeds[0], join_state(header, body, like=seeds[0].data)) == "refused on open"


@pytest.mark.parametrize("value", ["__import__('os').getpid()", "1 or True", 1, None])
def test_use_list_and_key_parts_never_reach_generated_code(
        seeds: list[Seed], tmp_path: Path, value: Any) -> None:
    """The lookup function is generated per file: header values must not be pasted into it."""
    header, body = split_state(seeds[2].data)  # composite key: its parts named types in the code
    header["use_list"] = value
    path = tmp_path / "s"
    path.write_bytes(join_state(header, body))
    with pytest.raises(IntegrityError, match="use_list"):
        StateFile(path)
    header["use_list"] = False
    header["key"]["parts"] = ["int", value]
    path.write_bytes(join_state(header, body))
    with pytest.raises(IntegrityError, match="key"):
        StateFile(path)


def test_a_verified_file_with_a_lying_record_raises_integrity_error(
        seeds: list[Seed], tmp_path: Path) -> None:
    """Record bytes that are not msgpack (behind a valid checksum, so verify cannot see
    them) make ``get`` and ``get_many`` raise IntegrityError naming the feed and the key
    or file, not msgpack's ValueError."""
    seed = seeds[0]
    header, body = split_state(seed.data)
    path = tmp_path / "s"
    path.write_bytes(seed.data)
    sf = StateFile(path)
    slot = int(sf.probe_many(np.array([42]))[0])
    start = int(sf.record_ranges(np.array([slot]))[0][0]) - sf.body_offset
    damaged = bytearray(body)
    damaged[start + 2] = 0xC1  # the name's header (93 2A A7 ...) becomes a byte msgpack never uses
    path.write_bytes(join_state(header, bytes(damaged), like=seed.data))
    sf = StateFile(path)
    sf.verify()
    state = State([sf])
    with pytest.raises(IntegrityError, match=r"fuzz\.feed.*key 42"):
        state.get(42)
    with pytest.raises(IntegrityError, match=r"fuzz\.feed.*key 42 is unreadable"):
        state.get_many([3, 42])
    assert state.get(3) == (3, "name 3", "DE")  # the other records still answer
    assert state.get_many([3, 11]) == [(3, "name 3", "DE"), (11, "name 11", "US")]
