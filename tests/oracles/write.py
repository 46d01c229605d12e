"""The numpy state writer and verifier the compiled ones replaced
(``format._write_state_py`` and ``StateFile._verify_py`` once)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from feedkit.blobs import owner_only
from feedkit.errors import IntegrityError
from feedkit.format import (
    _GATHER_BYTES,
    _PREFIX,
    FORMAT_VERSION,
    MAGIC,
    TOMBSTONE,
    RecordSet,
    StateFile,
    _as_i64,
    _tmp_path,
    byte_ranges,
)
from feedkit.keys import KeySpec, hash_homes, int_homes

__all__ = ["arrow_records", "verify_py", "write_state_py"]

_BODY_ALIGN = 64
_INT64_MIN = -(1 << 63)


def _align(n: int, to: int = 8) -> int:
    return (n + to - 1) // to * to


def _capacity_bits(n: int) -> int:
    """log2 of the table capacity: the smallest power of two >= 2n (load <= 0.5), at least 8."""
    return max(3, (2 * n - 1).bit_length())

def _place(homes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear-probing placement without wrap-around, vectorised.

    Sorting by home slot and taking ``pos[i] = i + max_{j<=i}(home[j] - j)`` gives each
    entry the first free slot at or after its home, exactly as inserting them one by
    one in that order would. Slots past the capacity form an overflow tail, so probes
    never wrap.
    """
    # Stable, as FORMAT.md 4.4 says: ties keep the writer's input order, so a file's bytes
    # depend on its input only (numpy's default sort is not stable, and its tie order
    # differs between CPUs).
    order = np.argsort(homes, kind="stable")
    ranks = np.arange(len(homes), dtype=np.int64)
    pos = ranks + np.maximum.accumulate(homes[order] - ranks) if len(homes) else ranks
    return order, pos

def _free_sentinel(keys: np.ndarray, start: int) -> int:
    """A slot-key value no key uses: ``start`` unless taken, else the next free one."""
    # Of len(keys) + 1 candidates at least one is free; usually none is taken, so look at
    # the few keys inside the candidates' range only (no hashing of every key).
    last = start + len(keys)
    taken = keys[(keys >= keys.dtype.type(start)) & (keys <= keys.dtype.type(last))]
    if not len(taken):
        return start
    candidates = np.arange(start, last + 1, dtype=keys.dtype)
    return int(candidates[~np.isin(candidates, taken)][0])

def arrow_records(pa: Any, source: np.ndarray, starts: np.ndarray,
                  lengths: np.ndarray) -> tuple[Any, np.ndarray]:
    """A pyarrow large_binary array over ``source`` (no copy) with an element per record,
    and each record's element number. Records must not overlap; they may repeat.

    Only the producer calls this (with its pyarrow module): consumers never import pyarrow.
    """
    ends = starts + lengths
    if len(starts) and np.array_equal(starts[1:], ends[:-1]):  # back to back: no sort
        bounds, elem = np.append(starts, ends[-1:]), np.arange(len(starts), dtype=np.int64)
    else:
        bounds = np.union1d(starts, ends) if len(starts) else np.zeros(1, np.int64)
        elem = np.searchsorted(bounds, starts)
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    array = pa.Array.from_buffers(pa.large_binary(), len(bounds) - 1,
                                  [None, pa.py_buffer(bounds), pa.py_buffer(source)])
    return array, elem

class _ArrowGather:
    """Record bytes gathered with ``pyarrow.compute.take`` (a memcpy per record).

    The numpy gather builds an int64 index per byte, several times slower;
    ``_write_state_py`` takes this path when the process already loaded pyarrow.
    """

    def __init__(self, pa: Any, pc: Any, rs: RecordSet) -> None:
        self.pc = pc
        chunks = []
        self.elem = np.empty(len(rs), dtype=np.int64)
        base = 0
        for s, source in enumerate(rs.sources if rs.source is not None else rs.sources[:1]):
            members = (np.arange(len(rs)) if rs.source is None
                       else np.flatnonzero(rs.source == s))
            if not len(members):
                continue
            array, elem = arrow_records(pa, source, rs.starts[members], rs.lengths[members])
            self.elem[members] = base + elem
            base += len(array)
            chunks.append(array)
        self.records = pa.chunked_array(chunks, pa.large_binary())

    def __call__(self, idx: np.ndarray) -> memoryview:
        out = self.pc.take(self.records, self.elem[idx]).combine_chunks()
        _, offsets, data = out.buffers()
        bounds = np.frombuffer(offsets, dtype=np.int64, count=len(out) + 1, offset=out.offset * 8)
        return memoryview(data)[int(bounds[0]):int(bounds[-1])]

def _gather(rs: RecordSet, idx: np.ndarray) -> bytes:
    starts, lengths = rs.starts[idx], rs.lengths[idx]
    if rs.source is None or len(rs.sources) == 1:
        return rs.sources[0][byte_ranges(starts, lengths)].tobytes()
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    out_starts = np.cumsum(lengths) - lengths
    src = rs.source[idx]
    for s in np.unique(src):
        mask = src == s
        out[byte_ranges(out_starts[mask], lengths[mask])] = rs.sources[int(s)][
            byte_ranges(starts[mask], lengths[mask])
        ]
    return out.tobytes()

