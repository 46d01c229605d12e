"""Every type an Iceberg table can hold, through Producer.publish and back out of a Consumer.

A record must give back what ``pyarrow.Table.to_pylist()`` gives for its row, with
maps as dicts, and with the same Python types all the way down.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

import feedkit

UTC = dt.UTC
TS = dt.datetime(2024, 3, 31, 1, 30, 0, 123456)
NESTED = pa.list_(pa.struct([
    ("a", pa.int64()),
    ("m", pa.map_(pa.string(), pa.list_(pa.date32()))),
]))

# name -> (arrow type, values for ids 1..6); every column holds at least one null.
COLUMNS: dict[str, tuple[pa.DataType, list[Any]]] = {
    "b": (pa.bool_(), [True, False, None, True, False, None]),
    "i8": (pa.int8(), [-128, 127, None, 0, -1, -33]),
    "i16": (pa.int16(), [-32768, 32767, None, 0, 255, -129]),
    "i32": (pa.int32(), [-2**31, 2**31 - 1, None, 0, 65536, -32769]),
    "i64": (pa.int64(), [-2**63, 2**63 - 1, None, 0, 2**32, -2**31 - 1]),
    "f32": (pa.float32(), [1.5, math.nan, None, -0.0, math.inf, 0.1]),
    "f64": (pa.float64(), [0.1, math.nan, None, -0.0, -math.inf, 1e300]),
    "dec": (pa.decimal128(16, 2),
            [Decimal("1.50"), Decimal("-0.01"), None, Decimal("0.00"),
             Decimal("12345678901234.56"), Decimal("-99999999999999.99")]),
    "dec38": (pa.decimal128(38, 10),
              [Decimal("0E-10"), Decimal("1.2500000000"), None,
               Decimal("-9999999999999999999999999999.9999999999"), Decimal("3.1415926535"),
               Decimal("1E-10")]),
    "d": (pa.date32(), [dt.date(2024, 2, 29), dt.date(1, 1, 1), None, dt.date(9999, 12, 31),
                        dt.date(1970, 1, 1), dt.date(1969, 12, 31)]),
    "t": (pa.time64("us"), [dt.time(0, 0), dt.time(23, 59, 59, 999999), None,
                            dt.time(12, 0, 0, 1), dt.time(0, 0, 0, 1), dt.time(13, 14, 15)]),
    "ts": (pa.timestamp("us"), [TS, dt.datetime(1900, 1, 1), None, dt.datetime(1, 1, 1),
                                dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
                                dt.datetime(1969, 12, 31, 23, 59, 59, 999999)]),
    "ts_utc": (pa.timestamp("us", tz="UTC"),
               [TS.replace(tzinfo=UTC), None, dt.datetime(1960, 1, 1, tzinfo=UTC),
                dt.datetime(1970, 1, 1, tzinfo=UTC), None,
                dt.datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC)]),
    # 2024-10-27 02:30 happens twice in Berlin: fold 0 (00:30 UTC) and fold 1 (01:30 UTC).
    "ts_berlin": (pa.timestamp("us", tz="Europe/Berlin"),
                  [TS.replace(tzinfo=UTC), dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
                   dt.datetime(2024, 10, 27, 1, 30, tzinfo=UTC), None,
                   dt.datetime(2024, 7, 1, 12, tzinfo=UTC), dt.datetime(1950, 1, 1, tzinfo=UTC)]),
    "ts_plus1": (pa.timestamp("us", tz="+01:00"),
                 [TS.replace(tzinfo=UTC), None, dt.datetime(1960, 7, 1, tzinfo=UTC),
                  dt.datetime(2024, 12, 31, 23, 30, tzinfo=UTC), None, None]),
    "ts_minus": (pa.timestamp("us", tz="-03:30"),
                 [TS.replace(tzinfo=UTC), None, dt.datetime(2000, 1, 1, 1, tzinfo=UTC), None,
                  None, None]),
    "s": (pa.string(), ["", "ä" * 40, None, "x" * 300, "日本語", "a"]),
    "ls": (pa.large_string(), ["a", None, "", "€" * 100, "b", None]),
    "bin": (pa.binary(), [b"", b"\x00\xff", None, b"x" * 70000, b"\xc0", None]),
    "fsb": (pa.binary(16), [b"\x00" * 16, None, b"\xff" * 16, uuid.UUID(int=7).bytes,
                            b"a" * 16, None]),
    "li": (pa.list_(pa.int64()), [[1, 2], [], None, [None, 3], [2**63 - 1], [-1] * 20]),
    "lstr": (pa.list_(pa.string()), [["a"], [], None, [None, "b"], ["ä" * 40], [""]]),
    "m": (pa.map_(pa.string(), pa.int64()),
          [[("a", 1), ("b", 2)], [], None, [("c", None)], [("", -1)], [("x" * 40, 2**40)]]),
    "m_int": (pa.map_(pa.int64(), pa.string()),
              [[(1, "a"), (-2, None)], None, [], [(2**62, "")], [(0, "z")], None]),
    "st": (pa.struct([("x", pa.int64()), ("y", pa.string()), ("z", pa.list_(pa.float64()))]),
           [{"x": 1, "y": "a", "z": [1.0]}, None, {"x": None, "y": None, "z": None},
            {"x": 2, "y": "b", "z": []}, {"x": -1, "y": "", "z": [math.nan, None]}, None]),
    "nest": (NESTED,
             [[{"a": 1, "m": [("k", [dt.date(2020, 1, 1), None])]}], None, [],
              [None, {"a": None, "m": None}], [{"a": 2, "m": []}],
              [{"a": 3, "m": [("x", []), ("y", None), ("z", [dt.date(1999, 12, 31)])]}]]),
}
IDS = [1, 2, 3, 4, 5, 6]


def _column(t: pa.DataType, values: list[Any]) -> pa.Array:
    return pa.array(values, t, from_pandas=False)


def wide_table() -> pa.Table:
    data = {"id": pa.array(IDS, pa.int64())}
    data.update({name: _column(t, values) for name, (t, values) in COLUMNS.items()})
    data["all_null"] = pa.array([None] * len(IDS), pa.int32())
    return pa.table(data)


def as_record(value: Any, t: pa.DataType) -> Any:
    """A ``to_pylist`` value as a record holds it: maps become dicts, at any depth."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return {as_record(k, t.key_type): as_record(v, t.item_type) for k, v in value}
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [as_record(v, t.value_type) for v in value]
    if pa.types.is_struct(t):
        return {f.name: as_record(value[f.name], f.type) for f in t}
    return value


