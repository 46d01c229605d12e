"""The snapshot-writing test helpers of iceberg_ops against a real SqlCatalog: the rows pyiceberg
reads after each, the snapshot summaries, and the data and delete files each snapshot adds and
removes, on an unpartitioned table and tables partitioned by identity, bucket and day."""

from __future__ import annotations

import struct
from datetime import date, timedelta
from typing import Any

import mmh3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.avro.file import AvroFile
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo, In
from pyiceberg.io.pyarrow import parquet_file_to_data_file
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent, ManifestEntryStatus
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import DateType, DoubleType, IntegerType, LongType, NestedField, StringType

from .iceberg_ops import append, compact, equality_delete, position_delete

SCHEMA = Schema(
    NestedField(1, "movie_id", LongType()),
    NestedField(2, "title", StringType()),
    NestedField(3, "year", IntegerType()),
    NestedField(4, "score", DoubleType()),
    NestedField(5, "country", StringType()),
    NestedField(6, "released", DateType()),
)

SPECS = {
    "unpartitioned": UNPARTITIONED_PARTITION_SPEC,
    "identity": PartitionSpec(PartitionField(5, 1000, IdentityTransform(), "country")),
    "bucket": PartitionSpec(PartitionField(1, 1000, BucketTransform(4), "movie_id_bucket")),
    "day": PartitionSpec(PartitionField(6, 1000, DayTransform(), "released_day")),
}


def rows(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({
        "movie_id": pa.array(ids, pa.int64()),
        "title": [f"title {i}" for i in ids],
        "year": pa.array([1950 + i % 70 for i in ids], pa.int32()),
        "score": [i / 7 for i in ids],
        "country": [("DE", "US", "FR", "BR")[i % 4] for i in ids],
        "released": pa.array([date(2024, 1, 1) + timedelta(days=i % 3) for i in ids], pa.date32()),
    })


def add(table: Table, data: pa.Table) -> None:
    """table.append, or iceberg_ops.append where pyiceberg needs pyiceberg-core (not installed)."""
    if all(isinstance(f.transform, IdentityTransform) for f in table.spec().fields):
        table.append(data)
    else:
        append(table, data)


@pytest.fixture(params=sorted(SPECS))
def layout(request: Any) -> str:
    return request.param


@pytest.fixture
def table(catalog: SqlCatalog, layout: str) -> Table:
    """300 rows (movie_id 0..299) in three appends, so several data files per partition."""
    t = catalog.create_table("muse.t", schema=SCHEMA, partition_spec=SPECS[layout])
    for start in (0, 100, 200):
        add(t, rows(start, 100))
    return t


def read(table: Table) -> list[dict]:
    return sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["movie_id"])


def expected(without: set[int] | frozenset[int] = frozenset()) -> list[dict]:
    return [r for r in rows(0, 300).to_pylist() if r["movie_id"] not in without]


def live(table: Table, content: DataFileContent) -> dict[str, int]:
    """path -> record count of the current snapshot's live files of ``content``."""
    files = table.inspect.files()
    return {p: n for p, n, c in zip(files["file_path"].to_pylist(), files["record_count"].to_pylist(),
                                    files["content"].to_pylist(), strict=True) if c == content}


def changes(table: Table, snapshot_id: int) -> dict[tuple[ManifestContent, ManifestEntryStatus], list[DataFile]]:
    """The files the snapshot added and removed, by (manifest content, entry status)."""
    snapshot = table.snapshot_by_id(snapshot_id)
    out: dict = {}
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            if entry.snapshot_id == snapshot_id and entry.status != ManifestEntryStatus.EXISTING:
                out.setdefault((manifest.content, entry.status), []).append(entry.data_file)
    return out


def manifest_meta(table: Table, snapshot_id: int) -> list[tuple[ManifestContent, str]]:
    """(content in the manifest list, ``content`` in the manifest's Avro header) per manifest."""
    out = []
    for manifest in table.snapshot_by_id(snapshot_id).manifests(table.io):
        with AvroFile(table.io.new_input(manifest.manifest_path)) as avro:
            out.append((manifest.content, avro.header.meta["content"]))
    return out


def partitions(table: Table) -> int:
    """The number of partitions holding live data files."""
    files = table.inspect.files()
    return len({tuple((p or {}).values()) for p, c in zip(files["partition"].to_pylist(),
                                                  files["content"].to_pylist(), strict=True)
                if c == DataFileContent.DATA})


