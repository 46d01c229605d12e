"""The consumer API against a local store: lookups, views, refresh, pin, lifecycle."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

import feedkit
from tests.conftest import titles_table, truth


@pytest.fixture
def published(store: feedkit.BlobStore) -> tuple[feedkit.Producer, pa.Table]:
    table = titles_table(5000)
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                indexes=["country", "year"])
    producer.publish(table)
    yield producer, table
    producer.close()


def test_lookups_match_the_table(store, cache_dir, published) -> None:
    _, table = published
    rows = truth(table, "movie_id")
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
        assert len(feed) == 5000
        for key in (0, 1, 2499, 4999):
            rec = feed.get(key)
            assert rec._asdict() == rows[key]
            assert feed[key] == rec
            assert key in feed
            assert rec.title == rows[key]["title"] and rec[0] == key
        assert feed.get(5000) is None and feed.get(-1) is None
        assert 5000 not in feed
        with pytest.raises(KeyError):
            feed[5000]
        assert sorted(feed.keys()) == list(range(5000))
        assert sorted(feed) == list(range(5000))
        assert {k: r._asdict() for k, r in feed.items()} == rows


def test_records_are_immutable_named_tuples(store, cache_dir, published) -> None:
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
        rec = feed.get(7)
        assert isinstance(rec, tuple)
        assert rec._fields == ("movie_id", "title", "year", "score", "country")
        with pytest.raises(AttributeError):
            rec.title = "x"  # type: ignore[misc]
        with pytest.raises(TypeError):
            rec[1] = "x"  # type: ignore[index]


def test_get_many_is_aligned_with_the_keys(store, cache_dir, published) -> None:
    _, table = published
    rows = truth(table, "movie_id")
    keys = [3, 99999, 0, 3, -5, 4999]
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
        got = feed.get_many(keys)
        assert [None if r is None else r._asdict() for r in got] == [rows.get(k) for k in keys]
        assert feed.get_many([]) == []
        assert [r.movie_id for r in feed.get_many(range(100))] == list(range(100))


def test_find_through_secondary_indexes(store, cache_dir, published) -> None:
    _, table = published
    rows = table.to_pylist()
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
        de = feed.find("country", "DE")
        assert sorted(r.movie_id for r in de) == [r["movie_id"] for r in rows if r["country"] == "DE"]
        assert sorted(r.movie_id for r in feed.find("year", 1960)) == [
            r["movie_id"] for r in rows if r["year"] == 1960]
        assert feed.find("country", "XX") == []
        with pytest.raises(feedkit.ConfigurationError, match="no secondary index on 'title'"):
            feed.find("title", "x")


def test_key_type_errors_name_the_feed(store, cache_dir, published) -> None:
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
        with pytest.raises(feedkit.KeyTypeError, match="'titles'"):
            feed.get("7")
        with pytest.raises(feedkit.KeyTypeError):
            feed.get_many([1, "2"])
        import numpy as np

        assert feed.get(np.int64(7)).movie_id == 7  # numpy ints are fine


def test_refresh_view_pin_unpin(store, cache_dir, published) -> None:
    producer, table = published
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False) as feed:
        v1 = feed.version
        assert feed.refresh() is False
        changed = table.set_column(1, "title", pa.array([f"new {i}" for i in range(5000)]))
        v2 = producer.publish(changed)
        with feed.view() as view:
            assert feed.refresh() is True
            assert feed.version == v2 and feed.get(1).title == "new 1"
            assert view.version == v1 and view.get(1).title == "title 1"  # the view stays
        feed.pin(v1)
        assert feed.version == v1 and feed.get(1).title == "title 1" and feed.pinned == v1
        assert feed.refresh() is False  # pinned: the announcement is not followed
        feed.unpin()
        assert feed.version == v2 and feed.pinned is None
        with pytest.raises(feedkit.VersionNotFoundError):
            feed.pin(12345)
        assert feed.version == v2


def test_lifecycle(store, cache_dir, published) -> None:
    consumer = feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, watch=False)
    with pytest.raises(feedkit.ClosedError, match="not open"):
        consumer.get(1)
    with consumer as feed:
        assert feed.get(1) is not None
    with pytest.raises(feedkit.ClosedError, match="closed"):
        consumer.get(1)
    with pytest.raises(feedkit.ClosedError):
        len(consumer)
    consumer.close()  # idempotent


def test_nothing_announced_is_a_clear_error(store, cache_dir) -> None:
    with pytest.raises(feedkit.VersionNotFoundError, match="nothing announced"):
        feedkit.Consumer(store, feed="never", cache_dir=cache_dir, watch=False).open()


def test_bad_arguments(store, cache_dir) -> None:
    with pytest.raises(feedkit.ConfigurationError):
        feedkit.Consumer(store, feed="Bad Name", cache_dir=cache_dir)
    with pytest.raises(feedkit.ConfigurationError):
        feedkit.Consumer(store, feed="ok", cache_dir=cache_dir, poll_interval=0)


def test_background_refresher_follows_the_announcement(store, cache_dir, published) -> None:
    producer, table = published
    import threading

    moved = threading.Event()
    with feedkit.Consumer(store, feed="titles", cache_dir=cache_dir, poll_interval=5.0) as feed:
        feed.on_refresh(lambda old, new: moved.set())
        v2 = producer.publish(table.slice(0, 4000))
        assert moved.wait(5), "the file-system watch should wake the refresher"
        assert feed.version == v2 and len(feed) == 4000 and feed.get(4500) is None


def test_floats_keep_nan(store, cache_dir) -> None:
    table = pa.table({"k": [1, 2, 3], "x": [float("nan"), None, 1.5]})
    feedkit.Producer(store, feed="f", primary_key="k").publish(table)
    with feedkit.Consumer(store, feed="f", cache_dir=cache_dir, watch=False) as feed:
        assert math.isnan(feed.get(1).x) and feed.get(2).x is None and feed.get(3).x == 1.5


def test_empty_table(store, cache_dir, tmp_path: Path) -> None:
    table = titles_table(0)
    feedkit.Producer(store, feed="empty", primary_key="movie_id").publish(table)
    with feedkit.Consumer(store, feed="empty", cache_dir=cache_dir, watch=False) as feed:
        assert len(feed) == 0 and feed.get(1) is None and list(feed) == []
        assert feed.get_many([1, 2]) == [None, None]


def test_extreme_int_keys_and_the_empty_marker(store, cache_dir) -> None:
    lo, hi = -(2**63), 2**63 - 1
    producer = feedkit.Producer(store, feed="edge", primary_key="k")
    producer.publish(pa.table({"k": pa.array([1, 2, 3], pa.int64()), "v": ["a", "b", "c"]}))
    with feedkit.Consumer(store, feed="edge", cache_dir=cache_dir, watch=False) as feed:
        # The int64 minimum is this file's empty-slot marker: asking for it finds nothing.
        assert feed.get(lo) is None and lo not in feed
        assert feed.get_many([lo, 1, hi, 2**70]) == [None, feed.get(1), None, None]
        producer.publish(pa.table({"k": pa.array([1, 2, 3, lo, hi], pa.int64()),
                                   "v": ["a", "b", "c", "min", "max"]}))
        assert feed.refresh()
        assert feed.get(lo).v == "min" and feed.get(hi).v == "max" and len(feed) == 5
        assert [r.v for r in feed.get_many([lo, hi, 1])] == ["min", "max", "a"]
    producer.close()


def test_find_brings_values_to_the_column_form(store, cache_dir) -> None:
    import datetime as dt
    from decimal import Decimal

    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    table = pa.table({
        "k": [1, 2],
        "at": pa.array([when, when + dt.timedelta(hours=1)], pa.timestamp("us", tz="Europe/Berlin")),
        "price": pa.array([Decimal("1.50"), Decimal("2.00")], pa.decimal128(5, 2)),
        "ratio": [0.5, 2.0],
    })
    feedkit.Producer(store, feed="coerce", primary_key="k",
                     indexes=["at", "price", "ratio"]).publish(table)
    with feedkit.Consumer(store, feed="coerce", cache_dir=cache_dir, watch=False) as feed:
        assert [r.k for r in feed.find("at", when)] == [1]  # a UTC datetime, a Berlin column
        assert [r.k for r in feed.find("price", Decimal("1.5"))] == [1]
        assert [r.k for r in feed.find("price", 2)] == [2]
        assert [r.k for r in feed.find("ratio", 2)] == [2]


def test_composite_keys_past_64_bits_are_absent(store, cache_dir) -> None:
    producer = feedkit.Producer(store, feed="pairs", primary_key=("a", "b"))
    producer.publish(pa.table({"a": [1, 2], "b": ["x", "y"], "v": [10, 20]}))
    producer.close()
    with feedkit.Consumer(store, feed="pairs", cache_dir=cache_dir, watch=False) as feed:
        assert feed.get((2**64, "x")) is None and (2**64, "x") not in feed
        assert [r and r.v for r in feed.get_many([(1, "x"), (2**64, "x"), (-2**70, "y")])] == [
            10, None, None]