def _int_placement(keys: np.ndarray, bits: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Place int keys with whichever home function needs fewer probe steps."""
    best: tuple[int, str, np.ndarray, np.ndarray, np.ndarray] | None = None
    for method in ("low", "fib"):
        homes = int_homes(keys, method, bits)
        order, pos = _place(homes)
        steps = int((pos - homes[order]).sum())
        if best is None or steps < best[0]:
            best = (steps, method, homes, order, pos)
        if steps == 0:
            break
    assert best is not None
    return best[1], best[2], best[3], best[4]

def _index_tables(
    hashes: np.ndarray, slots: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The value table and postings of one secondary index."""
    uniq, inverse = np.unique(hashes.view(np.uint64), return_inverse=True)
    bits = _capacity_bits(len(uniq))
    homes = hash_homes(uniq, bits)  # sorted already: the home is the hash's top bits
    ranks = np.arange(len(uniq), dtype=np.int64)
    pos = ranks + np.maximum.accumulate(homes - ranks) if len(uniq) else ranks
    size = max(int(pos[-1]) + 1 if len(uniq) else 0, 1 << bits) + 1
    empty = _free_sentinel(uniq, 0)
    table = np.full(2 * size, np.uint64(empty), dtype=np.uint64)
    table[2 * pos] = uniq
    counts = np.zeros(size, dtype=np.int64)
    counts[pos] = np.bincount(inverse, minlength=len(uniq))
    table[1::2] = (np.cumsum(counts) - counts).astype(np.uint64)
    postings = slots[np.lexsort((slots, inverse))].astype(np.uint32)
    meta = {"slots": size, "bits": bits, "empty": empty, "values": len(uniq)}
    return table.view(np.int64), postings, meta

def write_state_py(path: str | os.PathLike[str], header: dict[str, Any],
                    rs: RecordSet) -> dict[str, Any]:
    """:func:`write_state` in numpy: the oracle the compiled writer is tested against."""
    spec = KeySpec.from_json(header["key"])
    n = len(rs)
    bits = _capacity_bits(n)
    if spec.slot_kind == "int":
        keys = rs.keys.astype(np.int64, copy=False)
        method, homes, order, pos = _int_placement(keys, bits)
        empty = _free_sentinel(keys, _INT64_MIN)
    else:
        keys = rs.keys.astype(np.uint64, copy=False)
        method = "xxh3"
        homes = hash_homes(keys, bits)
        order, pos = _place(homes)
        empty = _free_sentinel(keys, 0)
    size = max(int(pos[-1]) + 1 if n else 0, 1 << bits) + 1
    lengths = rs.lengths.astype(np.int64, copy=False)
    slot_lengths = np.zeros(size, dtype=np.int64)
    slot_lengths[pos] = lengths[order]
    heap_length = int(slot_lengths.sum())
    tombstones = int(rs.tombstone.sum()) if rs.tombstone is not None else 0

    slot_of = np.empty(n, dtype=np.int64)
    slot_of[order] = pos
    live = ~rs.tombstone if rs.tombstone is not None else np.ones(n, dtype=bool)
    indexes: dict[str, Any] = {}
    index_arrays: list[tuple[np.ndarray, np.ndarray]] = []
    offset = size * 16 + _align(heap_length)
    for name in header.get("index_fields", []):
        table, postings, meta = _index_tables(rs.index_hashes[name][live], slot_of[live])
        meta["table"] = offset
        offset += table.nbytes
        meta["postings"] = offset
        meta["count"] = len(postings)
        offset += _align(postings.nbytes)
        indexes[name] = meta
        index_arrays.append((table, postings))

    full = dict(header)
    full.update(
        format=FORMAT_VERSION,
        count=n,
        tombstones=tombstones,
        slots={"offset": 0, "count": size, "bits": bits, "hash": method, "empty": empty,
               "max_probe": int((pos - homes[order]).max()) + 1 if n else 1},
        heap={"offset": size * 16, "length": heap_length},
        indexes=indexes,
        body_length=offset,
    )
    header_bytes = json.dumps(full, separators=(",", ":"), sort_keys=True).encode()
    body_offset = _align(_PREFIX.size + len(header_bytes), _BODY_ALIGN)
    heap_offset = body_offset + size * 16

    table = np.empty(2 * size, dtype=np.int64)
    table[0::2] = empty
    table[2 * pos] = keys[order].view(np.int64)
    table[1::2] = heap_offset + np.cumsum(slot_lengths) - slot_lengths

    target = Path(path)
    tmp = _tmp_path(target)
    checksum = xxhash.xxh3_128()
    try:
        with open(tmp, "wb", opener=owner_only) as f:
            def emit(data: bytes | memoryview) -> None:
                f.write(data)
                checksum.update(data)

            f.write(b"\0" * _PREFIX.size)
            emit(header_bytes)
            emit(b"\0" * (body_offset - _PREFIX.size - len(header_bytes)))
            emit(table.data.cast("B"))
            ends = np.cumsum(lengths[order])
            pa, pc = sys.modules.get("pyarrow"), sys.modules.get("pyarrow.compute")
            gather: Callable[[np.ndarray], bytes | memoryview] = (
                _ArrowGather(pa, pc, rs) if pa is not None and pc is not None and n
                else partial(_gather, rs))
            start = 0
            while start < n:  # copy the records in slot order, a few MiB at a time
                done = int(ends[start - 1]) if start else 0
                cut = max(int(np.searchsorted(ends, done + _GATHER_BYTES, side="right")), start + 1)
                emit(gather(order[start:cut]))
                start = cut
            emit(b"\0" * (_align(heap_length) - heap_length))
            for table_i, postings in index_arrays:
                emit(table_i.data.cast("B"))
                emit(postings.data.cast("B"))
                emit(b"\0" * (_align(postings.nbytes) - postings.nbytes))
            file_size = f.tell()
            f.seek(0)
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes), body_offset,
                                 file_size, checksum.digest()))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return full


