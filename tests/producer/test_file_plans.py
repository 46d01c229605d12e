"""File-diff plans on a real SqlCatalog: each kind of Iceberg snapshot reads the data files
it changed, and the feed built from them equals a full read of the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.expressions import EqualTo, In
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

import feedkit
from feedkit.producer import Producer
from feedkit.producer.iceberg import IcebergSource, ReadPlan, TablePosition

from .iceberg_ops import compact, equality_delete, position_delete

TABLE = "muse.parts"
FEED = "muse.parts"
PARTS = 10


def rows(ids: list[int], mark: str = "") -> pa.Table:
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "part": pa.array([i % PARTS for i in ids], pa.int64()),
        "name": pa.array([f"name {i}{mark}" for i in ids], pa.string()),
        "score": pa.array([i / 7 for i in ids], pa.float64()),
    })


SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "part", LongType(), required=False),
    NestedField(3, "name", StringType(), required=False),
    NestedField(4, "score", DoubleType(), required=False),
)


@pytest.fixture
def table(catalog: Any) -> Table:
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000,
                                        transform=IdentityTransform(), name="part"))
    t = catalog.create_table(TABLE, schema=SCHEMA, partition_spec=spec)
    t.append(rows(list(range(1000))))  # a data file per partition
    return t


class Follower:
    """A producer following the table through IcebergSource plans, as the daemon does."""

    def __init__(self, catalog: Any, store: feedkit.BlobStore, tmp_path: Path) -> None:
        self.source = IcebergSource(catalog, TABLE, feed=FEED, key=("id",))
        self.producer = Producer(store, feed=FEED, primary_key="id", work_dir=tmp_path / "work")
        self.store, self.cache = store, tmp_path / "cache"
        self.consumer: feedkit.Consumer | None = None
        self.since: TablePosition | None = None
        self.plans: list[ReadPlan] = []

    def cycle(self, want: dict[int, dict[str, Any]] | None = None) -> ReadPlan:
        table = self.source.load()
        plan = self.source.plan(table, self.since)
        self.plans.append(plan)
        src = self.source.source(table, plan.position)
        if plan.kind == "files":
            change = self.source.read_change(table, plan)
            self.producer.update(change.upserts, deletes=change.deletes, source=src)
        elif plan.kind == "append":
            self.producer.append(self.source.read(table, plan), source=src)
        elif plan.kind == "full":
            self.producer.publish(self.source.read(table, plan), source=src)
        self.since = plan.position
        self.check(table, want)
        return plan

    def served(self) -> dict[int, dict[str, Any]]:
        assert self.consumer is not None
        return {k: r._asdict() for k, r in self.consumer.items()}

    def check(self, table: Table, want: dict[int, dict[str, Any]] | None = None) -> None:
        """The feed equals a full read (``want``: the rows expected, where pyiceberg
        cannot read the table: equality deletes)."""
        if self.consumer is None:
            self.consumer = feedkit.Consumer(self.store, feed=FEED, cache_dir=self.cache,
                                             watch=False).open()
        self.consumer.refresh()
        if want is None:
            want = {r["id"]: r for r in table.scan().to_arrow().to_pylist()}
        assert self.served() == want, f"after {self.plans[-1]}"

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
        self.producer.close()


@pytest.fixture
def follower(catalog: Any, table: Table, store: feedkit.BlobStore, tmp_path: Path) -> Any:
    f = Follower(catalog, store, tmp_path)
    assert f.cycle().kind == "full"
    yield f
    f.close()


def test_a_partition_overwrite_reads_that_partition(follower: Follower, table: Table) -> None:
    new = rows([i for i in range(1000) if i % PARTS == 3][:50], mark="!")  # 100 -> 50 rows
    table.overwrite(new, overwrite_filter=EqualTo("part", 3))
    plan = follower.cycle()
    assert plan.kind == "files" and plan.change is not None
    assert len(plan.change.added) == 1 and len(plan.change.removed) == 1
    assert plan.change.records == 150  # not the table's 1000
    report = follower.producer.last_report
    assert (report.added, report.changed, report.removed) == (0, 50, 50)  # type: ignore[union-attr]


def test_a_delete_reads_the_rewritten_files(follower: Follower, table: Table) -> None:
    table.delete(In("id", [5, 15, 16, 999]))
    plan = follower.cycle()
    assert plan.kind == "files" and plan.change is not None
    assert len(plan.change.removed) == 3 and len(plan.change.added) == 3  # parts 5, 6, 9
    assert follower.producer.last_report.removed == 4  # type: ignore[union-attr]


def test_an_upsert_and_a_dynamic_partition_overwrite(follower: Follower, table: Table) -> None:
    table.upsert(pa.concat_tables([rows([1, 2], mark="+"), rows([2000, 2001])]), join_cols=["id"])
    plan = follower.cycle()
    assert plan.kind == "files"
    report = follower.producer.last_report
    assert (report.added, report.changed, report.removed) == (2, 2, 0)  # type: ignore[union-attr]
    table.dynamic_partition_overwrite(rows([7, 17, 27], mark="~"))
    plan = follower.cycle()
    assert plan.kind == "files" and plan.change is not None and len(plan.change.added) == 1
    assert follower.producer.last_report.removed == 97  # type: ignore[union-attr]


def test_several_kinds_of_snapshots_in_one_range(follower: Follower, table: Table) -> None:
    table.append(rows([3000, 3001]))
    table.delete(EqualTo("part", 4))
    table.overwrite(rows([11, 21], mark="*"), overwrite_filter=In("id", [11, 21, 31]))
    table.append(rows([3002]))
    plan = follower.cycle()
    assert plan.kind == "files" and plan.reason.startswith("append, delete, overwrite")


def test_an_identical_rewrite_publishes_nothing(follower: Follower, table: Table) -> None:
    version = follower.producer.version
    table.overwrite(rows([i for i in range(1000) if i % PARTS == 8]),
                    overwrite_filter=EqualTo("part", 8))
    assert follower.cycle().kind == "files" and follower.producer.version == version


def test_a_rollback_reads_the_files_between(follower: Follower, table: Table) -> None:
    first = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    table.delete(EqualTo("part", 1))
    table.append(rows([5000, 5001]))
    follower.cycle()
    table.manage_snapshots().rollback_to_snapshot(first).commit()
    plan = follower.cycle()
    assert plan.kind == "files" and "not an ancestor" in plan.reason


def test_an_expired_published_snapshot(follower: Follower, table: Table, catalog: Any) -> None:
    published = follower.since
    assert published is not None
    table.delete(EqualTo("part", 2))
    table.refresh()
    table.maintenance.expire_snapshots().by_id(published.snapshot_id).commit()  # type: ignore[arg-type]
    table.refresh()
    assert table.snapshot_by_id(published.snapshot_id) is None  # type: ignore[arg-type]
    # This process listed the published snapshot's files: still a file diff.
    assert follower.source.plan(table, published).kind == "files"
    # A restarted daemon has not: a full read, saying why.
    fresh = IcebergSource(catalog, TABLE, feed=FEED, key=("id",))
    plan = fresh.plan(fresh.load(), published)
    assert plan.kind == "full" and "expired" in plan.reason
    assert follower.cycle().kind == "files"


def test_unpartitioned_appends_then_a_delete_in_one_file(catalog: Any, store: feedkit.BlobStore,
                                                         tmp_path: Path) -> None:
    t = catalog.create_table(TABLE, schema=SCHEMA)
    for start in range(0, 1000, 100):
        t.append(rows(list(range(start, start + 100))))
    f = Follower(catalog, store, tmp_path)
    try:
        f.cycle()
        t.delete(In("id", [150, 151]))
        plan = f.cycle()
        assert plan.kind == "files" and plan.change is not None
        assert plan.change.records == 198  # the one rewritten file, not 1000 rows
    finally:
        f.close()


def test_a_compaction_publishes_nothing_and_reads_nothing(follower: Follower,
                                                          table: Table) -> None:
    version = follower.producer.version
    table.delete(In("id", [3, 4]))
    follower.cycle()
    version = follower.producer.version
    assert compact(table) is not None
    table.refresh()
    assert table.current_snapshot().summary.operation.value == "replace"  # type: ignore[union-attr]
    plan = follower.cycle()
    assert plan.kind == "none" and "replace" in plan.reason and plan.change is None
    assert follower.producer.version == version and follower.since == plan.position
    # After it, a delete reads the compacted files it rewrites.
    table.delete(EqualTo("id", 13))
    plan = follower.cycle()
    assert plan.kind == "files" and plan.change is not None and len(plan.change.added) == 1


def test_position_deletes_delete_the_keys_at_those_positions(follower: Follower,
                                                             table: Table) -> None:
    assert position_delete(table, In("id", [21, 22, 35])) is not None
    plan = follower.cycle()
    assert plan.kind == "files" and plan.change is not None
    # the same data files, now with deletes: read again as new units
    assert {t.file.file_path for t in plan.change.added} == {
        t.file.file_path for t in plan.change.removed}
    assert all(t.delete_files for t in plan.change.added)
    assert follower.producer.last_report.removed == 3  # type: ignore[union-attr]
    assert position_delete(table, In("id", [41])) is not None  # a second one, same file
    follower.cycle()
    compact(table)  # applies the deletes: the same rows, no version
    version = follower.producer.version
    assert follower.cycle().kind == "none" and follower.producer.version == version


def test_key_equality_deletes_are_deletes(follower: Follower, table: Table) -> None:
    want = follower.served()
    assert equality_delete(table, pa.table({"id": pa.array([5, 6, 7, 123], pa.int64())}))
    for k in (5, 6, 7, 123):
        del want[k]
    plan = follower.cycle(want)
    assert plan.kind == "files" and plan.change is not None and plan.change.equality
    assert not plan.change.added and not plan.change.removed  # no data file read
    assert follower.producer.last_report.removed == 4  # type: ignore[union-attr]
    # A row appended after the delete is not deleted by it.
    table.append(rows([5]))
    want[5] = rows([5]).to_pylist()[0]
    assert follower.cycle(want).kind == "append"
    # In one range: a key deleted then appended again stays; one appended then deleted
    # goes (the delete applies to the older file, read with it applied).
    equality_delete(table, pa.table({"id": pa.array([8], pa.int64())}))
    table.append(rows([8, 4000], mark="#"))
    equality_delete(table, pa.table({"id": pa.array([4000], pa.int64())}))
    table.refresh()
    want[8] = rows([8], mark="#").to_pylist()[0]
    plan = follower.cycle(want)
    assert plan.kind == "files" and len(plan.change.equality) >= 2  # type: ignore[union-attr]


def test_an_equality_delete_on_another_column_is_a_full_read(follower: Follower,
                                                             table: Table) -> None:
    want = {k: r for k, r in follower.served().items() if r["part"] != 2}
    assert equality_delete(table, pa.table({"part": pa.array([2], pa.int64())}))
    plan = follower.cycle(want)
    assert plan.kind == "full" and plan.cause == "delete_files"
    assert "not the key's" in plan.reason