ADDED, DELETED = ManifestEntryStatus.ADDED, ManifestEntryStatus.DELETED
DATA, DELETES = ManifestContent.DATA, ManifestContent.DELETES


# -- append ----------------------------------------------------------------------------------


def test_append_writes_one_file_per_partition_with_the_partition_pyiceberg_infers(
        catalog: SqlCatalog, layout: str) -> None:
    table = catalog.create_table("muse.t", schema=SCHEMA, partition_spec=SPECS[layout])
    snapshot_id = append(table, rows(0, 120))
    assert table.current_snapshot().snapshot_id == snapshot_id
    assert table.current_snapshot().summary.operation == Operation.APPEND
    assert read(table) == rows(0, 120).to_pylist()
    n = {"unpartitioned": 1, "identity": 4, "bucket": 4, "day": 3}[layout]
    done = changes(table, snapshot_id)
    assert set(done) == {(DATA, ADDED)} and len(done[(DATA, ADDED)]) == n
    added = done[(DATA, ADDED)]
    for f in added:
        if layout == "bucket":  # the spec's bucket: murmur3 of the long's 8 bytes, little endian
            with table.io.new_input(f.file_path).open() as fi:
                ids = pq.read_table(fi)["movie_id"].to_pylist()
            assert {(mmh3.hash(struct.pack("<q", i)) & 0x7FFFFFFF) % 4 for i in ids} == {f.partition[0]}
        else:  # the partition parquet_file_to_data_file infers from the column bounds
            inferred = parquet_file_to_data_file(table.io, table.metadata, f.file_path).partition
            assert f.partition == inferred
    # a scan filtered on the partition source prunes by partition
    assert len(list(table.scan(row_filter=EqualTo("movie_id", 7)).plan_files())) == (
        1 if layout in ("bucket", "unpartitioned") else n)


# -- compact ---------------------------------------------------------------------------------


def test_compact_is_a_replace_with_one_file_per_partition(table: Table) -> None:
    before = live(table, DataFileContent.DATA)
    n_partitions = partitions(table)
    assert len(before) == 3 * n_partitions

    snapshot_id = compact(table)

    snapshot = table.current_snapshot()
    assert snapshot.snapshot_id == snapshot_id
    assert snapshot.summary.operation == Operation.REPLACE
    assert read(table) == expected()
    after = live(table, DataFileContent.DATA)
    assert len(after) == n_partitions and not set(after) & set(before)
    assert sum(after.values()) == 300
    done = changes(table, snapshot_id)
    assert {f.file_path for f in done[(DATA, DELETED)]} == set(before)
    assert {f.file_path for f in done[(DATA, ADDED)]} == set(after)
    assert set(done) == {(DATA, DELETED), (DATA, ADDED)}
    summary = snapshot.summary
    assert summary["added-data-files"] == str(n_partitions)
    assert summary["deleted-data-files"] == str(3 * n_partitions)
    assert summary["added-records"] == summary["deleted-records"] == summary["total-records"] == "300"
    assert summary["total-data-files"] == str(n_partitions)


def test_compact_twice_keeps_the_rows(table: Table) -> None:
    first = compact(table)
    files = live(table, DataFileContent.DATA)
    second = compact(table)
    assert second != first and table.current_snapshot().summary.operation == Operation.REPLACE
    assert read(table) == expected()
    assert len(live(table, DataFileContent.DATA)) == len(files)
    assert not set(live(table, DataFileContent.DATA)) & set(files)


def test_compact_with_a_filter_rewrites_only_the_matching_files(catalog: SqlCatalog) -> None:
    table = catalog.create_table("muse.t", schema=SCHEMA, partition_spec=SPECS["identity"])
    for start in (0, 100, 200):
        table.append(rows(start, 100))
    position_delete(table, In("movie_id", {1, 2}))  # US (1) and FR (2) rows
    before = live(table, DataFileContent.DATA)
    deletes = live(table, DataFileContent.POSITION_DELETES)

    snapshot_id = compact(table, EqualTo("country", "US"))

    assert read(table) == expected({1, 2})
    done = changes(table, snapshot_id)
    removed = {f.file_path for f in done[(DATA, DELETED)]}
    assert len(removed) == 3 and all("country=US" in p for p in removed)
    assert len(done[(DATA, ADDED)]) == 1
    assert set(live(table, DataFileContent.DATA)) == set(before) - removed | {
        f.file_path for f in done[(DATA, ADDED)]}
    # the US delete file went with its data file, the FR one stays
    (gone,) = done[(DELETES, DELETED)]
    assert gone.partition[0] == "US"
    assert set(live(table, DataFileContent.POSITION_DELETES)) == set(deletes) - {gone.file_path}


