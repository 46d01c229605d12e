"""Tables the producer refuses: a ValidationError that says what is wrong, and nothing published.

A refused table names the feed, the column and (for bad keys) a few of the offending
keys, and leaves the store exactly as it was: no blob, no manifest, no announcement,
so consumers keep serving the version they serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import feedkit
from feedkit import names
from feedkit.manifest import Announcement

FEED = "val.feed"


def base_table() -> pa.Table:
    """A table every case's key and index settings accept."""
    return pa.table({
        "movie_id": pa.array([80000123, 80000456, 7, 1, 2], pa.int64()),
        "dim": pa.array(["country", "country", "x-part", "x", "y"]),
        "country": pa.array(["DE", "US", "FR", "BR", "JP"]),
        "blob": pa.array([b"a", b"b", b"c", b"d", b"e"]),
        "tags": pa.array([["a"], [], None, ["b", "c"], ["d"]], pa.list_(pa.string())),
    })


def with_column(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, column)
    return table.append_column(name, column)


@dataclass
class Case:
    id: str
    primary_key: str | tuple[str, ...]
    make: Callable[[pa.Table], pa.Table]  # the bad table, from base_table()
    mentions: tuple[str, ...]  # what the message must contain besides the feed
    indexes: tuple[str, ...] = ()
    key_never_valid: bool = False  # no table can be published with this key


CASES = [
    Case("duplicate-int-keys", "movie_id",
         lambda t: with_column(t, "movie_id",
                               pa.array([80000123, 80000456, 80000123, 80000456, 80000456])),
         ("movie_id", "80000123", "80000456")),
    Case("duplicate-composite-keys", ("movie_id", "dim"),
         lambda t: with_column(with_column(t, "dim", pa.array(["country", "country", "x-part",
                                                               "x", "x"])),
                               "movie_id", pa.array([80000123, 80000456, 7, 1, 1])),
         ("movie_id", "dim", "(1, 'x')")),
    Case("duplicate-str-keys", "country",
         lambda t: with_column(t, "country", pa.array(["DE", "US", "DE", "BR", "US"])),
         ("country", "'DE'", "'US'")),
    Case("duplicate-bytes-keys", "blob",
         lambda t: with_column(t, "blob", pa.array([b"a", b"zz", b"c", b"zz", b"e"])),
         ("blob", "b'zz'")),
    Case("null-int-key", "movie_id",
         lambda t: with_column(t, "movie_id", pa.array([80000123, None, 7, 1, 2], pa.int64())),
         ("movie_id", "null")),
    Case("null-str-key", "country",
         lambda t: with_column(t, "country", pa.array(["DE", "US", None, "BR", "JP"])),
         ("country", "null")),
    Case("null-in-the-dictionary-of-a-str-key", "country",
         lambda t: with_column(t, "country", pa.DictionaryArray.from_arrays(
             pa.array([0, 1, 2, 3, 4], pa.int32()), pa.array(["DE", "US", "FR", None, "JP"]))),
         ("country", "null")),
    Case("null-first-part-of-composite-key", ("movie_id", "dim"),
         lambda t: with_column(t, "movie_id", pa.array([80000123, 80000456, None, 1, 2])),
         ("movie_id", "null", "'x-part'")),
    Case("null-second-part-of-composite-key", ("movie_id", "dim"),
         lambda t: with_column(t, "dim", pa.array(["country", None, "x-part", "x", "y"])),
         ("dim", "null", "80000456")),
    Case("missing-key-column", "movie_id", lambda t: t.drop_columns(["movie_id"]),
         ("'movie_id'", "missing")),
    Case("missing-composite-key-part", ("movie_id", "dim"), lambda t: t.drop_columns(["dim"]),
         ("'dim'", "missing")),
    Case("missing-index-column", "movie_id", lambda t: t.drop_columns(["country"]),
         ("'country'", "missing"), indexes=("country",)),
    Case("index-on-list-column", "movie_id", lambda t: t, ("'tags'",), indexes=("tags",)),
    Case("index-on-map-column", "movie_id",
         lambda t: t.append_column("attrs", pa.array([[("a", 1)]] * 5,
                                                     pa.map_(pa.string(), pa.int64()))),
         ("'attrs'",), indexes=("attrs",)),
    Case("column-name-with-space", "movie_id",
         lambda t: t.append_column("bad name", pa.array([1] * 5)), ("'bad name'",)),
    Case("column-name-starting-with-digit", "movie_id",
         lambda t: t.append_column("1st", pa.array([1] * 5)), ("'1st'",)),
    Case("column-name-starting-with-underscore", "movie_id",
         lambda t: t.append_column("_private", pa.array([1] * 5)), ("'_private'",)),
    Case("column-name-dunder", "movie_id",
         lambda t: t.append_column("__x", pa.array([1] * 5)), ("'__x'",)),
    Case("column-name-keyword", "movie_id",
         lambda t: t.append_column("class", pa.array([1] * 5)), ("'class'",)),
    Case("timestamp-ns-column", "movie_id",
         lambda t: t.append_column("ts", pa.array([1] * 5, pa.timestamp("ns"))),
         ("'ts'", "timestamp[ns]")),
    Case("timestamp-ns-tz-column", "movie_id",
         lambda t: t.append_column("ts", pa.array([1] * 5, pa.timestamp("ns", tz="UTC"))),
         ("'ts'",)),
    Case("timestamp-ns-inside-a-list", "movie_id",
         lambda t: t.append_column("ts", pa.array([[1]] * 5, pa.list_(pa.timestamp("ns")))),
         ("'ts'",)),
    Case("time-ns-column", "movie_id",
         lambda t: t.append_column("tod", pa.array([1] * 5, pa.time64("ns"))), ("'tod'",)),
    Case("float-key-column", "score",
         lambda t: t.append_column("score", pa.array([0.5, 1.5, 2.5, 3.5, 4.5])), ("'score'",),
         key_never_valid=True),
    Case("uint64-key-at-2**63", "movie_id",
         lambda t: with_column(t, "movie_id", pa.array([1, 2**63, 3, 4, 5], pa.uint64())),
         ("'movie_id'", "2**63")),
    Case("uint64-key-at-max", "movie_id",
         lambda t: with_column(t, "movie_id", pa.array([1, 2, 3, 2**64 - 1, 5], pa.uint64())),
         ("'movie_id'",)),
]


