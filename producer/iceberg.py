"""Reading a feed's Iceberg table: where it stands, what changed, and the rows to read.

A feed version records the table position it was built from (snapshot id, schema
id) as its manifest's ``source``. The next cycle compares the table's current
position with it and plans (:meth:`IcebergSource.plan`):

- ``none``: the same snapshot and schema, or only ``replace`` snapshots (compactions)
  whose live row counts match: nothing to read, no version;
- ``append``: only ``append`` snapshots since: read the data files they added;
- ``files``: anything else between two snapshots whose files are known (overwrites,
  deletes, upserts, position or key equality deletes, a rollback or a branch switch):
  read the data files one snapshot has and the other has not (``producer/changes.py``)
  and publish the change (``Producer.update``);
- ``full``: no version yet, a schema change, a published snapshot that was expired
  before its files were seen, a delete the file diff cannot follow, or a change that
  reads more rows than the table holds: read the whole table. The plan says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
from cachetools import LRUCache
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, ancestors_between_ids, is_parent_ancestor_of

from feedkit.errors import ConfigurationError, FeedkitError, ValidationError

from .changes import (
    FileChange,
    LiveFiles,
    ManifestCache,
    equality_keys,
    file_change,
    live_files,
    read_units,
)

__all__ = ["FULL_READ_CAUSES", "CatalogHandle", "ChangeReaders", "IcebergSource", "ReadPlan",
           "TablePosition", "open_catalog"]

log = logging.getLogger("feedkit.producer.iceberg")


def open_catalog(name: str, properties: dict[str, Any]) -> Catalog:
    """``pyiceberg.catalog.load_catalog(name, **properties)``, errors translated.

    Raises:
        ConfigurationError: the catalog cannot be loaded with these properties.
    """
    try:
        return load_catalog(name, **{k: str(v) for k, v in properties.items()})
    except Exception as exc:  # pyiceberg raises ValueError, ImportError, SQLAlchemy errors...
        raise ConfigurationError(f"catalog {name!r}: cannot load it: {exc}") from exc


def sqlite_file(properties: dict[str, Any]) -> Path | None:
    """The database file of a SQL catalog on SQLite (``uri = "sqlite:///..."``), else None."""
    uri = str(properties.get("uri", ""))
    if not uri.startswith("sqlite"):
        return None
    try:
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
    except Exception:  # noqa: BLE001 - not a URL we can follow: no file to watch
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class CatalogHandle:
    """A catalog loaded from its properties, reopened when it goes stale.

    A SQLite catalog keeps its database file open: once the file is deleted and restored
    (or replaced by a rename), the open connection goes on reading the old, deleted inode
    and never sees another commit. So before each use the handle compares the file's
    (device, inode) with the one it opened and reopens the catalog when they differ; it
    also reopens after a failed read (:meth:`invalidate`), whatever the catalog's type.

    Args:
        name: the catalog's name.
        properties: passed to ``pyiceberg.catalog.load_catalog``.

    Raises:
        ConfigurationError: the catalog cannot be loaded.
    """

    def __init__(self, name: str, properties: dict[str, Any]) -> None:
        self.name = name
        self.properties = dict(properties)
        self.path = sqlite_file(self.properties)
        self._catalog = open_catalog(name, self.properties)
        self._identity = _file_identity(self.path) if self.path else None  # once it exists
        self._stale = False

    def get(self) -> Catalog:
        """The catalog, reopened first if its file changed or the last read failed.

        Raises:
            FeedkitError: the catalog's file is missing, or the catalog cannot be reopened
                (the message names the catalog and its file).
        """
        if self.path is not None:
            identity = _file_identity(self.path)
            if identity is None:
                # Not reopened: opening a missing file makes SQLite create an empty one.
                self._stale = True
                raise FeedkitError(f"cannot read catalog {self.name!r}: its database file "
                                   f"{self.path} is missing (deleted, or being restored)")
            if identity != self._identity:
                self._stale = True
        else:
            identity = None
        if self._stale:
            properties = dict(self.properties)
            if self.path is not None:
                # A reopen never writes a new catalog into a file that is being restored.
                properties.setdefault("init_catalog_tables", "false")
            try:
                catalog = open_catalog(self.name, properties)
            except ConfigurationError as exc:
                raise FeedkitError(f"cannot read catalog {self.name!r}"
                                   f"{f' ({self.path})' if self.path else ''}: {exc}") from exc
            old, self._catalog = self._catalog, catalog
            self._identity, self._stale = identity, False
            engine = getattr(old, "engine", None)  # SqlCatalog: close the old file's handles
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.dispose()
            log.info("event=catalog_reopened catalog=%s path=%s", self.name, self.path)
        return self._catalog

    def invalidate(self) -> None:
        """A read failed: reopen the catalog before the next use."""
        self._stale = True


@dataclass(frozen=True)
class TablePosition:
    """Where an Iceberg table stands."""

    snapshot_id: int | None
    schema_id: int

    @classmethod
    def from_source(cls, source: dict[str, Any] | None) -> TablePosition | None:
        """The position a manifest's ``source`` records (None if it records none)."""
        if not source or "schema_id" not in source:
            return None
        return cls(source.get("snapshot_id"), int(source["schema_id"]))