def verify_py(sf: StateFile, body_digest: bytes | None = None) -> None:
    """:meth:`StateFile.verify` (without ``records``) in numpy: the oracle of the native one in
    ``tests/test_native_verify.py``, and the reference for what it checks.

    Raises:
        IntegrityError: as :meth:`StateFile.verify`.
    """
    if body_digest is None:
        body_digest = xxhash.xxh3_128(memoryview(sf.mm)[_PREFIX.size:]).digest()
    if body_digest != sf.digest:
        raise IntegrityError(f"{sf.path}: state file checksum mismatch")
    keys, offsets = sf.table[0::2], sf.table[1::2]
    empty = _as_i64(sf.empty)
    occupied = keys[:-1] != empty
    # Offsets ascend from the heap start to its end, every occupied slot has a record
    # and every empty one none, and the terminal slot is empty. Compared, never
    # subtracted first: the int64 differences of damaged offsets could wrap around.
    if (offsets[0] != sf.heap_offset or offsets[-1] != sf.heap_end
            or keys[-1] != empty or (offsets[1:] < offsets[:-1]).any()
            or not np.array_equal(offsets[1:] != offsets[:-1], occupied)):
        raise IntegrityError(f"{sf.path}: record offsets do not match the slot table")
    lengths = np.diff(offsets)  # inside [0, heap length] now
    starts = offsets[:-1][occupied]
    firsts = sf.heap[starts]
    tomb = firsts == TOMBSTONE
    tombstones = int(np.count_nonzero(tomb))
    if len(starts) != sf.count or tombstones != sf.tombstones:
        raise IntegrityError(f"{sf.path}: {len(starts)} entries and {tombstones} "
                             f"tombstones, the header says {sf.count} and {sf.tombstones}")
    if tombstones and sf.kind != "overlay":
        raise IntegrityError(f"{sf.path}: a tombstone in a base file")
    live = occupied
    if tombstones:
        live = occupied.copy()
        live[np.flatnonzero(occupied)[tomb]] = False
        if (lengths[~live & occupied] != 1).any():
            raise IntegrityError(f"{sf.path}: a tombstone longer than one byte")
        starts, firsts = starts[~tomb], firsts[~tomb]
    # Every record opens an array of the schema's width: decoders build named tuples
    # of that width from it.
    width = len(sf.header["schema"])
    if width < 16:
        bad = (firsts != 0x90 | width).any()
    else:
        second = sf.heap[np.minimum(starts + 1, len(sf.heap) - 1)]
        third = sf.heap[np.minimum(starts + 2, len(sf.heap) - 1)]
        bad = ((lengths[live] < 3).any() or (firsts != 0xDC).any()
               or (second != width >> 8).any() or (third != width & 0xFF).any())
    if bad:
        raise IntegrityError(f"{sf.path}: records that are not {width}-column arrays")
    for name, meta in sf.header["indexes"].items():
        table = sf._index_table(meta)
        hashes, firsts_posted = table[0::2], table[1::2]
        filled = hashes[:-1] != np.uint64(meta["empty"])
        owns = firsts_posted[1:] != firsts_posted[:-1]  # uint64: compared, no wrap
        postings = sf._postings(meta)
        if (hashes[-1] != np.uint64(meta["empty"]) or firsts_posted[0] != 0
                or firsts_posted[-1] != meta["count"]
                or (firsts_posted[1:] < firsts_posted[:-1]).any()
                or owns[~filled].any() or int(filled.sum()) != meta["values"]
                or (len(postings) and (int(postings.max()) >= len(live)
                                       or not live[postings].all()))):
            raise IntegrityError(f"{sf.path}: the index on {name!r} does not match "
                                 "the slot table")