def test_compact_of_nothing_commits_nothing(table: Table) -> None:
    snapshot_id = table.current_snapshot().snapshot_id
    assert compact(table, EqualTo("movie_id", 10_000)) is None
    assert table.current_snapshot().snapshot_id == snapshot_id


# -- position deletes ------------------------------------------------------------------------


def test_position_delete_writes_delete_files_and_keeps_the_data_files(table: Table) -> None:
    data = live(table, DataFileContent.DATA)
    gone = {0, 5, 17, 150, 151, 299}

    snapshot_id = position_delete(table, In("movie_id", gone))

    snapshot = table.current_snapshot()
    assert snapshot.snapshot_id == snapshot_id
    assert snapshot.summary.operation == Operation.DELETE
    assert read(table) == expected(gone)
    assert live(table, DataFileContent.DATA) == data
    deletes = live(table, DataFileContent.POSITION_DELETES)
    assert sum(deletes.values()) == len(gone)
    done = changes(table, snapshot_id)
    assert set(done) == {(DELETES, ADDED)}
    assert all(f.content == DataFileContent.POSITION_DELETES for f in done[(DELETES, ADDED)])
    meta = manifest_meta(table, snapshot_id)
    assert (DELETES, "deletes") in meta
    assert set(meta) <= {(DELETES, "deletes"), (DATA, "data")}
    assert snapshot.summary["added-position-deletes"] == str(len(gone))
    assert snapshot.summary["added-position-delete-files"] == str(len(deletes))
    assert snapshot.summary["total-position-deletes"] == str(len(gone))
    assert table.scan().count() == 300 - len(gone)


def test_position_delete_files_hold_the_spec_columns(table: Table) -> None:
    position_delete(table, In("movie_id", {3, 4}))
    data = live(table, DataFileContent.DATA)
    data_files = {e.data_file.file_path: e.data_file for m in table.current_snapshot().manifests(table.io)
                  for e in m.fetch_manifest_entry(table.io) if m.content == DATA}
    for path in live(table, DataFileContent.POSITION_DELETES):
        with table.io.new_input(path).open() as f:
            t = pq.read_table(f)
        assert t.column_names == ["file_path", "pos"]
        assert t.schema.field("pos").type == pa.int64()
        assert [t.schema.field(n).metadata[b"PARQUET:field_id"] for n in t.column_names] == [
            b"2147483546", b"2147483545"]
        assert set(t["file_path"].to_pylist()) <= set(data)
        assert t["pos"].to_pylist() == sorted(t["pos"].to_pylist())
    for f in changes(table, table.current_snapshot().snapshot_id)[(DELETES, ADDED)]:
        # full (untruncated) file_path bounds: pyiceberg's DeleteFileIndex indexes it by path
        (path,) = {f.lower_bounds[2147483546], f.upper_bounds[2147483546]}
        assert f.partition == data_files[path.decode()].partition


def test_a_second_position_delete_on_the_same_file(table: Table) -> None:
    position_delete(table, In("movie_id", {10, 11}))
    snapshot_id = position_delete(table, In("movie_id", {11, 12, 13}))  # 11 is already deleted

    assert read(table) == expected({10, 11, 12, 13})
    assert sum(f.record_count for f in changes(table, snapshot_id)[(DELETES, ADDED)]) == 2
    assert sum(live(table, DataFileContent.POSITION_DELETES).values()) == 4
    assert table.current_snapshot().summary["total-position-deletes"] == "4"


def test_position_delete_filters_as_string_and_as_arrow_expression(table: Table) -> None:
    position_delete(table, "movie_id < 3")
    position_delete(table, pc.field("title") == "title 7")
    assert read(table) == expected({0, 1, 2, 7})


