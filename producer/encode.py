"""Arrow batches to records: the producer side of the record codec, compiled.

``encode_batch`` hands each batch to the Rust encoder (``feedkit._native``, written in
``native/core/src/encode.rs``), which reads the Arrow arrays in place through the C data
interface and, with the GIL released, writes one msgpack array per row, each value's
bytes exactly those of ``feedkit.codec.pack_value`` applied to the value pyarrow's
``to_pylist`` gives (docs/FORMAT.md, section 6), and takes each row's slot key
(section 5) and index hashes (section 4.7) from the bytes it wrote. No Python runs per
row or per value. This module keeps what is decided per schema: which types feedkit
carries, how they are described in manifests, and the key spec.

The Python encoder it replaced lives on in ``tests/oracles/encode.py`` as the oracle
of the differential tests.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from feedkit import _native
from feedkit.errors import ValidationError
from feedkit.keys import KeySpec

__all__ = [
    "ColumnPlan", "EncodedBatch", "describe_schema", "encode_batch", "encode_column",
    "key_spec_for",
]


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.uuid":
        return "uuid"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time" if t.unit != "ns" else "unsupported"
    if pa.types.is_timestamp(t):
        if t.unit == "ns":
            return "unsupported"
        return "timestamptz" if t.tz is not None else "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list"
    if pa.types.is_map(t):
        return "map"
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    return "unsupported"


def _nested_types(t: pa.DataType) -> list[pa.DataType]:
    if pa.types.is_map(t):
        return [t.key_type, t.item_type]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [t.value_type]
    if pa.types.is_struct(t):
        return [t.field(i).type for i in range(t.num_fields)]
    if pa.types.is_dictionary(t):
        return [t.value_type]
    return []


def _contains(t: pa.DataType, kinds: set[str]) -> bool:
    return _kind(t) in kinds or any(_contains(c, kinds) for c in _nested_types(t))


def describe_schema(schema: pa.Schema, feed: str) -> list[dict[str, Any]]:
    """The schema as it goes into manifests and state headers.

    Raises:
        ValidationError: a column name that cannot be a Record field or appears twice, or
            a type feedkit cannot carry (names the feed and the column).
    """
    columns = []
    seen: set[str] = set()
    for f in schema:
        name = f.name
        if name in seen:
            raise ValidationError(
                f"feed {feed!r}: column {name!r} appears {schema.names.count(name)} times in "
                "the table (a Record field needs one name per column; rename or drop one)")
        seen.add(name)
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            raise ValidationError(
                f"feed {feed!r}: column {name!r} cannot be a Record field name "
                "(use an identifier that does not start with '_'; project or rename it)"
            )
        if _contains(f.type, {"unsupported"}):
            raise ValidationError(
                f"feed {feed!r}: column {name!r} has type {f.type}, which feedkit cannot carry "
                "(nanosecond times and timestamps, durations and intervals are not supported)"
            )
        columns.append({"name": name, "type": str(f.type), "kind": _kind(f.type),
                        "nullable": f.nullable})
    return columns


def key_spec_for(schema: pa.Schema, primary_key: tuple[str, ...], feed: str) -> KeySpec:
    """The key spec for ``primary_key`` in ``schema``.

    Raises:
        ValidationError: a key column is missing or of a type that cannot be a key.
    """
    parts = []
    for column in primary_key:
        if column not in schema.names:
            raise ValidationError(f"feed {feed!r}: key column {column!r} is missing from the table "
                                  f"(columns: {', '.join(schema.names)})")
        kind = _kind(schema.field(column).type)
        if kind == "uuid":
            kind = "unsupported"
        if kind not in ("int", "str", "bytes"):
            raise ValidationError(f"feed {feed!r}: key column {column!r} has type "
                                  f"{schema.field(column).type}; keys are integers, strings or bytes")
        parts.append(kind)
    return KeySpec(tuple(primary_key), tuple(parts))


# -- encoding ------------------------------------------------------------------------------

@dataclass
class ColumnPlan:
    """What a batch must become: the key, the indexed fields, the schema."""

    feed: str
    spec: KeySpec
    names: list[str]
    index_fields: list[str]


@dataclass
class EncodedBatch:
    data: np.ndarray  # uint8: the batch's records back to back
    offsets: np.ndarray  # int64, n + 1
    slot_keys: np.ndarray  # int64 keys, or uint64 key hashes
    index_hashes: dict[str, np.ndarray]
    null_key_rows: np.ndarray  # row numbers (within the batch) whose key has a null part


def encode_column(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value's canonical msgpack bytes, as a large_binary array.

    Raises:
        ValidationError: a type or value feedkit cannot carry.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not len(arr):
        arr = pa.nulls(0, arr.type)  # see encode_batch
    data, offsets = _native.encode_array(arr)
    return pa.Array.from_buffers(pa.large_binary(), len(arr),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _key_kind(spec: KeySpec) -> str:
    if spec.composite:
        return "composite"
    return "int" if spec.slot_kind == "int" else "raw"


def encode_batch(batch: pa.RecordBatch, plan: ColumnPlan) -> EncodedBatch:
    """Encode one batch (columns in ``plan.names`` order).

    Raises:
        ValidationError: a type or value feedkit cannot carry, or uint64 keys past
            ``2**63 - 1`` (naming the feed and the column). Null keys are not raised
            here: their rows are returned in ``null_key_rows``.
    """
    if not batch.num_rows:
        # pyarrow exports an empty slice with its offset but without the buffers that
        # offset points into, which arrow-rs refuses: a fresh empty batch has neither.
        batch = pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in batch.schema],
                                           schema=batch.schema)
    data, offsets, slot_keys, hashes, null_rows = _native.encode_batch(
        batch, feed=plan.feed, names=plan.names, key=list(plan.spec.columns),
        key_kind=_key_kind(plan.spec), index=plan.index_fields)
    return EncodedBatch(
        data=np.frombuffer(data, dtype=np.uint8),
        offsets=np.frombuffer(offsets, dtype=np.int64),
        slot_keys=np.frombuffer(slot_keys,
                                dtype=np.int64 if plan.spec.slot_kind == "int" else np.uint64),
        index_hashes={name: np.frombuffer(h, dtype=np.uint64)
                      for name, h in zip(plan.index_fields, hashes, strict=True)},
        null_key_rows=np.frombuffer(null_rows, dtype=np.int64),
    )