def expected_rows(table: pa.Table, key: str | tuple[str, ...]) -> dict[Any, dict[str, Any]]:
    out = {}
    for row in table.to_pylist():
        rec = {f.name: as_record(row[f.name], f.type) for f in table.schema}
        out[row[key] if isinstance(key, str) else tuple(row[k] for k in key)] = rec
    return out


def assert_same(got: Any, want: Any, where: str = "record") -> None:
    """Equal, and of the same Python type all the way down (NaN equals NaN)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} {got!r}, want {want!r}"
    if isinstance(want, float):
        if math.isnan(want):
            assert math.isnan(got), f"{where}: {got!r}, want NaN"
        else:
            assert got == want and math.copysign(1, got) == math.copysign(1, want), \
                f"{where}: {got!r}, want {want!r}"
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)}, want {list(want)}"
        for k in want:
            assert_same(k, next(g for g in got if g == k), f"{where} key {k!r}")
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), f"{where}: {got!r}, want {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, dt.datetime):
        assert got == want, f"{where}: {got!r}, want {want!r}"
        # Aware datetimes compare as instants: also check the wall clock and the zone.
        assert got.replace(tzinfo=None) == want.replace(tzinfo=None), f"{where}: {got!r}"
        assert got.fold == want.fold, f"{where}: fold {got.fold}, want {want.fold}"
        assert type(got.tzinfo) is type(want.tzinfo), f"{where}: {got.tzinfo!r}"
        assert str(got.tzinfo) == str(want.tzinfo), f"{where}: {got.tzinfo!r}"
        assert got.utcoffset() == want.utcoffset(), f"{where}: {got!r}"
    elif isinstance(want, Decimal):
        assert got.as_tuple() == want.as_tuple(), f"{where}: {got!r}, want {want!r}"
    else:
        assert got == want, f"{where}: {got!r}, want {want!r}"


def assert_record(rec: Any, want: dict[str, Any], names: list[str]) -> None:
    assert isinstance(rec, tuple)
    assert rec._fields == tuple(names)
    assert_same(rec._asdict(), want, f"record {want.get(names[0])!r}")
    for i, name in enumerate(names):
        assert_same(rec[i], want[name], f"rec[{i}]")
        assert_same(getattr(rec, name), want[name], f"rec.{name}")


def publish(store: feedkit.BlobStore, feed: str, table: pa.Table,
            key: str | tuple[str, ...], **kwargs: Any) -> int:
    with feedkit.Producer(store, feed=feed, primary_key=key, **kwargs) as producer:
        version = producer.publish(table)
    assert version is not None
    return version


# -- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(COLUMNS))
def test_each_type_round_trips(store, cache_dir, name: str) -> None:
    t, values = COLUMNS[name]
    table = pa.table({"id": pa.array(IDS, pa.int64()), "value": _column(t, values)})
    assert table.column("value").null_count >= 1
    publish(store, "values", table, "id")
    want = expected_rows(table, "id")
    with feedkit.Consumer(store, feed="values", cache_dir=cache_dir, watch=False) as feed:
        for key in IDS:
            assert_record(feed.get(key), want[key], ["id", "value"])
        for rec, key in zip(feed.get_many(IDS), IDS, strict=True):
            assert_record(rec, want[key], ["id", "value"])


def test_wide_record_round_trips_across_batches(store, cache_dir) -> None:
    table = wide_table()
    # Small batches: records of one state come from several encoded batches.
    version = publish(store, "wide", table, "id", batch_rows=4)
    want = expected_rows(table, "id")
    names = table.column_names
    with feedkit.Consumer(store, feed="wide", cache_dir=cache_dir, watch=False) as feed:
        assert feed.version == version
        assert len(feed) == len(IDS)
        for key in IDS:
            assert_record(feed.get(key), want[key], names)
        many = feed.get_many([*IDS[::-1], 99, 1])
        assert many[len(IDS)] is None
        for rec, key in zip(many, [*IDS[::-1], None, 1], strict=True):
            if key is not None:
                assert_record(rec, want[key], names)
                assert_record(feed.get(key), want[key], names)
        assert feed.get(99) is None


def test_records_are_immutable_named_tuples(store, cache_dir) -> None:
    table = wide_table()
    publish(store, "wide", table, "id")
    with feedkit.Consumer(store, feed="wide", cache_dir=cache_dir, watch=False) as feed:
        rec, (same,) = feed.get(2), feed.get_many([2])
        assert type(rec) is type(same)
        for r in (rec, same):
            assert isinstance(r, tuple) and len(r) == table.num_columns
            assert r[0] == r.id == 2 and r[-1] is None and r.s == r[table.column_names.index("s")]
            with pytest.raises(AttributeError):
                r.id = 3  # type: ignore[misc]
            with pytest.raises(TypeError):
                r[0] = 3  # type: ignore[index]
            assert r._replace(id=3).id == 3 and r.id == 2


def test_nan_and_null_stay_distinct(store, cache_dir) -> None:
    table = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "f64": pa.array([math.nan, None, 0.0], pa.float64(), from_pandas=False),
        "f32": pa.array([None, math.nan, 0.0], pa.float32(), from_pandas=False),
    })
    publish(store, "nan", table, "id")
    with feedkit.Consumer(store, feed="nan", cache_dir=cache_dir, watch=False) as feed:
        a, b, c = feed.get_many([1, 2, 3])
        assert type(a.f64) is float and math.isnan(a.f64) and a.f32 is None
        assert b.f64 is None and type(b.f32) is float and math.isnan(b.f32)
        assert c.f64 == 0.0 and c.f32 == 0.0
        assert math.isnan(feed.get(1).f64) and feed.get(2).f64 is None


def test_decimals_keep_their_exponent(store, cache_dir) -> None:
    table = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "d2": pa.array([Decimal("1.50"), None, Decimal("1.5"), Decimal("100")],
                       pa.decimal128(10, 2)),
        "d0": pa.array([Decimal("7"), Decimal("-12"), None, Decimal("0")], pa.decimal128(5, 0)),
    })
    publish(store, "dec", table, "id")
    with feedkit.Consumer(store, feed="dec", cache_dir=cache_dir, watch=False) as feed:
        got = [(str(r.d2), str(r.d0)) for r in feed.get_many([1, 2, 3, 4])]
        assert got == [("1.50", "7"), ("None", "-12"), ("1.50", "None"), ("100.00", "0")]


def test_time_zones_are_kept(store, cache_dir) -> None:
    instant = dt.datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    table = pa.table({
        "id": pa.array([1], pa.int64()),
        "utc": pa.array([instant], pa.timestamp("us", tz="UTC")),
        "berlin": pa.array([instant], pa.timestamp("us", tz="Europe/Berlin")),
        "plus1": pa.array([instant], pa.timestamp("us", tz="+01:00")),
        "naive": pa.array([instant.replace(tzinfo=None)], pa.timestamp("us")),
    })
    publish(store, "tz", table, "id")
    with feedkit.Consumer(store, feed="tz", cache_dir=cache_dir, watch=False) as feed:
        rec = feed.get(1)
        assert rec.utc == rec.berlin == rec.plus1 == instant
        assert (rec.utc.hour, rec.berlin.hour, rec.plus1.hour) == (10, 12, 11)
        assert rec.berlin.utcoffset() == dt.timedelta(hours=2)
        assert rec.plus1.utcoffset() == dt.timedelta(hours=1)
        assert rec.naive.tzinfo is None and rec.naive.hour == 10


def test_uuid_round_trips(store, cache_dir) -> None:
    if not hasattr(pa, "uuid"):
        pytest.skip("this pyarrow has no pa.uuid()")
    values = [uuid.UUID(int=1), None, uuid.UUID("12345678-1234-5678-1234-567812345678")]
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                      "u": pa.array([v.bytes if v else None for v in values], pa.uuid())})
    publish(store, "uuids", table, "id")
    want = expected_rows(table, "id")
    assert type(want[1]["u"]) is uuid.UUID
    with feedkit.Consumer(store, feed="uuids", cache_dir=cache_dir, watch=False) as feed:
        for key in (1, 2, 3):
            assert_record(feed.get(key), want[key], ["id", "u"])


# -- keys ------------------------------------------------------------------------------------

KEY_COLUMNS: dict[str, pa.Array] = {
    "int8": pa.array([-128, 0, 127], pa.int8()),
    "int16": pa.array([-32768, 1, 32767], pa.int16()),
    "int32": pa.array([-2**31, 2, 2**31 - 1], pa.int32()),
    "int64": pa.array([-2**63, 3, 2**63 - 1], pa.int64()),
    "uint8": pa.array([0, 128, 255], pa.uint8()),
    "uint16": pa.array([0, 256, 65535], pa.uint16()),
    "uint32": pa.array([0, 65536, 2**32 - 1], pa.uint32()),
    "uint64": pa.array([0, 2**32, 2**63 - 1], pa.uint64()),
    "int64_dict": pa.array([5, 6, 7], pa.int64()).dictionary_encode(),
    "string": pa.array(["", "ä" * 40, "x"], pa.string()),
    "large_string": pa.array(["a", "b" * 300, "日本"], pa.large_string()),
    "string_dict": pa.array(["DE", "US", "日本"], pa.string()).dictionary_encode(),
    "binary": pa.array([b"", b"\x00", b"\xff" * 40], pa.binary()),
    "large_binary": pa.array([b"a", b"b", b"\xc0"], pa.large_binary()),
    "fixed_size_binary": pa.array([b"\x00" * 4, b"abcd", b"\xff" * 4], pa.binary(4)),
}


@pytest.mark.parametrize("kind", list(KEY_COLUMNS))
def test_single_column_keys(store, cache_dir, kind: str) -> None:
    keys = KEY_COLUMNS[kind]
    table = pa.table({"k": keys, "v": pa.array(["one", "two", "three"])})
    publish(store, "keys", table, "k")
    want = expected_rows(table, "k")
    absent = {"str": "absent", "bytes": b"absent", "int": 42}
    with feedkit.Consumer(store, feed="keys", cache_dir=cache_dir, watch=False) as feed:
        for key in keys.to_pylist():
            assert_record(feed.get(key), want[key], ["k", "v"])
            assert feed[key] == feed.get(key) and key in feed
        assert [r._asdict() for r in feed.get_many(keys.to_pylist())] == list(want.values())
        sample = keys.to_pylist()[0]
        missing = absent["str" if isinstance(sample, str) else
                         "bytes" if isinstance(sample, bytes) else "int"]
        assert feed.get(missing) is None
        assert feed.get_many([missing, sample])[0] is None
        assert sorted(feed.keys(), key=repr) == sorted(want, key=repr)


def test_bytes_keys_accept_bytes_like(store, cache_dir) -> None:
    table = pa.table({"k": pa.array([b"ab", b"cd"]), "v": [1, 2]})
    publish(store, "bkeys", table, "k")
    with feedkit.Consumer(store, feed="bkeys", cache_dir=cache_dir, watch=False) as feed:
        assert feed.get(bytearray(b"ab")).v == 1
        assert feed.get(memoryview(b"cd")).v == 2
        assert [r.v for r in feed.get_many([bytearray(b"cd"), b"ab"])] == [2, 1]


def composite_table() -> pa.Table:
    return pa.table({
        "movie_id": pa.array([1, 1, 2, 80000123, -5], pa.int64()),
        "dim": pa.array(["x", "y", "x", "country", ""]),
        "vals": pa.array([["a"], [], None, ["DE", "US"], ["ä" * 40]], pa.list_(pa.string())),
    })


def test_composite_keys(store, cache_dir) -> None:
    table = composite_table()
    publish(store, "composite", table, ("movie_id", "dim"))
    want = expected_rows(table, ("movie_id", "dim"))
    names = table.column_names
    with feedkit.Consumer(store, feed="composite", cache_dir=cache_dir, watch=False) as feed:
        assert_record(feed.get((1, "x")), want[(1, "x")], names)
        for key, row in want.items():
            assert_record(feed.get(key), row, names)
            assert_record(feed.get(list(key)), row, names)
        assert feed.get((1, "z")) is None and feed.get((3, "x")) is None
        many = feed.get_many([(2, "x"), (9, "q"), (80000123, "country")])
        assert many[1] is None
        assert_record(many[0], want[(2, "x")], names)
        assert_record(many[2], want[(80000123, "country")], names)
        assert sorted(feed.keys()) == sorted(want)


def test_composite_keys_with_other_part_kinds(store, cache_dir) -> None:
    table = pa.table({
        "a": pa.array(["x", "x", "y"]),
        "b": pa.array([b"\x00", b"\x01", b"\x00"]),
        "c": pa.array([2**40, -1, 0], pa.int64()),
        "v": pa.array([1.5, None, 2.5]),
    })
    publish(store, "composite3", table, ("a", "b", "c"))
    want = expected_rows(table, ("a", "b", "c"))
    with feedkit.Consumer(store, feed="composite3", cache_dir=cache_dir, watch=False) as feed:
        for key, row in want.items():
            assert_record(feed.get(key), row, table.column_names)
        assert feed.get(("x", b"\x00", -1)) is None
        assert [r.v if r else None for r in feed.get_many(list(want))] == [1.5, None, 2.5]


@pytest.mark.parametrize(("key", "column", "bad"), [
    ("id", pa.array([1, 2], pa.int64()), ["1", b"1", 1.0, 1.5, None, (1,), [1]]),
    ("name", pa.array(["a", "b"]), [1, b"a", None, ("a",)]),
    ("blob", pa.array([b"a", b"b"]), ["a", 1, None]),
])
def test_wrong_key_type_raises_key_type_error(store, cache_dir, key: str, column: pa.Array,
                                              bad: list[Any]) -> None:
    publish(store, "typed.feed", pa.table({key: column, "v": [1, 2]}), key)
    with feedkit.Consumer(store, feed="typed.feed", cache_dir=cache_dir, watch=False) as feed:
        for wrong in bad:
            with pytest.raises(feedkit.KeyTypeError, match="typed.feed") as info:
                feed.get(wrong)
            assert isinstance(info.value, TypeError)
            with pytest.raises(feedkit.KeyTypeError, match="typed.feed"):
                feed.get_many([column.to_pylist()[0], wrong])


def test_int_key_outside_int64_is_absent(store, cache_dir) -> None:
    publish(store, "typed.feed", pa.table({"id": pa.array([0, 2**63 - 1]), "v": [1, 2]}), "id")
    with feedkit.Consumer(store, feed="typed.feed", cache_dir=cache_dir, watch=False) as feed:
        for key in (2**63, 2**64, -2**63 - 1, 2**64 + 2**63 - 1):
            assert feed.get(key) is None
            assert feed.get_many([key, 0])[0] is None
        assert feed.get_many([2**63 - 1, 2**64])[0].v == 2


def test_bool_is_not_an_int_key(store, cache_dir) -> None:
    publish(store, "typed.feed", pa.table({"id": [0, 1], "v": [1, 2]}), "id")
    with feedkit.Consumer(store, feed="typed.feed", cache_dir=cache_dir, watch=False) as feed:
        for wrong in (True, False):
            with pytest.raises(feedkit.KeyTypeError, match="typed.feed"):
                feed.get(wrong)
            with pytest.raises(feedkit.KeyTypeError, match="typed.feed"):
                feed.get_many([wrong])


def test_bool_mixed_with_int_keys_is_refused(store, cache_dir) -> None:
    publish(store, "typed.feed", pa.table({"id": [0, 1], "v": [1, 2]}), "id")
    with (feedkit.Consumer(store, feed="typed.feed", cache_dir=cache_dir, watch=False) as feed,
          pytest.raises(feedkit.KeyTypeError, match="typed.feed")):
        feed.get_many([1, True])


def test_composite_key_of_wrong_shape_raises_key_type_error(store, cache_dir) -> None:
    publish(store, "composite", composite_table(), ("movie_id", "dim"))
    with feedkit.Consumer(store, feed="composite", cache_dir=cache_dir, watch=False) as feed:
        for wrong in [1, "x", None, b"x", 1.0]:
            with pytest.raises(feedkit.KeyTypeError, match="'composite'"):
                feed.get(wrong)
        for wrong in [1, ["x", 1], (1, 2), (1, "x", 3), ("x", 1), (True, "x"), (1,), (1.0, "x")]:
            with pytest.raises(feedkit.KeyTypeError, match="'composite'"):
                feed.get_many([(1, "x"), wrong])


@pytest.mark.parametrize("wrong", [("x", 1), (True, "x"), (1,), (1, "x", 3), (1.0, "x")])
def test_composite_key_part_types(store, cache_dir, wrong: tuple[Any, ...]) -> None:
    publish(store, "composite", composite_table(), ("movie_id", "dim"))
    with (feedkit.Consumer(store, feed="composite", cache_dir=cache_dir, watch=False) as feed,
          pytest.raises(feedkit.KeyTypeError, match="'composite'")):
        feed.get(wrong)
