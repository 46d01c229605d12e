"""Test helpers that commit the kinds of Iceberg snapshots pyiceberg's public API cannot write.

- ``compact``: a ``replace`` snapshot (data files rewritten, rows unchanged),
- ``position_delete``: merge-on-read position deletes in a delete manifest,
- ``equality_delete``: an equality-delete file in a delete manifest,
- ``append``: ``table.append`` for any partition spec without pyiceberg-core (pyiceberg
  partitions Arrow data with pyiceberg-core's transforms for all but identity partitions;
  the dev extra installs pyiceberg-core, and this helper does not need it).

All four lean on private pyiceberg pieces (checked against pyiceberg 0.12.0, format
version 2 tables only):

- ``pyiceberg.table.update.snapshot._SnapshotProducer``: ``_FileChanges`` below subclasses it
  and replaces its ``_manifests`` (which only writes DATA manifests) and its ``_summary``
  (``update_snapshot_summaries`` raises for ``Operation.REPLACE``). The base class still
  gives the snapshot id, the manifest and manifest-list writing, the summary counts
  (``SnapshotSummaryCollector`` knows delete files) and the transaction plumbing.
- ``pyiceberg.manifest.ManifestWriterV2``: its ``content()`` is hard-coded to DATA;
  ``_DeleteManifestWriter`` overrides it (and the ``content`` Avro metadata) to write a
  DELETES manifest.
- ``pyiceberg.io.pyarrow``: ``ArrowScan`` (read a data file's rows, with or without its
  deletes), ``write_file`` with a ``pyiceberg.table.WriteTask`` and a ``PartitionKey`` (write
  the rows of one partition as one data file: ``_dataframe_to_data_files`` is not used, it
  needs pyiceberg-core to split bucket/day/... partitions),
  ``data_file_statistics_from_parquet_metadata`` / ``compute_statistics_plan`` /
  ``parquet_path_to_id_mapping`` (the metrics of a delete file), ``_read_deletes`` (the
  positions a position-delete file already holds).
- ``DataFile.spec_id`` must be set by hand: ``DataFile.from_args`` drops a ``spec_id``
  argument (``Record._bind`` keeps only struct fields).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.expressions.parser import parse
from pyiceberg.expressions.visitors import bind
from pyiceberg.io.pyarrow import (
    ArrowScan,
    _read_deletes,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    expression_to_pyarrow,
    parquet_path_to_id_mapping,
    schema_to_pyarrow,
    write_file,
)
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestWriter,
    ManifestWriterV2,
)
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, partition_record_value
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table, WriteTask
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT, Record
from pyiceberg.types import LongType, NestedField, StringType

#: The Iceberg spec's position-delete file schema (pyiceberg's own POSITIONAL_DELETE_SCHEMA
#: types ``pos`` as int, the spec says long).
POSITION_DELETE_SCHEMA = Schema(
    NestedField(2147483546, "file_path", StringType(), required=True),
    NestedField(2147483545, "pos", LongType(), required=True),
)

RowFilter = str | BooleanExpression | pc.Expression


class _DeleteManifestWriter(ManifestWriterV2):
    """A v2 manifest writer whose manifest holds delete files (manifest content DELETES)."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class _FileChanges(_SnapshotProducer["_FileChanges"]):
    """One snapshot that adds and removes data and delete files, with any operation.

    ``append_data_file`` takes data and delete files alike, ``delete_data_file`` the files to
    remove (data or delete files of the parent snapshot). ``_manifests`` keeps the parent's
    untouched manifests, rewrites those holding removed files (the removed entries as DELETED,
    the others as EXISTING, in a manifest of the same content), and writes the added files into
    one new DATA or DELETES manifest per (spec, content).
    """

    def _deleted_entries(self) -> list[ManifestEntry]:  # unused: _manifests is replaced
        return []

    def _existing_manifests(self) -> list[ManifestFile]:  # unused: _manifests is replaced
        return []

    def _writer(self, spec_id: int, content: ManifestContent) -> ManifestWriter:
        if content == ManifestContent.DATA:
            return self.new_manifest_writer(self.spec(spec_id))
        return _DeleteManifestWriter(self.spec(spec_id), self.schema(), self.new_manifest_output(),
                                     self._snapshot_id, self._compression)

    def _manifests(self) -> list[ManifestFile]:
        metadata = self._transaction.table_metadata
        parent = metadata.snapshot_by_id(self._parent_snapshot_id) if self._parent_snapshot_id is not None else None
        removed, found = self._deleted_data_files, set[DataFile]()
        manifests: list[ManifestFile] = []
        for manifest in parent.manifests(self._io) if parent else []:
            entries = manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            hits = [e for e in entries if e.data_file in removed]
            if not hits:
                if entries:  # a manifest with no live file is dropped, as FastAppend does
                    manifests.append(manifest)
                continue
            found.update(e.data_file for e in hits)
            with self._writer(manifest.partition_spec_id, manifest.content) as writer:
                for entry in entries:
                    (writer.delete if entry.data_file in removed else writer.existing)(entry)
            manifests.append(writer.to_manifest_file())
        if missing := removed - found:
            raise ValueError(f"not live in the parent snapshot: {sorted(f.file_path for f in missing)}")
        groups: dict[tuple[int, ManifestContent], list[DataFile]] = defaultdict(list)
        for f in self._added_data_files:
            content = ManifestContent.DATA if f.content == DataFileContent.DATA else ManifestContent.DELETES
            groups[(f.spec_id, content)].append(f)
        for (spec_id, content), files in groups.items():
            with self._writer(spec_id, content) as writer:
                for f in files:
                    writer.add_entry(ManifestEntry.from_args(
                        status=ManifestEntryStatus.ADDED, snapshot_id=self._snapshot_id,
                        sequence_number=None, file_sequence_number=None, data_file=f))
            manifests.append(writer.to_manifest_file())
        return manifests

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # update_snapshot_summaries refuses REPLACE: build the totals as an overwrite.
        operation, self._operation = self._operation, Operation.OVERWRITE
        try:
            summary = super()._summary(snapshot_properties)
        finally:
            self._operation = operation
        return Summary(operation=operation, **summary.additional_properties)


