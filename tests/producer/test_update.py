"""Producer.update: a change (upserted rows, deleted keys) published as a delta, checked
against a dict of the expected records and a consumer following the feed."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import feedkit
from feedkit import names
from feedkit.manifest import Manifest

from ..conftest import titles_table, truth


def served(feed: feedkit.Consumer) -> dict:
    return {k: r._asdict() for k, r in feed.items()}


def manifest(store: feedkit.BlobStore, feed: str, version: int) -> Manifest:
    key = names.manifest_key(feed, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def keys(ids: list[int]) -> pa.Table:
    return pa.table({"movie_id": pa.array(ids, pa.int64())})


def changed(table: pa.Table, ids: set[int], mark: str) -> pa.Table:
    """The rows of ``ids`` with a new title."""
    rows = table.filter(pa.array([k in ids for k in table["movie_id"].to_pylist()]))
    return rows.set_column(1, "title", pa.array([f"{t} {mark}" for t in rows["title"].to_pylist()]))


def test_update_upserts_and_deletes_and_keeps_the_rest(store, tmp_path: Path) -> None:
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work", indexes=["country"])
    table = titles_table(1000)
    first = producer.publish(table)
    expect = truth(table, "movie_id")
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        upserts = pa.concat_tables([changed(table, {1, 2, 3}, "new"),
                                    titles_table(5, start=5000, seed=3),
                                    table.slice(10, 4)])  # 4 unchanged rows: no change
        version = producer.update(upserts, deletes=keys([7, 8, 2, 99_999]))
        report = producer.last_report
        assert version is not None and report is not None
        # 2 is upserted and deleted: the upsert wins; 99_999 is not in the feed
        assert (report.added, report.changed, report.removed) == (5, 3, 2)
        assert report.record_count == 1000 + 5 - 2
        m = manifest(store, "titles", version)
        assert m.parent == first and m.delta is not None and m.snapshot is None
        for k, r in truth(upserts, "movie_id").items():
            expect[k] = r
        del expect[7], expect[8]
        assert feed.refresh() and served(feed) == expect
        assert sorted(r.movie_id for r in feed.find("country", "DE")) == sorted(
            k for k, r in expect.items() if r["country"] == "DE")

        # Nothing that changes a record: no version.
        assert producer.update(table.slice(100, 10), deletes=keys([7, 123_456])) is None
        assert producer.version == version
        # Deletes only.
        version = producer.update(table.slice(0, 0), deletes=keys([500, 501]))
        del expect[500], expect[501]
        assert producer.last_report.removed == 2  # type: ignore[union-attr]
        assert feed.refresh() and served(feed) == expect and len(feed) == len(expect)


def test_updates_past_the_snapshot_cadence_write_snapshots(store, tmp_path: Path) -> None:
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work", snapshot_every=2)
    table = titles_table(300)
    producer.publish(table)
    expect = truth(table, "movie_id")
    snapshots = 0
    for i in range(5):
        ups = pa.concat_tables([changed(table, {i, i + 50}, f"v{i}"),
                                titles_table(3, start=1000 + 10 * i, seed=i)])
        gone = [200 + i]
        version = producer.update(ups, deletes=keys(gone))
        expect.update(truth(ups, "movie_id"))
        del expect[200 + i]
        snapshots += manifest(store, "titles", version).snapshot is not None  # type: ignore[arg-type]
        # a consumer starting cold at this version (its nearest snapshot + deltas)
        with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / f"cache{i}",
                              watch=False) as feed:
            assert feed.version == version and served(feed) == expect
    assert snapshots >= 2


@pytest.mark.parametrize("key", [("title",), ("movie_id", "country")])
def test_update_with_str_and_composite_keys(store, tmp_path: Path, key: tuple[str, ...]) -> None:
    producer = feedkit.Producer(store, feed="titles", primary_key=key, work_dir=tmp_path / "w")
    table = titles_table(200)
    producer.publish(table)
    key_of = key[0] if len(key) == 1 else key
    expect = truth(table, key_of)
    gone = table.slice(20, 3).select(list(key))
    ups = table.slice(0, 2).set_column(3, "score", pa.array([-1.0, -2.0]))
    producer.update(ups, deletes=gone)
    expect.update(truth(ups, key_of))
    for r in gone.to_pylist():
        del expect[tuple(r[k] for k in key) if len(key) > 1 else r[key[0]]]
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        assert served(feed) == expect


def test_bad_updates_are_refused_and_write_nothing(store, tmp_path: Path) -> None:
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    table = titles_table(100)
    with pytest.raises(feedkit.ValidationError, match="nothing published yet"):
        producer.update(table)
    version = producer.publish(table)
    before = sorted(store.list(""))
    with pytest.raises(feedkit.ValidationError, match="null in the deleted keys"):
        producer.update(table.slice(0, 1), deletes=keys([1]).set_column(
            0, "movie_id", pa.array([None], pa.int64())))
    with pytest.raises(feedkit.ValidationError, match="kind str"):
        producer.update(table.slice(0, 1), deletes=pa.table({"movie_id": ["1"]}))
    with pytest.raises(feedkit.ValidationError, match="key column 'movie_id' is missing"):
        producer.update(table.slice(0, 1), deletes=pa.table({"id": [1]}))
    with pytest.raises(feedkit.ValidationError, match="duplicate keys"):
        producer.update(pa.concat_tables([table.slice(0, 2), table.slice(0, 1)]))
    with pytest.raises(feedkit.ValidationError, match="cannot update rows whose columns"):
        producer.update(table.drop_columns(["score"]))
    assert sorted(store.list("")) == before and producer.version == version
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [f"{version:020d}.state"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6))
def test_updates_equal_the_dict_oracle(tmp_path_factory, seed: int, steps: int) -> None:
    """Random updates (new, changed, unchanged and re-added rows; deletes of present,
    absent and upserted keys) against a dict applying the same change."""
    rng = random.Random(seed)
    root = tmp_path_factory.mktemp("upd")
    store = feedkit.open_store(f"file://{root / 'store'}")
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=root / "work", snapshot_every=rng.randint(1, 4))
    table = titles_table(rng.randint(1, 60), seed=seed).slice(rng.randint(0, 1))
    producer.publish(table)
    expect = truth(table, "movie_id")
    universe = list(range(0, 120))
    with feedkit.Consumer(store, feed="titles", cache_dir=root / "cache", watch=False) as feed:
        for step in range(steps):
            up_ids = rng.sample(universe, rng.randint(0, 20))
            ups = pa.concat_tables([titles_table(1).slice(0, 0)] + [
                titles_table(1, start=k, seed=rng.randint(0, 3))  # maybe the same row
                for k in up_ids])
            gone = rng.sample(universe, rng.randint(0, 20))
            before = dict(expect)
            for k in gone:
                expect.pop(k, None)
            expect.update(truth(ups, "movie_id"))
            version = producer.update(ups, deletes=keys(gone))
            assert (version is None) == (expect == before), (seed, step)
            if version is not None:
                assert feed.refresh()
            assert served(feed) == expect, (seed, step)