@dataclass(frozen=True)
class ReadPlan:
    """What a cycle reads: ``"none"``, ``"append"`` (rows added since ``since``),
    ``"files"`` (the data files ``change`` names, as upserts and deletes) or ``"full"``;
    ``reason`` says why, for the log and the metrics."""

    kind: str
    reason: str
    position: TablePosition
    since: TablePosition | None = None
    change: FileChange | None = None  # a "files" plan's
    live: LiveFiles | None = None  # the files at ``position``, when the plan listed them
    cause: str = ""  # a full read's, a short code: FULL_READ_CAUSES

    @classmethod
    def full(cls, cause: str, reason: str, position: TablePosition,
             since: TablePosition | None = None, *, live: LiveFiles | None = None) -> ReadPlan:
        """A full read, for ``cause`` (one of :data:`FULL_READ_CAUSES`)."""
        assert cause in FULL_READ_CAUSES, cause
        return cls("full", reason, position, since, live=live, cause=cause)


# Why a cycle read the whole table (``ReadPlan.cause``; the daemon counts them by cause)
FULL_READ_CAUSES = {
    "first": "no version published from this table yet",
    "schema": "the table's schema changed",
    "no_snapshot": "the published or the current position has no snapshot",
    "no_key": "no key to diff files by, or a key column missing from the table",
    "expired": "the published snapshot was expired before its files were listed",
    "delete_files": "delete files the file diff cannot follow (equality deletes on other "
                    "columns than the key, an equality-delete file that went away)",
    "costlier": "the changed files hold more rows than the table",
    "columns": "the rows read do not have the feed's columns",
}


@dataclass
class ChangeReaders:
    """A ``files`` plan's rows: the upserts (the feed's columns) and the deleted keys."""

    upserts: pa.RecordBatchReader
    deletes: pa.RecordBatchReader