def _commit(table: Table, operation: Operation, add: Iterable[DataFile] = (),
            remove: Iterable[DataFile] = ()) -> int:
    """Commit one snapshot adding ``add`` and removing ``remove``; return its id."""
    if table.metadata.format_version != 2:
        raise NotImplementedError("iceberg_ops writes format version 2 manifests only")
    with table.transaction() as tx:
        producer = _FileChanges(operation, tx, table.io)
        for f in add:
            producer.append_data_file(f)
        for f in remove:
            producer.delete_data_file(f)
        producer.commit()
    return producer.snapshot_id


def _read_rows(table: Table, tasks: list[FileScanTask]) -> pa.Table:
    """The rows of ``tasks`` in the table's schema, in file order, minus their deletes."""
    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)


def _write_data_file(table: Table, rows: pa.Table, spec_id: int, partition: Record) -> DataFile:
    """Write ``rows``, all in ``partition`` of spec ``spec_id``, as one data file."""
    spec, schema = table.specs()[spec_id], table.schema()
    key = PartitionKey([PartitionFieldValue(f, partition[i]) for i, f in enumerate(spec.fields)],
                       spec, schema) if spec.fields else None
    task = WriteTask(write_uuid=uuid.uuid4(), task_id=0, schema=schema,
                     record_batches=rows.cast(schema.as_arrow()).to_batches(), partition_key=key)
    (data_file,) = write_file(table.io, table.metadata, iter([task]))
    data_file.spec_id = spec_id
    return data_file


def _arrow_filter(table: Table, row_filter: RowFilter) -> pc.Expression:
    if isinstance(row_filter, pc.Expression):
        return row_filter
    expr = parse(row_filter) if isinstance(row_filter, str) else row_filter
    return expression_to_pyarrow(bind(table.schema(), expr, case_sensitive=True))