def store_files(root: Path) -> dict[str, bytes]:
    """Every object in the store folder, with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def announced(store: feedkit.BlobStore) -> int:
    key = names.announcement_key(FEED)
    return Announcement.from_bytes(store.get_bytes(key), key).version


def assert_refused(producer: feedkit.Producer, table: pa.Table, case: Case) -> str:
    with pytest.raises(feedkit.ValidationError) as info:
        producer.publish(table)
    message = str(info.value)
    assert f"'{FEED}'" in message, message
    for text in case.mentions:
        assert text in message, f"{text!r} not in {message!r}"
    assert len(message) < 600, message
    return message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_first_publish_writes_nothing(store, tmp_path: Path, case: Case) -> None:
    root = tmp_path / "store"
    bad = case.make(base_table())
    with feedkit.Producer(store, feed=FEED, primary_key=case.primary_key,
                          indexes=case.indexes) as producer:
        assert_refused(producer, bad, case)
        assert producer.version is None
        # The producer stays usable for the same mistake: it is refused again.
        assert_refused(producer, bad, case)
    assert store_files(root) == {}
    assert not store.exists(names.announcement_key(FEED))
    assert store.list(f"{FEED}/") == []
    with pytest.raises(feedkit.VersionNotFoundError):
        feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False).open()


def key_of(row: dict[str, Any], primary_key: str | tuple[str, ...]) -> Any:
    if isinstance(primary_key, str):
        return row[primary_key]
    return tuple(row[c] for c in primary_key)


AFTER_GOOD = [c for c in CASES if not c.key_never_valid]


@pytest.mark.parametrize("case", AFTER_GOOD, ids=[c.id for c in AFTER_GOOD])
def test_refused_publish_keeps_the_announced_version(store, cache_dir, tmp_path: Path,
                                                     case: Case) -> None:
    root = tmp_path / "store"
    good = base_table()
    first = good.to_pylist()[0]
    with feedkit.Producer(store, feed=FEED, primary_key=case.primary_key) as producer:
        v1 = producer.publish(good)
        assert v1 is not None
        with feedkit.Consumer(store, feed=FEED, cache_dir=cache_dir, watch=False) as feed:
            assert feed.version == v1
            before = store_files(root)
            bad = case.make(base_table())
            if not case.indexes:
                assert_refused(producer, bad, case)
            # A fresh producer, restoring from the store, with the case's settings.
            with feedkit.Producer(store, feed=FEED, primary_key=case.primary_key,
                                  indexes=case.indexes) as other:
                assert_refused(other, bad, case)
            assert store_files(root) == before
            assert announced(store) == v1
            assert feed.refresh() is False
            assert feed.version == v1
            assert feed.get(key_of(first, case.primary_key))._asdict() == first
            # The producer that was refused still publishes a good change.
            v2 = producer.publish(good.slice(1))
            assert v2 is not None and v2 > v1
            assert announced(store) == v2
            assert feed.refresh() is True and feed.version == v2
            assert len(feed) == good.num_rows - 1
            assert feed.get(key_of(first, case.primary_key)) is None


# -- how much a message says -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["int", "str", "composite"])
def test_many_duplicates_name_a_few_keys(store, tmp_path: Path, kind: str) -> None:
    ids = list(range(1_000_000, 1_000_100))
    # Every key twice, the copies in other batches than the originals.
    column = ids + ids[::-1]
    if kind == "int":
        table, key = pa.table({"k": pa.array(column, pa.int64())}), "k"
        shown = [str(i) for i in ids]
    elif kind == "str":
        table, key = pa.table({"k": pa.array([f"key-{i}" for i in column])}), "k"
        shown = [f"'key-{i}'" for i in ids]
    else:
        table = pa.table({"a": pa.array(column, pa.int64()), "b": pa.array(["x"] * 200)})
        key, shown = ("a", "b"), [f"({i}, 'x')" for i in ids]
    with feedkit.Producer(store, feed=FEED, primary_key=key, batch_rows=64) as producer, \
            pytest.raises(feedkit.ValidationError) as info:
        producer.publish(table)
    message = str(info.value)
    assert f"'{FEED}'" in message and "duplicate" in message
    named = [s for s in shown if s in message]
    assert 1 <= len(named) <= 10, message
    assert len(message) < 600
    assert store_files(tmp_path / "store") == {}


def test_many_null_keys_give_a_short_message(store, tmp_path: Path) -> None:
    table = pa.table({"movie_id": pa.array([None] * 500 + [1], pa.int64()),
                      "dim": pa.array([f"part-{i}" for i in range(501)])})
    with feedkit.Producer(store, feed=FEED, primary_key=("movie_id", "dim")) as producer, \
            pytest.raises(feedkit.ValidationError) as info:
        producer.publish(table)
    message = str(info.value)
    assert f"'{FEED}'" in message and "movie_id" in message and "null" in message
    assert "500" in message  # how many rows
    assert 1 <= sum(f"'part-{i}'" in message for i in range(500)) <= 10, message
    assert len(message) < 600
    assert store_files(tmp_path / "store") == {}


def test_a_batch_reader_with_duplicates_is_refused(store, tmp_path: Path) -> None:
    batches = [pa.record_batch({"k": pa.array([i, i + 1], pa.int64())}) for i in range(0, 20, 2)]
    batches.append(pa.record_batch({"k": pa.array([19, 20], pa.int64())}))
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    with feedkit.Producer(store, feed=FEED, primary_key="k") as producer, \
            pytest.raises(feedkit.ValidationError, match=r"val\.feed.*19"):
        producer.publish(reader)
    assert store_files(tmp_path / "store") == {}


def test_uint64_key_error_names_the_offending_values(store) -> None:
    table = pa.table({"k": pa.array([1, 2**63 + 5, 3], pa.uint64())})
    with feedkit.Producer(store, feed=FEED, primary_key="k") as producer, \
            pytest.raises(feedkit.ValidationError) as info:
        producer.publish(table)
    assert str(2**63 + 5) in str(info.value)


def test_uint64_key_batch_of_nulls_is_a_validation_error(store, tmp_path: Path) -> None:
    table = pa.table({"k": pa.array([1, None], pa.uint64())})
    with feedkit.Producer(store, feed=FEED, primary_key="k", batch_rows=1) as producer, \
            pytest.raises(feedkit.ValidationError, match="null"):
        producer.publish(table)
    assert store_files(tmp_path / "store") == {}


def test_dictionary_uint64_key_past_int64_is_refused(store, tmp_path: Path) -> None:
    column = pa.array([1, 2**63], pa.uint64()).dictionary_encode()
    with feedkit.Producer(store, feed=FEED, primary_key="k") as producer, \
            pytest.raises(feedkit.ValidationError, match="'k'"):
        producer.publish(pa.table({"k": column}))
    assert store_files(tmp_path / "store") == {}


def test_uint64_keys_below_2_63_publish(store, cache_dir) -> None:
    table = pa.table({"k": pa.array([0, 2**63 - 1], pa.uint64()), "v": ["lo", "hi"]})
    with feedkit.Producer(store, feed=FEED, primary_key="k") as producer:
        assert producer.publish(table) is not None
    with feedkit.Consumer(store, feed=FEED, cache_dir=cache_dir, watch=False) as feed:
        assert feed.get(2**63 - 1).v == "hi" and feed.get(0).v == "lo"
        assert feed.get(-1) is None and feed.get(-2**63) is None


# -- unchanged content -------------------------------------------------------------------------

def test_same_content_publishes_no_version(store, cache_dir, tmp_path: Path) -> None:
    root = tmp_path / "store"
    table = base_table()
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id", batch_rows=2) as producer:
        v1 = producer.publish(table)
        assert v1 is not None
        before = store_files(root)
        assert producer.publish(table) is None
        # Same rows, other order and other batches: the same state.
        assert producer.publish(table.take([4, 2, 0, 3, 1])) is None
        assert producer.publish(pa.RecordBatchReader.from_batches(
            table.schema, table.to_batches(max_chunksize=3))) is None
        assert producer.version == v1
        assert store_files(root) == before
        assert announced(store) == v1
    # A fresh producer restores the state from the store and sees no change either.
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as fresh:
        assert fresh.publish(table) is None
        assert fresh.version == v1
    assert store_files(root) == before
    with feedkit.Consumer(store, feed=FEED, cache_dir=cache_dir, watch=False) as feed:
        assert feed.version == v1
    # One changed value is a new version.
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        changed = with_column(table, "country", pa.array(["DE", "US", "FR", "BR", "CN"]))
        v2 = producer.publish(changed)
        assert v2 is not None and v2 > v1
        assert producer.publish(changed) is None
    assert announced(store) == v2


# -- configuration -----------------------------------------------------------------------------

BAD_FEED_NAMES = ["Bad/Name", "../x", "", "a/b", "a..b", "..", ".hidden", "UPPER", "Upper", "a b",
                  "x" * 129, "-x", None, 5]


@pytest.mark.parametrize("feed", BAD_FEED_NAMES, ids=repr)
def test_bad_feed_name_is_a_configuration_error(store, cache_dir, tmp_path: Path,
                                                feed: Any) -> None:
    with pytest.raises(feedkit.ConfigurationError) as info:
        feedkit.Producer(store, feed=feed, primary_key="id")
    assert repr(feed) in str(info.value)
    with pytest.raises(feedkit.ConfigurationError) as info:
        feedkit.Consumer(store, feed=feed, cache_dir=cache_dir, watch=False)
    assert repr(feed) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert store_files(tmp_path / "store") == {}
    assert not cache_dir.exists() or not any(cache_dir.iterdir())


def test_longest_feed_name_is_accepted(store, cache_dir) -> None:
    feed = "a" + "b" * 127
    with feedkit.Producer(store, feed=feed, primary_key="id") as producer:
        assert producer.publish(pa.table({"id": [1]})) is not None
    with feedkit.Consumer(store, feed=feed, cache_dir=cache_dir, watch=False) as consumer:
        assert consumer.get(1).id == 1


@pytest.mark.parametrize("primary_key", ["", (), ("id", "id"), ("id", "")], ids=repr)
def test_bad_primary_key_setting_is_a_configuration_error(store, primary_key: Any) -> None:
    with pytest.raises(feedkit.ConfigurationError, match="'val.feed'"):
        feedkit.Producer(store, feed=FEED, primary_key=primary_key)
