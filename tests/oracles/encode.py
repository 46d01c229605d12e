"""The Python encoder that ``encode.py``'s compiled one replaced: the oracle of the tests.

This is the producer's encode as it was before issue 12 moved it into Rust
(``native/core/src/encode.rs``), unchanged: every column becomes a binary array
holding each value's canonical msgpack bytes (``feedkit.codec.pack_value``), and
``binary_join_element_wise`` joins a row's columns behind the array header: one
record. Integers, floats, booleans, strings and binaries are encoded with numpy and
pyarrow compute, byte for byte what msgpack-python would write; other types go through
``to_pylist`` and ``pack_value`` one value at a time.

Nothing in the producer calls it. ``tests/producer/test_native_encode.py`` compares the
compiled encoder with it on random tables (records, slot keys, index hashes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedkit.codec import pack_value
from feedkit.errors import ValidationError
from feedkit.keys import xxh3
from feedkit.producer.encode import ColumnPlan, EncodedBatch, _contains, _kind, _nested_types

__all__ = ["encode_batch", "encode_column"]


# -- column encoders ------------------------------------------------------------------------

_SEP = pa.scalar(b"", pa.large_binary())  # binary_join_element_wise's separator: none

def _from_parts(data: np.ndarray, lengths: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(lengths),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _header_bytes(codes: np.ndarray, widths: np.ndarray, values: np.ndarray) -> pa.Array:
    """Per value: one code byte followed by ``widths`` big-endian bytes of ``values``.

    A width of -1 means the code byte alone carries the value (fixint, fixstr, nil).
    """
    n = len(codes)
    w = np.maximum(widths, 0)
    big_endian = values.astype(">u8").view(np.uint8).reshape(n, 8)
    if n and (w == w[0]).all():  # one width (all fixstr, all float64, ...): no scatter
        k = int(w[0])
        rows = np.empty((n, k + 1), dtype=np.uint8)
        rows[:, 0] = codes
        rows[:, 1:] = big_endian[:, 8 - k:]
        return _from_parts(rows.reshape(-1), np.full(n, k + 1, dtype=np.int64))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(w + 1, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    out[offsets[:-1]] = codes
    for k in (1, 2, 4, 8):
        sel = np.flatnonzero(w == k)
        if len(sel):
            out[(offsets[sel] + 1)[:, None] + np.arange(k)] = big_endian[sel, 8 - k:]
    return pa.Array.from_buffers(pa.large_binary(), n,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def _encode_ints(arr: pa.Array) -> pa.Array:
    valid = np.asarray(arr.is_valid())
    unsigned = pa.types.is_unsigned_integer(arr.type)
    raw = np.asarray(arr.fill_null(0)).astype(np.uint64 if unsigned else np.int64)
    mag = raw.astype(np.uint64) if unsigned else raw.view(np.uint64)
    neg = np.zeros(len(raw), dtype=bool) if unsigned else raw < 0
    codes = np.zeros(len(raw), dtype=np.uint8)
    widths = np.full(len(raw), 8, dtype=np.int64)
    pos = ~neg
    # msgpack-python packs non-negative ints as fixint/uint8/16/32/64, negatives as
    # negative fixint/int8/16/32/64: the smallest that holds the value.
    small = pos & (mag < np.uint64(1 << 7))
    u8 = pos & ~small & (mag < np.uint64(1 << 8))
    u16 = pos & (mag >= np.uint64(1 << 8)) & (mag < np.uint64(1 << 16))
    u32 = pos & (mag >= np.uint64(1 << 16)) & (mag < np.uint64(1 << 32))
    u64 = pos & (mag >= np.uint64(1 << 32))
    if not unsigned:
        signed = raw
        nfix = neg & (signed >= -32)
        i8 = neg & (signed < -32) & (signed >= -(1 << 7))
        i16 = neg & (signed < -(1 << 7)) & (signed >= -(1 << 15))
        i32 = neg & (signed < -(1 << 15)) & (signed >= -(1 << 31))
        i64 = neg & (signed < -(1 << 31))
    else:
        nfix = i8 = i16 = i32 = i64 = np.zeros(len(raw), dtype=bool)
    low = (mag & np.uint64(0xFF)).astype(np.uint8)
    for mask, code, width in ((u8, 0xCC, 1), (u16, 0xCD, 2), (u32, 0xCE, 4), (u64, 0xCF, 8),
                              (i8, 0xD0, 1), (i16, 0xD1, 2), (i32, 0xD2, 4), (i64, 0xD3, 8)):
        codes[mask] = code
        widths[mask] = width
    codes[small | nfix] = low[small | nfix]
    widths[small | nfix] = -1
    codes[~valid] = 0xC0
    widths[~valid] = -1
    return _header_bytes(codes, widths, mag)


def _encode_floats(arr: pa.Array) -> pa.Array:
    valid = np.asarray(arr.is_valid())
    values = np.asarray(arr.cast(pa.float64()).fill_null(0.0), dtype=np.float64)
    codes = np.where(valid, 0xCB, 0xC0).astype(np.uint8)
    widths = np.where(valid, 8, -1)
    return _header_bytes(codes, widths, values.view(np.uint64))


def _encode_bools(arr: pa.Array) -> pa.Array:
    valid = np.asarray(arr.is_valid())
    truth = np.asarray(arr.fill_null(False), dtype=bool)
    codes = np.where(valid, np.where(truth, 0xC3, 0xC2), 0xC0).astype(np.uint8)
    return _from_parts(codes, np.ones(len(arr), dtype=np.int64))


def _encode_strings(arr: pa.Array, is_str: bool) -> pa.Array:
    if pa.types.is_fixed_size_binary(arr.type):
        arr = arr.cast(pa.large_binary())
    as_binary = arr.cast(pa.large_binary())
    valid = np.asarray(arr.is_valid())
    lengths = np.asarray(pc.binary_length(as_binary).fill_null(0), dtype=np.int64)
    codes = np.empty(len(arr), dtype=np.uint8)
    widths = np.empty(len(arr), dtype=np.int64)
    if is_str:
        fix = lengths < 32
        codes[fix] = (0xA0 | lengths[fix]).astype(np.uint8)
        widths[fix] = -1
        bands = ((~fix & (lengths < 1 << 8), 0xD9, 1), (lengths >= 1 << 8, 0xDA, 2),
                 (lengths >= 1 << 16, 0xDB, 4))
    else:
        bands = ((lengths < 1 << 8, 0xC4, 1), (lengths >= 1 << 8, 0xC5, 2),
                 (lengths >= 1 << 16, 0xC6, 4))
    for mask, code, width in bands:
        codes[mask] = code
        widths[mask] = width
    codes[~valid] = 0xC0
    widths[~valid] = -1
    headers = _header_bytes(codes, widths, lengths.astype(np.uint64))
    return pc.binary_join_element_wise(headers, as_binary, _SEP, null_handling="replace",
                                       null_replacement=b"")


def _encode_lists(arr: pa.Array) -> pa.Array:
    """list<T> with a vectorised T: an array header per row, then the row's encoded items.

    The items of consecutive rows are consecutive in the child array, so a row's body is
    one slice of the encoded children: no per-row Python work.
    """
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    valid = np.asarray(arr.is_valid())
    counts = np.where(valid, np.diff(offsets), 0)
    # A slice's ``values`` is the whole child array: encode only this slice's items.
    first = int(offsets[0])
    items = encode_column(arr.values.slice(first, int(offsets[-1]) - first))
    offsets = offsets - first
    data, item_offsets = _binary_parts(items)
    bodies = pa.Array.from_buffers(
        pa.large_binary(), len(arr),
        [None, pa.py_buffer(np.ascontiguousarray(item_offsets[offsets])), pa.py_buffer(data)])
    codes = np.where(counts < 16, 0x90 | np.minimum(counts, 15),
                     np.where(counts < 1 << 16, 0xDC, 0xDD)).astype(np.uint8)
    widths = np.where(counts < 16, -1, np.where(counts < 1 << 16, 2, 4))
    codes[~valid] = 0xC0
    widths[~valid] = -1
    headers = _header_bytes(codes, widths, counts.astype(np.uint64))
    if not valid.all():
        bodies = pc.if_else(pa.array(valid), bodies, pa.scalar(b"", pa.large_binary()))
    return pc.binary_join_element_wise(headers, bodies, _SEP)


def _vectorised(t: pa.DataType) -> bool:
    kind = _kind(t)
    if kind in ("int", "float", "bool", "str", "bytes"):
        return not pa.types.is_dictionary(t)
    return kind == "list" and not pa.types.is_fixed_size_list(t) and _vectorised(t.value_type)


def _apply(convert: Callable[[Any], Any] | None, value: Any) -> Any:
    return convert(value) if convert is not None else value


def _pythonizer(t: pa.DataType) -> Callable[[Any], Any] | None:
    """A converter from ``to_pylist`` values to record values (maps become dicts), or
    None when the type holds no map."""
    if not _contains(t, {"map"}):
        return None
    if pa.types.is_map(t):
        conv_k, conv_v = _pythonizer(t.key_type), _pythonizer(t.item_type)
        return lambda v: None if v is None else {
            (conv_k(k) if conv_k else k): (conv_v(x) if conv_v else x) for k, x in v}
    if pa.types.is_struct(t):
        convs = {t.field(i).name: _pythonizer(t.field(i).type) for i in range(t.num_fields)}
        return lambda v: None if v is None else {
            k: _apply(convs.get(k), x) for k, x in v.items()}
    inner = _pythonizer(_nested_types(t)[0])
    assert inner is not None
    return lambda v: None if v is None else [inner(x) for x in v]


def _encode_generic(arr: pa.Array) -> pa.Array:
    convert = _pythonizer(arr.type)
    values = arr.to_pylist()
    if convert is not None:
        values = [convert(v) for v in values]
    return pa.array([pack_value(v) for v in values], type=pa.large_binary())


def encode_column(arr: pa.Array) -> pa.Array:
    """Each value's canonical msgpack bytes, as a large_binary array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    kind = _kind(arr.type)
    if kind == "int":
        return _encode_ints(arr)
    if kind == "float":
        return _encode_floats(arr)
    if kind == "bool":
        return _encode_bools(arr)
    if kind in ("str", "bytes"):
        return _encode_strings(arr, kind == "str")
    if _vectorised(arr.type):
        return _encode_lists(arr)
    return _encode_generic(arr)


