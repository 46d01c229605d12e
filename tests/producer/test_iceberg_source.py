"""IcebergSource against a real SqlCatalog: what a cycle reads after each kind of table
change, and Producer.append fed with the rows of append snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.expressions import LessThan
from pyiceberg.table import Table
from pyiceberg.types import LongType

import feedkit
from feedkit import names
from feedkit.manifest import Manifest
from feedkit.producer import Producer
from feedkit.producer.iceberg import IcebergSource, ReadPlan, TablePosition

from ..conftest import titles_table, truth
from .conftest import append_rows, create_table

TABLE = "muse.t"
FEED = "muse.t"


@pytest.fixture
def source(catalog: Any) -> IcebergSource:
    create_table(catalog, TABLE, titles_table(1000))
    return IcebergSource(catalog, TABLE, feed=FEED, key=("movie_id",))


def ids(reader: pa.RecordBatchReader) -> list[int]:
    return sorted(reader.read_all()["movie_id"].to_pylist())


def planned(source: IcebergSource, since: TablePosition | None) -> tuple[Table, ReadPlan]:
    table = source.load()
    return table, source.plan(table, since)


# -- plans ---------------------------------------------------------------------------------


def test_first_read_is_full(source: IcebergSource) -> None:
    table, plan = planned(source, None)
    assert plan.kind == "full" and plan.since is None
    assert plan.position == source.position(table)
    assert plan.position.snapshot_id == table.current_snapshot().snapshot_id
    assert ids(source.read(table, plan)) == list(range(1000))


def test_nothing_to_read_when_the_position_is_unchanged(source: IcebergSource) -> None:
    table = source.load()
    since = source.position(table)
    table, plan = planned(source, since)
    assert plan.kind == "none" and plan.position == since


def test_append_plan_reads_only_the_appended_rows(source: IcebergSource) -> None:
    since = source.position(source.load())
    append_rows(source.load(), titles_table(100, start=1000))
    table, plan = planned(source, since)
    assert plan.kind == "append" and plan.since == since
    assert plan.position.snapshot_id != since.snapshot_id
    rows = source.read(table, plan).read_all()
    assert sorted(rows["movie_id"].to_pylist()) == list(range(1000, 1100))
    assert truth(rows, "movie_id")[1050] == truth(titles_table(100, start=1000), "movie_id")[1050]


def test_several_appends_are_one_append_plan(source: IcebergSource) -> None:
    since = source.position(source.load())
    append_rows(source.load(), titles_table(50, start=1000))
    append_rows(source.load(), titles_table(30, start=2000))
    append_rows(source.load(), titles_table(20, start=3000))
    table, plan = planned(source, since)
    assert plan.kind == "append"
    assert ids(source.read(table, plan)) == [*range(1000, 1050), *range(2000, 2030),
                                             *range(3000, 3020)]
    # From the middle of the appends: only the later rows.
    middle = TablePosition(table.snapshots()[-2].snapshot_id, since.schema_id)
    assert ids(source.read(table, source.plan(table, middle))) == list(range(3000, 3020))


# An unpartitioned table of one data file: a copy-on-write change rewrites that file, so
# reading the files it changed costs more than reading the table.


def test_overwrite_of_the_one_file_is_a_full_read(source: IcebergSource) -> None:
    since = source.position(source.load())
    source.load().overwrite(titles_table(500, start=10))
    table, plan = planned(source, since)
    assert plan.kind == "full" and "more than the table's 500" in plan.reason
    assert plan.reason.startswith("delete, append")  # pyiceberg's overwrite: two snapshots
    assert ids(source.read(table, plan)) == list(range(10, 510))


def test_an_append_after_an_overwrite_is_still_a_full_read(source: IcebergSource) -> None:
    since = source.position(source.load())
    source.load().overwrite(titles_table(200))
    append_rows(source.load(), titles_table(10, start=5000))
    table, plan = planned(source, since)
    assert plan.kind == "full" and plan.reason.startswith("delete, append")
    assert ids(source.read(table, plan)) == [*range(200), *range(5000, 5010)]


def test_delete_rewriting_the_one_file_is_a_full_read(source: IcebergSource) -> None:
    since = source.position(source.load())
    source.load().delete(LessThan("movie_id", 10))
    table, plan = planned(source, since)
    assert plan.kind == "full" and plan.reason.startswith("overwrite")  # a partial rewrite
    assert ids(source.read(table, plan)) == list(range(10, 1000))


def test_without_a_key_every_other_change_is_a_full_read(catalog: Any) -> None:
    create_table(catalog, TABLE, titles_table(100))
    append_rows(catalog.load_table(TABLE), titles_table(100, start=100))
    source = IcebergSource(catalog, TABLE, feed=FEED)
    since = source.position(source.load())
    source.load().delete(LessThan("movie_id", 10))
    table, plan = planned(source, since)
    assert plan.kind == "full" and "no key" in plan.reason


def test_added_column_is_a_full_read(source: IcebergSource) -> None:
    since = source.position(source.load())
    with source.load().update_schema() as update:
        update.add_column("rank", LongType())
    table, plan = planned(source, since)
    assert plan.kind == "full" and "schema" in plan.reason
    assert plan.position.schema_id != since.schema_id
    assert plan.position.snapshot_id == since.snapshot_id  # no new snapshot, still full
    rows = source.read(table, plan).read_all()
    assert rows.num_rows == 1000 and "rank" in rows.column_names
    assert rows["rank"].null_count == 1000


def test_renamed_column_without_a_new_snapshot_reads_the_new_name(catalog: Any) -> None:
    create_table(catalog, TABLE, titles_table(100))
    source = IcebergSource(catalog, TABLE, feed=FEED)
    since = source.position(source.load())
    with source.load().update_schema() as update:
        update.rename_column("title", "name")
    table, plan = planned(source, since)
    assert plan.kind == "full" and plan.position.snapshot_id == since.snapshot_id
    rows = source.read(table, plan).read_all()
    assert rows.column_names == ["movie_id", "name", "year", "score", "country"]
    assert truth(rows, "movie_id")[3]["name"] == "title 3"

    # A projection naming the new column reads it; the old name is gone.
    projected = IcebergSource(catalog, TABLE, feed=FEED, columns=["name", "movie_id"])
    rows = projected.read(table, plan).read_all()
    assert rows.column_names == ["name", "movie_id"] and rows.num_rows == 100
    stale = IcebergSource(catalog, TABLE, feed=FEED, columns=["movie_id", "title"])
    with pytest.raises(feedkit.ValidationError, match="'title'"):
        stale.read(table, plan)


def test_renamed_column_is_a_full_read(source: IcebergSource) -> None:
    since = source.position(source.load())
    with source.load().update_schema() as update:
        update.rename_column("title", "name")
    append_rows(source.load(), titles_table(5, start=1000).rename_columns(
        ["movie_id", "name", "year", "score", "country"]))
    table, plan = planned(source, since)
    assert plan.kind == "full" and "schema" in plan.reason
    rows = source.read(table, plan).read_all()
    assert rows.num_rows == 1005 and "name" in rows.column_names
    assert "title" not in rows.column_names


def test_rollback_then_append_is_a_file_diff(source: IcebergSource) -> None:
    first = source.load().current_snapshot().snapshot_id
    append_rows(source.load(), titles_table(100, start=1000))
    since = source.position(source.load())  # published: 1100 rows
    source.load().manage_snapshots().rollback_to_snapshot(first).commit()

    table, plan = planned(source, since)  # rolled back: an older snapshot
    assert plan.kind == "files" and "not an ancestor" in plan.reason
    assert plan.position.snapshot_id == first
    change = source.read_change(table, plan)  # the appended file is gone: its keys
    assert ids(change.upserts) == [] and ids(change.deletes) == list(range(1000, 1100))

    append_rows(source.load(), titles_table(10, start=5000))  # a sibling of the published one
    table, plan = planned(source, since)
    assert plan.kind == "files" and "not an ancestor" in plan.reason
    change = source.read_change(table, plan)
    assert ids(change.upserts) == list(range(5000, 5010))
    assert ids(change.deletes) == list(range(1000, 1100))


def test_set_current_snapshot_forward_again_is_an_append(source: IcebergSource) -> None:
    first = source.load().current_snapshot().snapshot_id
    since = source.position(source.load())
    append_rows(source.load(), titles_table(10, start=1000))
    latest = source.load().current_snapshot().snapshot_id
    source.load().manage_snapshots().set_current_snapshot(snapshot_id=first).commit()
    source.load().manage_snapshots().set_current_snapshot(snapshot_id=latest).commit()
    table, plan = planned(source, since)
    assert plan.kind == "append"
    assert ids(source.read(table, plan)) == list(range(1000, 1010))


def test_position_round_trips_through_a_manifest_source(source: IcebergSource) -> None:
    table = source.load()
    position = source.position(table)
    recorded = source.source(table, position)
    assert recorded["snapshot_id"] == position.snapshot_id and recorded["table"] == TABLE
    assert recorded["metadata_location"] == table.metadata_location
    assert TablePosition.from_source(recorded) == position
    assert TablePosition.from_source(None) is None
    assert TablePosition.from_source({"table": TABLE}) is None
    assert source.plan(table, TablePosition.from_source(recorded)).kind == "none"


# -- projection, missing things ------------------------------------------------------------


def test_columns_come_in_the_configured_order(catalog: Any) -> None:
    create_table(catalog, TABLE, titles_table(300))
    columns = ["country", "movie_id", "title"]
    source = IcebergSource(catalog, TABLE, feed=FEED, columns=columns)
    since = source.position(source.load())
    table, plan = planned(source, None)
    full = source.read(table, plan)
    assert full.schema.names == columns
    rows = full.read_all()
    assert rows.column_names == columns and rows.num_rows == 300
    assert truth(rows, "movie_id")[7] == {"country": "BR", "movie_id": 7, "title": "title 7"}

    append_rows(source.load(), titles_table(20, start=300))
    table, plan = planned(source, since)
    assert plan.kind == "append"
    appended = source.read(table, plan)
    assert appended.schema.names == columns
    assert appended.read_all().column_names == columns


def test_a_configured_column_missing_from_the_table(catalog: Any) -> None:
    create_table(catalog, TABLE, titles_table(10))
    source = IcebergSource(catalog, TABLE, feed=FEED, columns=["movie_id", "rating"])
    table, plan = planned(source, None)
    with pytest.raises(feedkit.ValidationError) as info:
        source.read(table, plan)
    assert "'rating'" in str(info.value) and FEED in str(info.value) and TABLE in str(info.value)


def test_a_missing_table(catalog: Any) -> None:
    source = IcebergSource(catalog, "muse.nothing", feed=FEED)
    with pytest.raises(feedkit.ConfigurationError) as info:
        source.load()
    assert "muse.nothing" in str(info.value) and FEED in str(info.value)


def test_local_metadata_dir(source: IcebergSource) -> None:
    table = source.load()
    folder = IcebergSource.local_metadata_dir(table)
    assert folder is not None and folder.is_dir()
    assert Path(table.metadata_location).name in {p.name for p in folder.iterdir()}
    append_rows(table, titles_table(5, start=1000))
    table = source.load()
    assert IcebergSource.local_metadata_dir(table) == folder
    assert Path(table.metadata_location).name in {p.name for p in folder.iterdir()}


# -- Producer.append fed from append snapshots ----------------------------------------------


@pytest.fixture
def producer(store: feedkit.BlobStore, tmp_path: Path) -> Iterator[Producer]:
    with Producer(store, feed=FEED, primary_key="movie_id", indexes=["country"],
                  work_dir=tmp_path / "work") as p:
        yield p


def manifest(store: feedkit.BlobStore, version: int) -> Manifest:
    key = names.manifest_key(FEED, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def publish_full(source: IcebergSource, producer: Producer) -> int:
    table, plan = planned(source, None)
    version = producer.publish(source.read(table, plan), source=source.source(table,
                                                                              plan.position))
    assert version is not None
    return version


def test_append_publishes_a_delta_of_the_appended_rows(catalog: Any, store: feedkit.BlobStore,
                                                       tmp_path: Path,
                                                       producer: Producer) -> None:
    base = titles_table(5000)
    create_table(catalog, TABLE, base)
    source = IcebergSource(catalog, TABLE, feed=FEED)
    v1 = publish_full(source, producer)

    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.version == v1 and len(feed) == 5000

        added = titles_table(1000, start=5000, seed=1)
        append_rows(source.load(), added)
        since = TablePosition.from_source(producer.manifest.source)
        table, plan = planned(source, since)
        assert plan.kind == "append"
        reader = source.read(table, plan)
        assert producer.can_append(reader.schema)
        v2 = producer.append(reader, source=source.source(table, plan.position))
        assert v2 is not None and v2 > v1

        report = producer.last_report
        assert report.version == v2 and report.rows_read == 1000
        assert (report.added, report.changed, report.removed) == (1000, 0, 0)
        assert report.record_count == 6000

        m2 = manifest(store, v2)
        assert m2.parent == v1 and m2.delta is not None and m2.snapshot is None
        assert m2.record_count == 6000
        assert m2.source["snapshot_id"] == table.current_snapshot().snapshot_id
        assert m2.source["table"] == TABLE

        assert feed.refresh() is True and feed.version == v2 and len(feed) == 6000
        expected = truth(pa.concat_tables([base, added]), "movie_id")
        for key in (0, 1, 2500, 4999, 5000, 5500, 5999):
            assert feed.get(key)._asdict() == expected[key]
        assert {k: r._asdict() for k, r in feed.items()} == expected
        assert len(feed.find("country", "JP")) == 0
        assert len(feed.find("country", "DE")) == 1500

    # The next cycle has nothing to read.
    table, plan = planned(source, TablePosition.from_source(manifest(store, v2).source))
    assert plan.kind == "none"


def test_appending_a_key_already_in_the_feed(catalog: Any, store: feedkit.BlobStore,
                                             tmp_path: Path, producer: Producer) -> None:
    create_table(catalog, TABLE, titles_table(2000))
    source = IcebergSource(catalog, TABLE, feed=FEED)
    v1 = publish_full(source, producer)
    files = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())

    append_rows(source.load(), titles_table(10, start=1995))  # 1995..1999 exist already
    table, plan = planned(source, TablePosition.from_source(producer.manifest.source))
    assert plan.kind == "append"
    with pytest.raises(feedkit.ValidationError) as info:
        producer.append(source.read(table, plan), source=source.source(table, plan.position))
    assert "already" in str(info.value) and "1995" in str(info.value)
    assert not isinstance(info.value, feedkit.RefusedError)
    assert sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file()) == files
    assert producer.version == v1

    # Read whole, the table holds the same keys twice: a key error there too.
    with pytest.raises(feedkit.ValidationError, match="duplicate keys"):
        producer.publish(source.read(table, ReadPlan("full", "", plan.position)))


def test_can_append_needs_the_same_columns(catalog: Any, store: feedkit.BlobStore,
                                           producer: Producer) -> None:
    create_table(catalog, TABLE, titles_table(100))
    source = IcebergSource(catalog, TABLE, feed=FEED)
    assert producer.can_append(titles_table(1).schema) is False  # nothing published yet
    publish_full(source, producer)
    table, plan = planned(source, None)
    same = source.read(table, plan).schema
    assert producer.can_append(same) is True
    fewer = titles_table(10, start=100).select(["movie_id", "title", "country"])
    assert producer.can_append(fewer.schema) is False
    more = titles_table(10, start=100).append_column("rank", pa.array(range(10), pa.int64()))
    assert producer.can_append(more.schema) is False
    assert producer.can_append(pa.schema([("title", pa.string())])) is False  # no key column
    with pytest.raises(feedkit.ValidationError, match="publish the whole table"):
        producer.append(fewer)
