"""The state file on its own: placement, hash choice, sentinels, and damage detection."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from feedkit import IntegrityError
from feedkit.codec import record_class
from feedkit.format import RecordSet, StateFile, make_get, write_state
from feedkit.keys import KeySpec

SCHEMA = [{"name": "k", "kind": "int", "type": "int64", "nullable": False},
          {"name": "v", "kind": "str", "type": "string", "nullable": True}]


def build(path: Path, keys: list[int]) -> StateFile:
    records = [msgpack.packb([k, f"v{k}"]) for k in keys]
    data = np.frombuffer(b"".join(records), dtype=np.uint8)
    lengths = np.array([len(r) for r in records], dtype=np.int64)
    header = {"feed": "t", "version": 1, "kind": "base", "key": KeySpec(("k",), ("int",)).to_json(),
              "schema": SCHEMA, "index_fields": [], "use_list": True, "record_count": len(keys),
              "state_digest": "0" * 16}
    write_state(path, header, RecordSet(keys=np.array(keys, dtype=np.int64),
                                        starts=np.cumsum(lengths) - lengths, lengths=lengths,
                                        sources=[data]))
    sf = StateFile(path)
    sf.verify()
    return sf


def lookup(sf: StateFile):
    return make_get([sf], record_class(("k", "v")), True, lambda k: k)


@pytest.mark.parametrize("keys, method", [
    (list(range(1000)), "low"),  # dense ids: the low bits place them without probing
    ([i << 20 for i in range(1000)], "fib"),  # patterned ids: the low bits would collide
])
def test_home_function_follows_the_keys(tmp_path: Path, keys: list[int], method: str) -> None:
    sf = build(tmp_path / "s", keys)
    assert sf.method == method
    get = lookup(sf)
    assert all(get(k) == (k, f"v{k}") for k in keys)
    assert get(keys[-1] + 1) is None
    assert sf.probe_many(np.array(keys + [-1])).tolist()[-1] == -1


def test_random_and_extreme_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    keys = sorted(set(rng.integers(-(2**63), 2**63 - 1, 5000, dtype=np.int64).tolist())
                  | {-(2**63), -(2**63) + 1, 2**63 - 1, 0, -1})
    sf = build(tmp_path / "s", keys)
    assert sf.empty not in keys  # the empty-slot sentinel moved off the int64 minimum
    get = lookup(sf)
    assert all(get(k) == (k, f"v{k}") for k in keys)
    slots = sf.probe_many(np.array(keys, dtype=np.int64))
    assert (slots >= 0).all() and len(set(slots.tolist())) == len(keys)
    starts, lengths = sf.record_ranges(slots)
    assert [msgpack.unpackb(sf.mm[a:a + n])[0] for a, n in zip(starts, lengths, strict=True)] == keys


def test_damage_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "s"
    build(path, list(range(100)))
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[-50] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError, match="checksum"):
        StateFile(path).verify()
    path.write_bytes(good[:-8])
    with pytest.raises(IntegrityError, match="truncated"):
        StateFile(path)
    path.write_bytes(b"NOTFEED!" + good[8:])
    with pytest.raises(IntegrityError, match="magic"):
        StateFile(path)
    path.write_bytes(b"")
    with pytest.raises(IntegrityError, match="too short"):
        StateFile(path)