def _write_delete_file(table: Table, rows: pa.Table, schema: Schema, content: DataFileContent,
                       partition: Record, spec_id: int,
                       equality_ids: list[int] | None = None) -> DataFile:
    """Write ``rows`` (columns of ``schema``) as a Parquet delete file and describe it.

    Metrics are kept in full (no truncation) so that a position-delete file's ``file_path``
    bounds name its data file (pyiceberg's DeleteFileIndex then indexes it by path).
    """
    arrow_schema = schema_to_pyarrow(schema)
    rows = pa.Table.from_arrays([rows[f.name].cast(f.type) for f in arrow_schema], schema=arrow_schema)
    path = table.location_provider().new_data_location(f"{uuid.uuid4()}-deletes.parquet")
    with table.io.new_output(path).create() as out:
        pq.write_table(rows, out)
    with table.io.new_input(path).open() as fi:
        parquet_metadata = pq.read_metadata(fi)
    stats = data_file_statistics_from_parquet_metadata(
        parquet_metadata=parquet_metadata,
        stats_columns=compute_statistics_plan(schema, {"write.metadata.metrics.default": "full"}),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    delete_file = DataFile.from_args(
        content=content, file_path=path, file_format=FileFormat.PARQUET, partition=partition,
        file_size_in_bytes=len(table.io.new_input(path)), sort_order_id=None,
        equality_ids=equality_ids, key_metadata=None, **stats.to_serialized_dict())
    delete_file.spec_id = spec_id
    return delete_file


def compact(table: Table, partition_filter: str | BooleanExpression | None = None) -> int | None:
    """Rewrite the live rows of data files into new ones in one ``replace`` snapshot.

    The files rewritten are all live data files, or with ``partition_filter`` those that
    ``table.scan(row_filter=partition_filter)`` plans (pruned by partition and column bounds;
    all live rows of such a file are rewritten, not only the matching ones). Their rows,
    position deletes applied (``ArrowScan``), are written as one new data file per partition
    (in the spec of the old files) by ``write_file``, whatever its size. The snapshot removes
    the old data files and the position-delete files that applied only to them, and adds the
    new files. Returns the snapshot id, or None when there was nothing to rewrite.

    Relies on ``_FileChanges`` (``_SnapshotProducer``, ``_DeleteManifestWriter``),
    ``ArrowScan``, ``write_file``, ``WriteTask`` and ``PartitionKey``. pyiceberg cannot plan a
    table holding equality deletes, so neither can this.
    """
    tasks = list(table.scan().plan_files())
    if partition_filter is None:
        chosen = {t.file.file_path for t in tasks}
    else:
        chosen = {t.file.file_path for t in table.scan(row_filter=partition_filter).plan_files()}
    old = [t for t in tasks if t.file.file_path in chosen]
    if not old:
        return None
    groups: dict[tuple[int, Record], list[FileScanTask]] = defaultdict(list)
    for t in old:
        groups[(t.file.spec_id, t.file.partition)].append(t)
    new = []
    for (spec_id, partition), group in groups.items():
        if (rows := _read_rows(table, group)).num_rows:
            new.append(_write_data_file(table, rows, spec_id, partition))
    kept_deletes = set().union(*(t.delete_files for t in tasks if t.file.file_path not in chosen))
    old_deletes = set().union(*(t.delete_files for t in old)) - kept_deletes
    return _commit(table, Operation.REPLACE, add=new, remove=[t.file for t in old] + list(old_deletes))


def position_delete(table: Table, row_filter: RowFilter) -> int | None:
    """Delete the rows matching ``row_filter`` with position deletes (merge-on-read).

    ``row_filter`` is a pyiceberg expression or string (``In("movie_id", {1, 2})``,
    ``"movie_id < 10"``) or a ``pyarrow.compute.Expression``. For each live data file, its rows
    are read in file order (``ArrowScan`` on the file alone, no deletes), the positions of the
    matching rows not already deleted (``_read_deletes`` on the file's current delete files)
    go into one position-delete Parquet file (``file_path``, ``pos``, sorted by ``pos``) with the
    data file's partition, and all of them are committed in a DELETES manifest in one
    ``delete`` snapshot; the data files stay. Returns the snapshot id, or None (no snapshot)
    when no live row matches.

    Relies on ``_FileChanges`` (``_SnapshotProducer``, ``_DeleteManifestWriter``),
    ``ArrowScan``, ``_read_deletes`` and the statistics helpers of ``pyiceberg.io.pyarrow``.
    """
    predicate = _arrow_filter(table, row_filter)
    delete_files = []
    for task in table.scan().plan_files():
        path = task.file.file_path
        rows = _read_rows(table, [FileScanTask(task.file)])
        rows = rows.append_column("__pos", pa.array(range(rows.num_rows), pa.int64()))
        hits = set(rows.filter(predicate)["__pos"].to_pylist())
        for d in task.delete_files:
            if (done := _read_deletes(table.io, d).get(path)) is not None:
                hits -= set(done.to_pylist())
        if hits:
            positions = pa.table({"file_path": [path] * len(hits), "pos": sorted(hits)})
            delete_files.append(_write_delete_file(
                table, positions, POSITION_DELETE_SCHEMA, DataFileContent.POSITION_DELETES,
                task.file.partition, task.file.spec_id))
    if not delete_files:
        return None
    return _commit(table, Operation.DELETE, add=delete_files)


def equality_delete(table: Table, keys: pa.Table) -> int | None:
    """Commit an equality-delete file deleting the rows whose ``keys.column_names`` equal a
    row of ``keys``, in a DELETES manifest of one ``delete`` snapshot.

    ``equality_ids`` are the field ids of the table's columns named like ``keys``' columns
    (in ``keys``' order); the file holds those columns (the table's types and field ids) and
    ``keys``' rows. An unpartitioned table gets one file; a partitioned one gets one file per
    partition holding live data files, each with all the keys (an equality delete applies only
    to data files of its own partition). Returns the snapshot id, or None when the table holds
    no live data file. pyiceberg cannot read the table afterwards (``plan_files`` raises
    ValueError on equality deletes).

    Relies on ``_FileChanges`` (``_SnapshotProducer``, ``_DeleteManifestWriter``) and the
    statistics helpers of ``pyiceberg.io.pyarrow``.
    """
    schema = table.schema()
    ids = [schema.find_field(name).field_id for name in keys.column_names]
    key_schema = schema.select(*keys.column_names)
    snapshot = table.current_snapshot()
    partitions: dict[tuple[int, Any], Record] = {}
    for manifest in snapshot.manifests(table.io) if snapshot else []:
        if manifest.content == ManifestContent.DATA:
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                f = entry.data_file
                partitions[(f.spec_id, f.partition)] = f.partition
    if not partitions:
        return None
    delete_files = [
        _write_delete_file(table, keys, key_schema, DataFileContent.EQUALITY_DELETES,
                           partition, spec_id, equality_ids=ids)
        for (spec_id, _), partition in partitions.items()
    ]
    return _commit(table, Operation.DELETE, add=delete_files)


def append(table: Table, data: pa.Table) -> int:
    """Append ``data`` in one ``append`` snapshot, one data file per partition of the spec.

    Unlike ``table.append`` this computes partitions row by row with pyiceberg's Python
    transforms (``partition_record_value`` then ``transform.transform``), so bucket, day, ...
    partitioned tables can be written without pyiceberg-core. The files are written by
    ``write_file`` (``_write_data_file``) and committed by pyiceberg's own
    ``_FastAppendFiles`` (``tx.update_snapshot().fast_append()``). Returns the snapshot id.
    """
    spec, schema = table.spec(), table.schema()
    columns = [
        [f.transform.transform(schema.find_type(f.source_id))(partition_record_value(f, v, schema))
         for v in data[schema.find_column_name(f.source_id)].to_pylist()]
        for f in spec.fields
    ]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(zip(*columns, strict=True) if columns else [()] * data.num_rows):
        groups[key].append(i)
    files = [_write_data_file(table, data.take(rows), spec.spec_id, Record(*key))
             for key, rows in groups.items()]
    with table.transaction() as tx, tx.update_snapshot().fast_append() as fast_append:
        for f in files:
            fast_append.append_data_file(f)
    return fast_append.snapshot_id