def _array_header(n: int) -> bytes:
    return bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


def _binary_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data, offsets) numpy views of a large_binary array."""
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    return data, offsets


def _hash_each(arr: pa.Array) -> np.ndarray:
    data, offsets = _binary_parts(arr)
    view = data.data
    bounds = offsets.tolist()
    return np.fromiter((xxh3(view[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)),
                       dtype=np.uint64, count=len(arr))


def encode_batch(batch: pa.RecordBatch, plan: ColumnPlan) -> EncodedBatch:
    """Encode one batch (columns already in schema order)."""
    encoded = {name: encode_column(batch.column(name)) for name in plan.names}
    rows = pc.binary_join_element_wise(pa.scalar(_array_header(len(plan.names)), pa.large_binary()),
                                       *[encoded[n] for n in plan.names], _SEP)
    data, offsets = _binary_parts(rows)
    base = int(offsets[0])
    null_key = np.zeros(batch.num_rows, dtype=bool)
    for column in plan.spec.columns:
        null_key |= ~np.asarray(batch.column(column).is_valid())
    spec = plan.spec
    if spec.slot_kind == "int":
        column = batch.column(spec.columns[0])
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if pa.types.is_uint64(column.type):
            too_big = pc.filter(column, pc.greater_equal(column, pa.scalar(1 << 63, pa.uint64())))
            if len(too_big):
                raise ValidationError(
                    f"feed {plan.feed!r}: key column {spec.columns[0]!r} holds values past "
                    f"2**63 - 1 (integer keys are 64-bit signed): {too_big.to_pylist()[:5]}")
        slot_keys = np.asarray(column.fill_null(0)).astype(np.int64)
    elif spec.composite:
        header = pa.scalar(_array_header(len(spec.columns)), pa.large_binary())
        slot_keys = _hash_each(pc.binary_join_element_wise(
            header, *[encoded[c] for c in spec.columns], _SEP))
    else:
        column = batch.column(spec.columns[0])
        if pa.types.is_fixed_size_binary(column.type):
            column = column.cast(pa.large_binary())
        slot_keys = _hash_each(column.cast(pa.large_binary()).fill_null(b""))
    index_hashes = {}
    for name in plan.index_fields:
        dictionary = encoded[name].dictionary_encode()
        hashes = _hash_each(dictionary.dictionary)
        index_hashes[name] = hashes[np.asarray(dictionary.indices)]
    return EncodedBatch(
        data=data[base:int(offsets[-1])].copy(),
        offsets=offsets - base,
        slot_keys=slot_keys,
        index_hashes=index_hashes,
        null_key_rows=np.flatnonzero(null_key),
    )