class IcebergSource:
    """One feed's table in a catalog, with its optional column projection.

    Args:
        catalog: a loaded pyiceberg catalog, or a :class:`CatalogHandle` (reopened when it
            goes stale).
        table: the table identifier, ``"namespace.table"``.
        feed: the feed's name (for messages).
        columns: the columns to read, in this order; None reads every column.
        key: the feed's primary key columns; None plans no ``files`` reads (every change
            but an append is a full read).
    """

    _KNOWN = 4  # live file lists kept, by (table uuid, snapshot id)

    def __init__(self, catalog: Catalog | CatalogHandle, table: str, *, feed: str,
                 columns: list[str] | None = None, key: tuple[str, ...] | None = None) -> None:
        self._handle = catalog if isinstance(catalog, CatalogHandle) else None
        self._catalog = catalog if not isinstance(catalog, CatalogHandle) else None
        self.table_name = table
        self.feed = feed
        self.columns = list(columns) if columns else None
        self.key = tuple(key) if key else None
        # The files of snapshots planned from: a published snapshot expired since is
        # still known here (a process's lifetime; a restart plans it from the metadata).
        self._known: LRUCache[tuple[str, int], LiveFiles] = LRUCache(maxsize=self._KNOWN)
        self._manifests = ManifestCache()

    @property
    def catalog(self) -> Catalog:
        """The catalog (a handle's current one).

        Raises:
            FeedkitError: a handle's catalog cannot be read (see :meth:`CatalogHandle.get`).
        """
        if self._handle is not None:
            return self._handle.get()
        assert self._catalog is not None
        return self._catalog

    def load(self) -> Table:
        """The table at its current metadata.

        Raises:
            ConfigurationError: no such table.
            FeedkitError: the catalog failed (a handle reopens it at the next load).
        """
        try:
            catalog = self.catalog
        except FeedkitError as exc:
            raise FeedkitError(f"feed {self.feed!r}: {exc}") from exc
        try:
            return catalog.load_table(self.table_name)
        except NoSuchTableError as exc:
            raise ConfigurationError(f"feed {self.feed!r}: no table {self.table_name!r} in "
                                     f"catalog {catalog.name!r}") from exc
        except Exception as exc:
            if self._handle is not None:
                self._handle.invalidate()
            raise FeedkitError(f"feed {self.feed!r}: cannot load table {self.table_name!r} "
                               f"from catalog {catalog.name!r}: {exc}") from exc

    @staticmethod
    def position(table: Table) -> TablePosition:
        snapshot = table.current_snapshot()
        return TablePosition(snapshot.snapshot_id if snapshot else None,
                             table.metadata.current_schema_id)

    def source(self, table: Table, position: TablePosition) -> dict[str, Any]:
        """What a manifest records about where its version comes from."""
        return {"kind": "iceberg", "table": self.table_name, "snapshot_id": position.snapshot_id,
                "schema_id": position.schema_id, "metadata_location": table.metadata_location}

    def plan(self, table: Table, since: TablePosition | None) -> ReadPlan:
        """Decide what the next cycle reads, given the position last published.

        Raises:
            FeedkitError: the table's current manifests cannot be read.
        """
        now = self.position(table)
        if since == now:
            return ReadPlan("none", "no new snapshot", now, since)
        # The files of the snapshot read now: the next plan diffs against them, even once
        # the snapshot is expired.
        new = self._live(table, now.snapshot_id) if self.key and now.snapshot_id else None
        if since is None:
            return ReadPlan.full("first", "no version published from this table yet", now,
                                 live=new)
        if since.schema_id != now.schema_id:
            return ReadPlan.full("schema", f"schema {since.schema_id} -> {now.schema_id}", now,
                                 since, live=new)
        if since.snapshot_id is None or now.snapshot_id is None:
            return ReadPlan.full("no_snapshot", "the table had no snapshot", now, since,
                                 live=new)
        meta = table.metadata
        ops: list[str] = []
        if is_parent_ancestor_of(now.snapshot_id, since.snapshot_id, meta):
            snaps = list(ancestors_between_ids(since.snapshot_id, now.snapshot_id, meta))[::-1]
            ops = [s.summary.operation.value if s.summary else "unknown" for s in snaps]
            if all(op == Operation.APPEND.value for op in ops):
                return ReadPlan("append", "append-only snapshots", now, since, live=new)
            if all(op == Operation.REPLACE.value for op in ops) and _live_rows(
                    table, since.snapshot_id) == _live_rows(table, now.snapshot_id) is not None:
                return ReadPlan("none", f"{len(ops)} replace snapshot(s) (compaction): the "
                                        "same rows in other files", now, since)
        how = (", ".join(dict.fromkeys(ops)) if ops else
               f"snapshot {since.snapshot_id} is not an ancestor of {now.snapshot_id}")
        if self.key is None:
            return ReadPlan.full("no_key", f"{how} (no key: no file diff)", now, since)
        old = self._live(table, since.snapshot_id)
        if old is None:
            return ReadPlan.full("expired", f"the published snapshot {since.snapshot_id} is no "
                                 "longer in the table's metadata (expired) and its files are "
                                 "not known", now, since, live=new)
        if new is None:
            raise FeedkitError(f"feed {self.feed!r}: cannot list the files of snapshot "
                               f"{now.snapshot_id} of table {self.table_name!r}")
        try:
            key_ids = frozenset(table.schema().find_field(c).field_id for c in self.key)
        except ValueError:
            return ReadPlan.full("no_key", f"a key column of {self.key} is not in the table",
                                 now, since, live=new)
        change = file_change(old, new, key_ids)
        if change.problem:
            return ReadPlan.full("delete_files", change.problem, now, since, live=new)
        if change.records > new.records:
            return ReadPlan.full("costlier", f"{how}: the changed files hold {change.records} "
                                 f"rows, more than the table's {new.records}", now, since,
                                 live=new)
        return ReadPlan("files", f"{how}: {len(change.added)} data file(s) added, "
                                 f"{len(change.removed)} removed, {len(change.equality)} "
                                 f"key equality-delete file(s)", now, since, change, new)

    def _live(self, table: Table, snapshot_id: int) -> LiveFiles | None:
        """The live files of a snapshot: known, or listed from its manifests (None when the
        snapshot is gone from the metadata or its manifests cannot be read)."""
        known = (str(table.metadata.table_uuid), snapshot_id)
        live = self._known.get(known)
        if live is None:
            snapshot = table.snapshot_by_id(snapshot_id)
            if snapshot is None:
                return None
            try:
                live = live_files(table, snapshot, self._manifests)
            except (OSError, ValueError) as exc:
                log.warning("event=files_unknown feed=%s snapshot=%s reason=%r", self.feed,
                            snapshot_id, str(exc))
                return None
            self._known[known] = live
        return live

    def _fields(self, table: Table) -> tuple[str, ...]:
        if self.columns is None:
            return ("*",)
        present = {f.name for f in table.schema().fields}
        for name in self.columns:
            if name not in present:
                raise ValidationError(f"feed {self.feed!r}: column {name!r} is not in table "
                                      f"{self.table_name!r} (columns: {', '.join(sorted(present))})")
        return tuple(self.columns)

    def read_change(self, table: Table, plan: ReadPlan) -> ChangeReaders:
        """A ``files`` plan's upserts (the rows of the added data files, in the projected
        schema) and deleted keys (the key columns of the removed files' rows and of the
        key equality-delete files).

        Raises:
            ValidationError: a configured column is not in the table.
            FeedkitError: a file cannot be read.
        """
        assert plan.change is not None and plan.live is not None and self.key is not None
        fields = self._fields(table)
        columns = None if fields == ("*",) else list(fields)
        key = list(self.key)
        old = self._live(table, plan.since.snapshot_id) if plan.since else None  # type: ignore[arg-type]
        if old is None:  # listed by plan() a moment ago
            raise FeedkitError(f"feed {self.feed!r}: the files of snapshot "
                               f"{plan.since and plan.since.snapshot_id} are no longer known")
        try:
            schema = table.schema()
            upsert_schema = schema_to_pyarrow(schema if columns is None else schema.select(*columns),
                                              include_field_ids=False)
            key_schema = schema_to_pyarrow(schema.select(*key), include_field_ids=False)
            upserts = pa.RecordBatchReader.from_batches(upsert_schema, self._guarded(
                read_units(table, plan.live, plan.change.added, columns), upsert_schema))
            eq = equality_keys(table, plan.change, key)
            gone = self._guarded(read_units(table, old, plan.change.removed, key), key_schema)
            deletes = pa.RecordBatchReader.from_batches(key_schema, _chained(
                gone, eq.cast(key_schema).to_batches() if eq is not None else []))
        except (OSError, ValueError) as exc:
            raise FeedkitError(f"feed {self.feed!r}: cannot read table {self.table_name!r}: "
                               f"{exc}") from exc
        if self.columns is not None:
            upserts = _reordered(upserts, self.columns)
        return ChangeReaders(upserts, deletes)

    def _guarded(self, batches: Iterator[pa.RecordBatch],
                 schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """``batches`` cast to ``schema`` (pyiceberg may give large types), their read
        errors as FeedkitError."""
        try:
            for batch in batches:
                yield batch.cast(schema)
        except (OSError, ValueError) as exc:
            raise FeedkitError(f"feed {self.feed!r}: cannot read table {self.table_name!r}: "
                               f"{exc}") from exc

    def read(self, table: Table, plan: ReadPlan) -> pa.RecordBatchReader:
        """The rows ``plan`` asks for (``append`` or ``full``), as a stream of batches in
        the projected schema.

        Raises:
            ValidationError: a configured column is not in the table.
            FeedkitError: the read failed.
        """
        fields = self._fields(table)
        try:
            if plan.kind == "full" and plan.live is not None and plan.live.equality:
                # pyiceberg's scan refuses equality deletes: the listed files, read here
                schema = table.schema()
                columns = None if fields == ("*",) else list(fields)
                arrow = schema_to_pyarrow(schema if columns is None else schema.select(*columns),
                                          include_field_ids=False)
                reader = pa.RecordBatchReader.from_batches(arrow, self._guarded(read_units(
                    table, plan.live, list(plan.live.units.values()), columns), arrow))
            elif plan.kind == "append":
                assert plan.since is not None
                scan = table.incremental_append_scan(
                    from_snapshot_id_exclusive=plan.since.snapshot_id,
                    to_snapshot_id_inclusive=plan.position.snapshot_id,
                    selected_fields=fields)
                reader = scan.to_arrow_batch_reader()
            else:
                # Not pinned to plan.position.snapshot_id (the same snapshot: ``table`` is
                # the metadata the plan was made from): a pinned scan reads in that
                # snapshot's schema, and a schema-only change (added or renamed column, no
                # new snapshot) must show in the rows.
                reader = table.scan(selected_fields=fields).to_arrow_batch_reader()
        except (OSError, ValueError) as exc:
            raise FeedkitError(f"feed {self.feed!r}: cannot read table {self.table_name!r}: "
                               f"{exc}") from exc
        if self.columns is not None:
            reader = _reordered(reader, self.columns)
        return reader

    @staticmethod
    def local_metadata_dir(table: Table) -> Path | None:
        """The table's metadata folder when the warehouse is a local folder, else None."""
        url = urlparse(table.metadata_location)
        if url.scheme not in ("", "file"):
            return None
        path = Path(unquote(url.path)).parent
        return path if os.path.isdir(path) else None


def _live_rows(table: Table, snapshot_id: int) -> int | None:
    """A snapshot's rows less its position deletes, from its summary (None: not known)."""
    snapshot = table.snapshot_by_id(snapshot_id)
    summary = snapshot.summary if snapshot else None
    if summary is None:
        return None
    try:
        if int(summary["total-equality-deletes"] or 0):
            return None
        return int(summary["total-records"]) - int(summary["total-position-deletes"] or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a summary without totals
        return None


def _chained(*parts: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for part in parts:
        yield from part


def _reordered(reader: pa.RecordBatchReader, columns: list[str]) -> pa.RecordBatchReader:
    """Batches with their columns in the configured order (the feed's field order)."""
    if reader.schema.names == columns:
        return reader
    schema = pa.schema([reader.schema.field(c) for c in columns])
    return pa.RecordBatchReader.from_batches(
        schema, (b.select(columns) for b in reader))
