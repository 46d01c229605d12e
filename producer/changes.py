"""What an Iceberg table changed between two snapshots, from its metadata, and the rows
that change is made of.

A snapshot's rows are the rows of its live data files, less those the delete files
that apply to each remove. Two snapshots that share a data file with the same position
deletes share its rows; so with a primary key unique in each snapshot, the later state
is the earlier one less the rows of the units (data file + position deletes) only the
earlier one has, plus the rows of the units only the later one has. Read as a change:

- the rows of the later snapshot's new units are upserts (the producer diffs them
  against its state: a rewritten row that did not change is no change);
- the keys of the earlier snapshot's gone units are deletes, unless a new unit holds
  them again (an upsert of the same key wins);
- an equality-delete file on the primary key, new in the later snapshot, deletes its
  keys from the data files older than it (rows of new units it applies to are dropped
  when they are read).

That covers appends, copy-on-write overwrites and deletes (files removed and added),
merge-on-read position deletes (a data file whose position deletes changed is a new
unit), equality deletes on the key, compactions (``replace``: other files, the same
rows) and rollbacks or branch switches (any two snapshots whose files are known). What
it cannot follow (an equality delete on other columns, an equality-delete file that
went away, a snapshot whose manifests are gone) the planner reads in full, saying why.

pyiceberg's own ``plan_files`` refuses tables with equality deletes, so the live files
are listed here from the manifests, with pyiceberg's ``DeleteFileIndex`` matching
position deletes to data files as its scan planning does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from cachetools import LRUCache
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import (
    INITIAL_SEQUENCE_NUMBER,
    DataFile,
    DataFileContent,
    ManifestEntry,
    ManifestFile,
)
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.delete_file_index import DeleteFileIndex
from pyiceberg.table.snapshots import Snapshot

__all__ = ["FileChange", "LiveFiles", "ManifestCache", "file_change", "live_files",
           "read_units"]

Unit = tuple[str, frozenset[str]]  # a data file's path, the paths of its position deletes


@dataclass(frozen=True)
class EqualityDelete:
    """An equality-delete file: it removes rows equal on ``field_ids`` from data files of a
    lower data sequence number."""

    file: DataFile
    sequence_number: int
    field_ids: frozenset[int]


@dataclass(frozen=True)
class LiveFiles:
    """The data files a snapshot reads, each with its position deletes (a scan task), and
    its equality-delete files."""

    snapshot_id: int
    units: dict[Unit, FileScanTask]
    sequence: dict[str, int]  # data file path -> data sequence number
    equality: dict[str, EqualityDelete]

    @property
    def records(self) -> int:
        """Rows in the data files (before deletes): what a full read scans."""
        return sum(t.file.record_count for t in self.units.values())


class ManifestCache:
    """The live entries of manifests read before, by path (a manifest file is never
    rewritten in place), so that listing a new snapshot reads only its new manifests."""

    def __init__(self, size: int = 4096) -> None:
        self._entries: LRUCache[str, list[ManifestEntry]] = LRUCache(maxsize=size)

    def entries(self, table: Table, manifest: ManifestFile) -> list[ManifestEntry]:
        found = self._entries.get(manifest.manifest_path)
        if found is None:
            found = manifest.fetch_manifest_entry(table.io, discard_deleted=True)
            self._entries[manifest.manifest_path] = found
        return found


def live_files(table: Table, snapshot: Snapshot, cache: ManifestCache | None = None) -> LiveFiles:
    """The live files of ``snapshot``, from its manifests (those in ``cache`` not read
    again).

    Raises:
        OSError, ValueError: a manifest cannot be read (expired, deleted, damaged).
    """
    io = table.io
    cache = cache or ManifestCache()
    data: list[tuple[DataFile, int]] = []
    positions = DeleteFileIndex()
    equality: dict[str, EqualityDelete] = {}
    for manifest in snapshot.manifests(io):
        for entry in cache.entries(table, manifest):
            f = entry.data_file
            seq = entry.sequence_number or INITIAL_SEQUENCE_NUMBER
            if f.content == DataFileContent.DATA:
                data.append((f, seq))
            elif f.content == DataFileContent.POSITION_DELETES:
                positions.add_delete_file(entry, partition_key=f.partition)
            elif f.content == DataFileContent.EQUALITY_DELETES:
                equality[f.file_path] = EqualityDelete(f, seq, frozenset(f.equality_ids or ()))
            else:
                raise ValueError(f"unknown content {f.content} of {f.file_path}")
    units: dict[Unit, FileScanTask] = {}
    sequence: dict[str, int] = {}
    for f, seq in data:
        deletes = positions.for_data_file(seq, f, partition_key=f.partition)
        units[(f.file_path, frozenset(d.file_path for d in deletes))] = FileScanTask(
            f, delete_files=deletes)
        sequence[f.file_path] = seq
    return LiveFiles(snapshot.snapshot_id, units, sequence, equality)


@dataclass(frozen=True)
class FileChange:
    """What differs between two snapshots' live files: the units to read as upserts, the
    units whose keys are deletes, the equality-delete files whose keys are deletes; or,
    with ``problem``, why the change cannot be read from files (a full read instead)."""

    added: list[FileScanTask]
    removed: list[FileScanTask]
    equality: list[EqualityDelete]
    problem: str | None = None

    @property
    def records(self) -> int:
        """Rows in the files the change reads (before deletes)."""
        return (sum(t.file.record_count for t in self.added + self.removed)
                + sum(e.file.record_count for e in self.equality))


def file_change(old: LiveFiles, new: LiveFiles, key_ids: frozenset[int]) -> FileChange:
    """The change from ``old``'s files to ``new``'s, for a table keyed on the fields
    ``key_ids``."""
    gone = [p for p in old.equality if p not in new.equality]
    if gone:
        return FileChange([], [], [], f"equality-delete file {gone[0]} went away")
    came = [e for p, e in new.equality.items() if p not in old.equality]
    other = [e for e in came if e.field_ids != key_ids]
    if other:
        return FileChange([], [], [], f"equality-delete file {other[0].file.file_path} is on "
                                      f"fields {sorted(other[0].field_ids)}, not the key's")
    return FileChange([t for u, t in new.units.items() if u not in old.units],
                      [t for u, t in old.units.items() if u not in new.units], came)


def _field_names(schema: Schema, ids: frozenset[int]) -> list[str]:
    return [schema.find_column_name(i) or str(i) for i in sorted(ids)]


def read_units(table: Table, live: LiveFiles, tasks: list[FileScanTask],
               columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """The rows of ``tasks`` (units of ``live``) in the table's current schema (``columns``
    of it, or all), position deletes applied by pyiceberg, the equality deletes of
    ``live`` applied here: a row goes when an equality-delete file of a higher sequence
    number holds its values on the file's fields.

    Raises:
        OSError, ValueError: a file cannot be read.
    """
    schema = table.schema()
    wanted = columns or [f.name for f in schema.fields]
    deletes = list(live.equality.values())
    eq_columns = sorted({n for e in deletes for n in _field_names(schema, e.field_ids)})
    projected = schema.select(*dict.fromkeys(wanted + eq_columns))
    scan = ArrowScan(table.metadata, table.io, projected, AlwaysTrue())
    keys = {e.file.file_path: _deleted_values(table, e) for e in deletes}
    for task in tasks:
        seq = live.sequence.get(task.file.file_path, INITIAL_SEQUENCE_NUMBER)
        applying = [e for e in deletes if e.sequence_number > seq]
        for batch in scan.to_record_batches([task]):
            for e in applying:
                names = _field_names(schema, e.field_ids)
                batch = _without(batch, names, keys[e.file.file_path])
            yield batch.select(wanted) if eq_columns else batch


def equality_keys(table: Table, change: FileChange, key: list[str]) -> pa.Table | None:
    """The key values the change's equality-delete files hold, None when it has none."""
    if not change.equality:
        return None
    return pa.concat_tables([_deleted_values(table, e).select(key) for e in change.equality])


def _deleted_values(table: Table, e: EqualityDelete) -> pa.Table:
    """An equality-delete file's rows: the values of its fields, by field id."""
    schema = table.schema()
    projected = schema.select(*_field_names(schema, e.field_ids))
    return ArrowScan(table.metadata, table.io, projected, AlwaysTrue()).to_table(
        [FileScanTask(e.file)])


def _without(batch: pa.RecordBatch, names: list[str], deleted: pa.Table) -> pa.RecordBatch:
    """``batch`` less its rows whose ``names`` values are a row of ``deleted``."""
    if not len(deleted) or not batch.num_rows:
        return batch
    if len(names) == 1:
        keep = pc.invert(pc.is_in(batch.column(names[0]), value_set=deleted.column(names[0])))
        return batch.filter(keep)
    rows = pa.Table.from_batches([batch]).append_column(
        "__feedkit_row", pa.array(range(batch.num_rows), pa.int64()))
    hit = rows.select([*names, "__feedkit_row"]).join(
        deleted.select(names), names, join_type="left semi")["__feedkit_row"]
    keep = pc.invert(pc.is_in(rows["__feedkit_row"], value_set=hit))
    return batch.filter(keep)
