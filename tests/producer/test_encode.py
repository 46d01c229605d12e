"""The vectorised column encoders write exactly the bytes of ``codec.pack_value``.

Key hashes and secondary-index hashes are taken over these bytes, so a single byte
of difference between the producer's encoders and ``pack_value`` (which lookups use)
makes a key unreachable. Every case compares ``encode_column(arr)`` with
``pack_value`` applied to ``arr.to_pylist()``, value by value.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedkit.codec import pack_value
from feedkit.producer.encode import encode_column

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(),
             pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]

# Where msgpack changes format: fixint / uint8 / uint16 / uint32 / uint64 and
# negative fixint / int8 / int16 / int32 / int64.
INT_BOUNDARIES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
                  -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1,
                  -2**63, 2**63 - 1, 2**64 - 1]

STRING_LENGTHS = [0, 1, 31, 32, 255, 256, 65535, 65536]

# No surrogates: arrow strings are valid UTF-8.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)

HYPOTHESIS = settings(max_examples=60, deadline=None)


def _bounds(t: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(t.to_pandas_dtype())
    return int(info.min), int(info.max)


def assert_encodes_like_pack_value(arr: pa.Array | pa.ChunkedArray) -> None:
    encoded = encode_column(arr)
    assert encoded.type == pa.large_binary()
    values = arr.to_pylist()
    got = encoded.to_pylist()
    assert len(got) == len(values)
    mismatches = [(i, v, g, pack_value(v)) for i, (v, g) in enumerate(zip(values, got, strict=True))
                  if g != pack_value(v)]
    assert not mismatches, f"{arr.type}: (row, value, encoded, pack_value): {mismatches[:5]}"


# -- integers -------------------------------------------------------------------------------

@pytest.mark.parametrize("t", INT_TYPES, ids=str)
def test_int_boundaries(t: pa.DataType) -> None:
    lo, hi = _bounds(t)
    near = {v + d for v in INT_BOUNDARIES for d in (-1, 0, 1)} | {lo, lo + 1, hi - 1, hi}
    values = sorted(v for v in near if lo <= v <= hi)
    arr = pa.array([*values, None, *values[::-1], None], t)
    assert arr.null_count == 2
    assert_encodes_like_pack_value(arr)


@pytest.mark.parametrize("t", INT_TYPES, ids=str)
def test_int_nulls_encode_as_nil(t: pa.DataType) -> None:
    arr = pa.array([None, 0, None, None], t)
    assert encode_column(arr).to_pylist() == [b"\xc0", b"\x00", b"\xc0", b"\xc0"]
    assert encode_column(pa.array([None] * 3, t)).to_pylist() == [b"\xc0"] * 3
    assert encode_column(pa.array([], t)).to_pylist() == []


@pytest.mark.parametrize("t", INT_TYPES, ids=str)
def test_int_random(t: pa.DataType) -> None:
    lo, hi = _bounds(t)
    edges = [v for v in INT_BOUNDARIES if lo <= v <= hi]
    value = st.one_of(st.integers(lo, hi), st.sampled_from(edges), st.none())

    @HYPOTHESIS
    @given(st.lists(value, max_size=40))
    def check(values: list[int | None]) -> None:
        assert_encodes_like_pack_value(pa.array(values, t))

    check()


@pytest.mark.parametrize("t", [pa.int64(), pa.uint8(), pa.int16()], ids=str)
def test_int_slices_and_chunks(t: pa.DataType) -> None:
    lo, hi = _bounds(t)
    values = [lo, None, 0, hi, 1, None, -1 if lo < 0 else 2, 200 if hi >= 200 else 3]
    arr = pa.array(values, t)
    assert_encodes_like_pack_value(arr.slice(1, 5))
    assert_encodes_like_pack_value(pa.chunked_array([arr.slice(0, 3), arr.slice(3)]))
    assert_encodes_like_pack_value(arr.dictionary_encode())


# -- floats ---------------------------------------------------------------------------------

SPECIAL_FLOATS = [0.0, -0.0, 1.5, -1.5, 0.1, math.nan, -math.nan, math.inf, -math.inf,
                  5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 3.4028234663852886e38,
                  1.401298464324817e-45, None]


@pytest.mark.parametrize("t", [pa.float32(), pa.float64()], ids=str)
def test_float_special_values(t: pa.DataType) -> None:
    arr = pa.array(SPECIAL_FLOATS, t, from_pandas=False)
    assert arr.null_count == 1  # NaN stays a value, not a null
    assert_encodes_like_pack_value(arr)
    got = encode_column(arr).to_pylist()
    assert got[SPECIAL_FLOATS.index(None)] == b"\xc0"
    assert got[1] == b"\xcb" + struct.pack(">d", -0.0)  # the sign of zero is kept
    assert math.isnan(struct.unpack(">d", got[5][1:])[0])


def test_float_nan_payloads() -> None:
    f64 = np.array([0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000001],
                   dtype=np.uint64).view(np.float64)
    assert_encodes_like_pack_value(pa.array(f64))
    f32 = np.array([0x7FC00001, 0xFFC00000], dtype=np.uint32).view(np.float32)
    assert_encodes_like_pack_value(pa.array(f32))


@HYPOTHESIS
@given(st.lists(st.one_of(st.floats(), st.none()), max_size=40))
def test_float64_random(values: list[float | None]) -> None:
    assert_encodes_like_pack_value(pa.array(values, pa.float64(), from_pandas=False))


@HYPOTHESIS
@given(st.lists(st.one_of(st.floats(width=32), st.none()), max_size=40))
def test_float32_random(values: list[float | None]) -> None:
    assert_encodes_like_pack_value(pa.array(values, pa.float32(), from_pandas=False))


def test_float_slices_and_chunks() -> None:
    arr = pa.array([1.0, None, math.nan, -0.0, 2.5], pa.float64(), from_pandas=False)
    assert_encodes_like_pack_value(arr.slice(2))
    assert_encodes_like_pack_value(pa.chunked_array([arr.slice(0, 2), arr.slice(2)]))


# -- booleans -------------------------------------------------------------------------------

def test_bools_with_nulls() -> None:
    arr = pa.array([True, False, None, True, None, False])
    assert encode_column(arr).to_pylist() == [b"\xc3", b"\xc2", b"\xc0", b"\xc3", b"\xc0", b"\xc2"]
    assert_encodes_like_pack_value(arr)
    # Bits not aligned on a byte boundary.
    assert_encodes_like_pack_value(arr.slice(3))
    assert_encodes_like_pack_value(pa.array([i % 3 == 0 for i in range(21)]).slice(5, 11))


@HYPOTHESIS
@given(st.lists(st.one_of(st.booleans(), st.none()), max_size=70), st.integers(0, 9))
def test_bools_random(values: list[bool | None], offset: int) -> None:
    assert_encodes_like_pack_value(pa.array(values, pa.bool_()).slice(min(offset, len(values))))


# -- strings and binaries -------------------------------------------------------------------

def _texts() -> list[str | None]:
    out: list[str | None] = []
    for n in STRING_LENGTHS:
        out.append("a" * n)
    # Multi-byte text: the msgpack header counts bytes, not characters.
    for n in (10, 11, 16, 85, 86, 127, 128):
        out.append("ä" * n)  # 2 bytes each: 20, 22, 32, 170, 172, 254, 256 bytes
    out += ["日本語" * 11, "🎬" * 8, "€" * 21845, "€" * 21845 + "a", "x\x00y", None, "", None]
    return out


@pytest.mark.parametrize("t", [pa.string(), pa.large_string()], ids=str)
def test_string_lengths(t: pa.DataType) -> None:
    arr = pa.array(_texts(), t)
    assert_encodes_like_pack_value(arr)
    got = encode_column(arr).to_pylist()
    assert got[0] == b"\xa0" and got[-1] == b"\xc0"


def test_string_header_boundaries() -> None:
    # One byte of difference in length moves the value to the next msgpack format.
    got = encode_column(pa.array(["a" * n for n in STRING_LENGTHS])).to_pylist()
    heads = [g[:1] for g in got]
    assert heads == [b"\xa0", b"\xa1", b"\xbf", b"\xd9", b"\xd9", b"\xda", b"\xda", b"\xdb"]


@pytest.mark.parametrize("t", [pa.binary(), pa.large_binary()], ids=str)
def test_binary_lengths(t: pa.DataType) -> None:
    values = [bytes(range(256)) * (n // 256) + bytes(n % 256) for n in STRING_LENGTHS]
    arr = pa.array([*values, None, b"\x00", None], t)
    assert_encodes_like_pack_value(arr)
    heads = [g[:1] for g in encode_column(arr).to_pylist()]
    assert heads[:len(STRING_LENGTHS)] == [b"\xc4"] * 5 + [b"\xc5", b"\xc5", b"\xc6"]


@pytest.mark.parametrize("width", [1, 16, 31, 32, 255, 256, 300, 65536])
def test_fixed_size_binary(width: int) -> None:
    values = [b"\x00" * width, None, bytes(i % 256 for i in range(width)), b"\xff" * width]
    arr = pa.array(values, pa.binary(width))
    assert_encodes_like_pack_value(arr)
    assert_encodes_like_pack_value(arr.slice(1))


@pytest.mark.parametrize("t", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()],
                         ids=str)
def test_string_slices_and_chunks(t: pa.DataType) -> None:
    values = ["", "a" * 40, None, "ä" * 200, "b", None, "c" * 300]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values = [v.encode() if v is not None else None for v in values]
    arr = pa.array(values, t)
    assert_encodes_like_pack_value(arr.slice(1, 4))
    assert_encodes_like_pack_value(arr.slice(3))
    assert_encodes_like_pack_value(pa.chunked_array([arr.slice(0, 3), arr.slice(3)]))


@pytest.mark.parametrize("value_type", [pa.string(), pa.large_string(), pa.binary()], ids=str)
def test_dictionary_encoded_strings(value_type: pa.DataType) -> None:
    def cast(texts: list[str | None]) -> pa.Array:
        if value_type == pa.binary():
            return pa.array([t.encode() if t is not None else None for t in texts], value_type)
        return pa.array(texts, value_type)

    arr = cast(["DE", "ä" * 40, "", None, "DE", "x" * 300, None, "ä" * 40]).dictionary_encode()
    assert pa.types.is_dictionary(arr.type)
    assert_encodes_like_pack_value(arr)
    assert_encodes_like_pack_value(arr.slice(2, 4))
    # A dictionary that holds a null value and an unused entry.
    indices = pa.array([0, 1, None, 2, 0], pa.int32())
    dictionary = cast(["a", None, "b" * 33, "unused"])
    assert_encodes_like_pack_value(pa.DictionaryArray.from_arrays(indices, dictionary))


@HYPOTHESIS
@given(st.lists(st.one_of(TEXT, st.none()), max_size=30))
def test_strings_random(values: list[str | None]) -> None:
    assert_encodes_like_pack_value(pa.array(values, pa.string()))
    assert_encodes_like_pack_value(pa.array(values, pa.large_string()))
    assert_encodes_like_pack_value(pa.array(values, pa.string()).dictionary_encode())


@HYPOTHESIS
@given(st.lists(st.one_of(st.binary(max_size=300), st.none()), max_size=30))
def test_binaries_random(values: list[bytes | None]) -> None:
    assert_encodes_like_pack_value(pa.array(values, pa.binary()))
    assert_encodes_like_pack_value(pa.array(values, pa.large_binary()))


@HYPOTHESIS
@given(st.lists(st.one_of(st.binary(min_size=5, max_size=5), st.none()), max_size=30))
def test_fixed_size_binaries_random(values: list[bytes | None]) -> None:
    assert_encodes_like_pack_value(pa.array(values, pa.binary(5)))


# -- lists of vectorised types ----------------------------------------------------------------

LIST_TYPES = [pa.list_(pa.int64()), pa.large_list(pa.string()), pa.list_(pa.float64()),
              pa.list_(pa.bool_()), pa.list_(pa.binary())]


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_list_header_boundaries(count: int) -> None:
    assert_encodes_like_pack_value(pa.array([list(range(count)), None, []], pa.list_(pa.int32())))


def test_nested_lists_slices_and_chunks() -> None:
    values = [[["a"], ["b", None]], None, [[]], [None], [["c", "d", "e"]]]
    arr = pa.array(values, pa.list_(pa.list_(pa.string())))
    assert_encodes_like_pack_value(arr)
    assert_encodes_like_pack_value(arr.slice(1, 3))
    assert_encodes_like_pack_value(pa.chunked_array([arr.slice(0, 2), arr.slice(3)]))


@HYPOTHESIS
@given(st.data())
def test_lists_random(data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(LIST_TYPES))
    item = {"int64": st.integers(-2**63, 2**63 - 1), "string": TEXT, "large_string": TEXT,
            "double": st.floats(), "bool": st.booleans(), "binary": st.binary(max_size=40)}[
        str(t.value_type)]
    rows = data.draw(st.lists(st.one_of(st.none(), st.lists(st.one_of(item, st.none()),
                                                             max_size=20)), max_size=20))
    arr = pa.array(rows, t)
    start = data.draw(st.integers(0, len(rows)))
    assert_encodes_like_pack_value(arr)
    assert_encodes_like_pack_value(arr.slice(start))
