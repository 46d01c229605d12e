"""The state file on its own: placement, hash choice, sentinels, and damage detection."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from feedkit import IntegrityError
from feedkit.codec import record_class
from feedkit.format import RecordSet, StateFile, write_state
from feedkit.keys import KeySpec
from tests.oracles.lookup import make_get

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


def test_arrow_gather_copies_the_same_bytes_as_the_numpy_gather() -> None:
    """write_state gathers with pyarrow in the producer and with numpy in consumers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tests.oracles.write import _ArrowGather, _gather

    rng = np.random.default_rng(7)
    sources, starts, lengths, source = [], [], [], []
    for s in range(3):
        sizes = rng.integers(1, 40, size=500)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        sources.append(rng.integers(0, 256, size=int(bounds[-1]), dtype=np.uint8))
        pick = rng.permutation(500)[:300]  # a subset, in any order, with gaps between
        starts.append(bounds[pick])
        lengths.append(sizes[pick])
        source.append(np.full(300, s, np.uint8))
    sources.append(np.array([0xC1], np.uint8))  # a tombstone source: one byte, used repeatedly
    starts.append(np.zeros(50, np.int64))
    lengths.append(np.ones(50, np.int64))
    source.append(np.full(50, 3, np.uint8))
    rs = RecordSet(keys=np.arange(950, dtype=np.int64), starts=np.concatenate(starts),
                   lengths=np.concatenate(lengths), sources=sources, source=np.concatenate(source))
    order = rng.permutation(950)
    arrow = _ArrowGather(pa, pc, rs)
    for chunk in (order, order[:1], order[100:400]):
        assert bytes(arrow(chunk)) == _gather(rs, chunk)


def test_decompress_hands_over_the_body_digest_for_verify(tmp_path: Path) -> None:
    """The consumer checks a fetched state file with the digest computed while it was
    decompressed, instead of reading the file again."""
    from feedkit.blobs import compress_file, decompress_file
    from feedkit.format import PREFIX_SIZE

    path = tmp_path / "s"
    build(path, list(range(200_000)))  # several 1 MiB chunks
    good = path.read_bytes()
    info = compress_file(path, tmp_path / "s.zst", "t/snapshots/1.zst")
    digest = decompress_file(tmp_path / "s.zst", tmp_path / "out", info, hash_after=PREFIX_SIZE)
    assert (tmp_path / "out").read_bytes() == good
    StateFile(tmp_path / "out").verify(digest)  # passes without hashing again

    # A body that differs from what its writer hashed (the blob's SHA-256 still matches:
    # it was compressed from the damaged file) is refused through the handed-over digest.
    damaged = bytearray(good)
    damaged[-50] ^= 1
    path.write_bytes(bytes(damaged))
    info = compress_file(path, tmp_path / "d.zst", "t/snapshots/1.zst")
    digest = decompress_file(tmp_path / "d.zst", tmp_path / "out2", info, hash_after=PREFIX_SIZE)
    with pytest.raises(IntegrityError, match="checksum"):
        StateFile(tmp_path / "out2").verify(digest)
