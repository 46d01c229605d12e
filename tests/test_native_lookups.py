"""The compiled lookups (native/src/reader.rs) against two independent oracles.

Random tables of every common value type, keyed by int, str, bytes or composite keys,
are published twice (a base, then a delta with updates, inserts and deletes), so a
consumer serves ``[overlay, base]``. Every lookup form (``get``, ``[]``, ``in``,
``get_many`` on a list, a generator, a numpy array and a pyarrow array, ``find``,
``keys()``, ``items()``) must agree with:

- the Arrow table itself (``to_pylist()`` of the version's rows), and
- the pure-Python lookup the compiled one replaced (``tests/oracles/lookup.py``), run over the
  very same mapped files.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import feedkit
from tests.oracles.lookup import make_get

TYPES: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "i": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "small": (pa.int16(), st.integers(-2**15, 2**15 - 1)),
    "u": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "f": (pa.float64(), st.floats(allow_nan=False)),
    "b": (pa.bool_(), st.booleans()),
    "s": (pa.string(), st.text(max_size=40)),
    "bin": (pa.binary(), st.binary(max_size=40)),
    "d": (pa.date32(), st.dates()),
    "ts": (pa.timestamp("us"), st.datetimes(min_value=dt.datetime(1, 1, 1))),
    "dec": (pa.decimal128(12, 3), st.decimals(min_value=-10**8, max_value=10**8, places=3)),
    "li": (pa.list_(pa.int32()), st.lists(st.integers(-2**31, 2**31 - 1), max_size=5)),
    "ls": (pa.list_(pa.string()), st.lists(st.text(max_size=5), max_size=4)),
    "st": (pa.struct([("x", pa.int64()), ("y", pa.string())]),
           st.fixed_dictionaries({"x": st.integers(-9, 9), "y": st.text(max_size=3)})),
    "m": (pa.map_(pa.string(), pa.int64()),
          st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=3)),
}

KEYS: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(-2**63, 2**63 - 1),
    "str": st.text(max_size=12),
    "bytes": st.binary(max_size=12),
    "composite": st.tuples(st.integers(-2**63, 2**63 - 1), st.text(max_size=6)),
}
KEY_TYPES = {"int": pa.int64(), "str": pa.string(), "bytes": pa.binary()}


def _value(t: pa.DataType, v: Any) -> Any:
    """What a record holds for Arrow value ``v`` (``to_pylist`` gives maps as pairs)."""
    if v is None:
        return None
    if pa.types.is_map(t):
        return dict(v)
    if pa.types.is_decimal(t):
        return Decimal(v)
    return v


# Lists whose elements a format-2 file may code against a dictionary (`elements`).
ELEMENTS = {"li": st.integers(-2**31, 2**31 - 1), "ls": st.text(max_size=5)}


@st.composite
def versions(draw: st.DrawFn) -> tuple[str, list[str], list[dict[Any, tuple[Any, ...]]], int]:
    """A key kind, value columns, the rows of two versions (key -> values) and a state
    format. A column's values are drawn freely, from a small pool (so that a format-2
    file codes them against a dictionary), or, for lists, with elements from a pool."""
    kind = draw(st.sampled_from(sorted(KEYS)))
    columns = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=5, unique=True))
    strategies = []
    for c in columns:
        mode = draw(st.sampled_from(["free", "pool", "elements"] if c in ELEMENTS else ["free", "pool"]))
        if mode == "pool":
            strategies.append(st.sampled_from(draw(st.lists(TYPES[c][1], min_size=1, max_size=3))))
        elif mode == "elements":
            pool = draw(st.lists(ELEMENTS[c], min_size=1, max_size=4))
            strategies.append(st.lists(st.sampled_from(pool), max_size=6))
        else:
            strategies.append(TYPES[c][1])

    def row() -> st.SearchStrategy[tuple[Any, ...]]:
        return st.tuples(*(st.none() | strategy for strategy in strategies))

    first = draw(st.dictionaries(KEYS[kind], row(), max_size=40))
    second = dict(first)
    for k in draw(st.lists(st.sampled_from(sorted(first, key=repr)), max_size=10)) if first else []:
        if draw(st.booleans()):
            second.pop(k, None)
        else:
            second[k] = draw(row())
    second.update(draw(st.dictionaries(KEYS[kind], row(), max_size=10)))
    return kind, columns, [first, second], draw(st.sampled_from([2, 1]))


def _table(kind: str, columns: list[str], rows: dict[Any, tuple[Any, ...]]) -> pa.Table:
    keys = list(rows)
    data: dict[str, pa.Array] = {}
    if kind == "composite":
        data["k1"] = pa.array([k[0] for k in keys], pa.int64())
        data["k2"] = pa.array([k[1] for k in keys], pa.string())
    else:
        data["k"] = pa.array(keys, KEY_TYPES[kind])
    for i, c in enumerate(columns):
        t = TYPES[c][0]
        values = [rows[k][i] for k in keys]
        if pa.types.is_map(t):
            values = [None if v is None else list(v.items()) for v in values]
        data[c] = pa.array(values, t)
    return pa.table(data)


def _expected(table: pa.Table) -> list[tuple[Any, ...]]:
    types = [f.type for f in table.schema]
    return [tuple(_value(t, v) for t, v in zip(types, row.values(), strict=True))
            for row in table.to_pylist()]


def _key_of(kind: str, rec: tuple[Any, ...]) -> Any:
    return (rec[0], rec[1]) if kind == "composite" else rec[0]


def _absent(kind: str, present: set[Any]) -> list[Any]:
    candidates = {"int": [0, -1, 2**63 - 1, -2**63, 12345], "str": ["", "zz", "é", "\x00"],
                  "bytes": [b"", b"\x00", b"zz"], "composite": [(0, ""), (-1, "a"), (7, "é")]}
    return [k for k in candidates[kind] if k not in present]


@settings(max_examples=80, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(versions())
def test_compiled_lookups_agree_with_arrow_and_the_python_lookup(
        case: tuple[str, list[str], list[dict[Any, tuple[Any, ...]]], int]) -> None:
    """Both state formats answer as the Arrow table does (and as the Python lookup, the
    oracle of format 1), for every value type, over a base and an overlay."""
    kind, columns, rows, state_format = case
    pk = ("k1", "k2") if kind == "composite" else "k"
    indexes = [c for c in columns if c in ("i", "s", "small", "b")][:1]
    with tempfile.TemporaryDirectory() as tmp:
        store = feedkit.open_store(f"file://{tmp}/store")
        with feedkit.Producer(store, feed="diff.feed", primary_key=pk, indexes=indexes,
                              work_dir=Path(tmp) / "work", max_delta_ratio=1e9,
                              format=state_format) as producer:
            producer.publish(_table(kind, columns, rows[0]))
            with feedkit.Consumer(store, feed="diff.feed", cache_dir=Path(tmp) / "cache",
                                  watch=False, compact_ratio=1e9) as feed:
                producer.publish(_table(kind, columns, rows[1]))
                feed.refresh()
                _check(feed, kind, _table(kind, columns, rows[1]), indexes)


def _check(feed: feedkit.Consumer, kind: str, table: pa.Table, indexes: list[str]) -> None:
    want = {_key_of(kind, rec): rec for rec in _expected(table)}
    state = feed._state
    event(f"{kind} keys, {len(state.files)} files, {len(want)} records")
    event(f"format {state.base.format}, codings "
          f"{[c['coding'] for c in state.base.header.get('columns', [])]}")
    python_get = make_get(state.files, state.Record, state.use_list,
                          partial(state.spec.normalize, feed=state.feed)) \
        if state.base.format == 1 else want.get
    asked = [*want, *_absent(kind, set(want))]
    for key in asked:
        got = feed.get(key)
        assert got == want.get(key), key
        assert got == python_get(key), key
        assert (key in feed) == (key in want)
        if got is not None:
            assert type(got) is state.Record and got._asdict() == dict(zip(got._fields, got, strict=True))
            assert feed[key] == got
        else:
            with pytest.raises(KeyError):
                feed[key]
    expected_many = [want.get(k) for k in asked]
    assert feed.get_many(asked) == expected_many
    assert feed.get_many(iter(asked)) == expected_many
    if kind == "int":
        assert feed.get_many(np.array(asked, dtype=np.int64)) == expected_many
        assert feed.get_many(pa.array(asked, pa.int64())) == expected_many
    elif kind in ("str", "bytes"):
        assert feed.get_many(pa.array(asked, KEY_TYPES[kind])) == expected_many
    assert sorted(map(repr, feed.keys())) == sorted(map(repr, want))
    with feed.view() as view:
        assert {k: r for k, r in view.items()} == want
    for field in indexes:
        pos = table.column_names.index(field)
        for value in {rec[pos] for rec in want.values()}:
            found = sorted(feed.find(field, value), key=repr)
            assert found == sorted((r for r in want.values() if r[pos] == value), key=repr)


def test_keys_and_items_follow_the_primary_keys_order_not_the_columns(tmp_path: Path) -> None:
    """A composite key named in another order than its columns: keys() and items() give
    the parts in the key's order, decoded from the records (the slots hold hashes)."""
    table = pa.table({"id": pa.array([3, 1, 2], pa.int64()), "name": ["c", "a", "b"],
                      "year": pa.array([2001, 1999, 2000], pa.int32())})
    store = feedkit.open_store(f"file://{tmp_path}/store")
    with feedkit.Producer(store, feed="order.feed", primary_key=("year", "name"),
                          work_dir=tmp_path / "work") as producer:
        producer.publish(table)
    with feedkit.Consumer(store, feed="order.feed", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        want = {(r["year"], r["name"]): tuple(r.values()) for r in table.to_pylist()}
        assert sorted(feed.keys()) == sorted(want)
        assert {k: tuple(r) for k, r in feed.items()} == want
        assert all(type(k) is tuple for k in feed)