def test_position_delete_of_nothing_commits_nothing(table: Table) -> None:
    position_delete(table, In("movie_id", {1}))
    snapshot_id = table.current_snapshot().snapshot_id
    assert position_delete(table, In("movie_id", {1, 10_000})) is None
    assert table.current_snapshot().snapshot_id == snapshot_id


# -- successive commits ----------------------------------------------------------------------


def test_compact_after_position_deletes_drops_the_delete_files(table: Table) -> None:
    position_delete(table, In("movie_id", {1, 2, 3}))
    position_delete(table, In("movie_id", {3, 200}))
    deletes = live(table, DataFileContent.POSITION_DELETES)

    snapshot_id = compact(table)

    assert table.current_snapshot().summary.operation == Operation.REPLACE
    assert read(table) == expected({1, 2, 3, 200})
    assert live(table, DataFileContent.POSITION_DELETES) == {}
    done = changes(table, snapshot_id)
    assert {f.file_path for f in done[(DELETES, DELETED)]} == set(deletes)
    assert sum(live(table, DataFileContent.DATA).values()) == 296
    summary = table.current_snapshot().summary
    assert summary["total-delete-files"] == "0" and summary["total-position-deletes"] == "0"
    assert summary["total-records"] == "296"


def test_position_delete_after_compaction(table: Table) -> None:
    compact(table)
    data = live(table, DataFileContent.DATA)
    position_delete(table, In("movie_id", {0, 100, 299}))
    assert read(table) == expected({0, 100, 299})
    assert live(table, DataFileContent.DATA) == data
    position_delete(table, In("movie_id", {42}))
    compact(table)
    position_delete(table, In("movie_id", {43}))
    assert read(table) == expected({0, 42, 43, 100, 299})
    assert sum(live(table, DataFileContent.POSITION_DELETES).values()) == 1


def test_appends_between_the_helpers(table: Table) -> None:
    position_delete(table, In("movie_id", {5}))
    add(table, rows(300, 50))
    compact(table)
    add(table, rows(350, 50))
    position_delete(table, In("movie_id", {6, 360}))
    got = read(table)
    assert got == [r for r in rows(0, 400).to_pylist() if r["movie_id"] not in {5, 6, 360}]
    ops = [s.summary.operation for s in table.snapshots()]
    assert ops == [Operation.APPEND] * 3 + [Operation.DELETE, Operation.APPEND, Operation.REPLACE,
                                            Operation.APPEND, Operation.DELETE]


# -- equality deletes ------------------------------------------------------------------------


def test_equality_delete_commits_an_equality_delete_file(table: Table) -> None:
    data_before = live(table, DataFileContent.DATA)
    keys = pa.table({"movie_id": pa.array([1, 2, 250], pa.int64())})

    snapshot_id = equality_delete(table, keys)

    snapshot = table.current_snapshot()
    assert snapshot.snapshot_id == snapshot_id and snapshot.summary.operation == Operation.DELETE
    done = changes(table, snapshot_id)
    assert set(done) == {(DELETES, ADDED)}
    assert (DELETES, "deletes") in manifest_meta(table, snapshot_id)
    files = done[(DELETES, ADDED)]
    assert len(files) == partitions(table)
    for f in files:
        assert f.content == DataFileContent.EQUALITY_DELETES
        assert f.equality_ids == [1]
        assert f.record_count == 3
    assert live(table, DataFileContent.DATA) == data_before
    assert snapshot.summary["added-equality-deletes"] == str(3 * len(files))
    with pytest.raises(ValueError, match="equality deletes"):
        table.scan().to_arrow()


def test_equality_delete_on_two_columns(table: Table) -> None:
    keys = pa.table({"country": ["DE", "US"], "movie_id": pa.array([0, 1], pa.int64())})
    snapshot_id = equality_delete(table, keys)
    (f, *_) = changes(table, snapshot_id)[(DELETES, ADDED)]
    assert f.equality_ids == [5, 1] and f.record_count == 2
    with table.io.new_input(f.file_path).open() as fi:
        written = pq.read_table(fi)
    assert sorted(written.column_names) == ["country", "movie_id"]
    assert sorted(written.to_pylist(), key=lambda r: r["movie_id"]) == [
        {"movie_id": 0, "country": "DE"}, {"movie_id": 1, "country": "US"}]
