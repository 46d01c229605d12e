"""Reading a feed's Iceberg table: where it stands, what changed, and the rows to read.

A feed version records the table position it was built from (snapshot id, schema
id) as its manifest's ``source``. The next cycle compares the table's current
position with it:

- same snapshot and schema           -> nothing to read
- only ``append`` snapshots since     -> read only the data files they added
- anything else (overwrite, delete, replace, a schema change, a rollback to a
  snapshot that does not descend from the published one) -> read the whole table
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, ancestors_between_ids, is_parent_ancestor_of

from feedkit.errors import ConfigurationError, FeedkitError, ValidationError

__all__ = ["CatalogHandle", "IcebergSource", "ReadPlan", "TablePosition", "open_catalog"]

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
    """What a cycle reads: ``"none"``, ``"append"`` (rows added since ``since``) or ``"full"``."""

    kind: str
    reason: str
    position: TablePosition
    since: TablePosition | None = None


class IcebergSource:
    """One feed's table in a catalog, with its optional column projection.

    Args:
        catalog: a loaded pyiceberg catalog, or a :class:`CatalogHandle` (reopened when it
            goes stale).
        table: the table identifier, ``"namespace.table"``.
        feed: the feed's name (for messages).
        columns: the columns to read, in this order; None reads every column.
    """

    def __init__(self, catalog: Catalog | CatalogHandle, table: str, *, feed: str,
                 columns: list[str] | None = None) -> None:
        self._handle = catalog if isinstance(catalog, CatalogHandle) else None
        self._catalog = catalog if not isinstance(catalog, CatalogHandle) else None
        self.table_name = table
        self.feed = feed
        self.columns = list(columns) if columns else None

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
        """Decide what the next cycle reads, given the position last published."""
        now = self.position(table)
        if since is None:
            return ReadPlan("full", "no version published from this table yet", now)
        if since == now:
            return ReadPlan("none", "no new snapshot", now, since)
        if since.schema_id != now.schema_id:
            return ReadPlan("full", f"schema {since.schema_id} -> {now.schema_id}", now, since)
        if since.snapshot_id is None or now.snapshot_id is None:
            return ReadPlan("full", "the table had no snapshot", now, since)
        meta = table.metadata
        if not is_parent_ancestor_of(now.snapshot_id, since.snapshot_id, meta):
            return ReadPlan("full", f"snapshot {since.snapshot_id} is not an ancestor of "
                                    f"{now.snapshot_id}", now, since)
        for snap in ancestors_between_ids(since.snapshot_id, now.snapshot_id, meta):
            op = snap.summary.operation if snap.summary else None
            if op != Operation.APPEND:
                name = op.value if op else "unknown"
                return ReadPlan("full", f"snapshot {snap.snapshot_id} is {name}", now, since)
        return ReadPlan("append", "append-only snapshots", now, since)

    def _fields(self, table: Table) -> tuple[str, ...]:
        if self.columns is None:
            return ("*",)
        present = {f.name for f in table.schema().fields}
        for name in self.columns:
            if name not in present:
                raise ValidationError(f"feed {self.feed!r}: column {name!r} is not in table "
                                      f"{self.table_name!r} (columns: {', '.join(sorted(present))})")
        return tuple(self.columns)

    def read(self, table: Table, plan: ReadPlan) -> pa.RecordBatchReader:
        """The rows ``plan`` asks for, as a stream of batches in the projected schema.

        Raises:
            ValidationError: a configured column is not in the table.
            FeedkitError: the read failed.
        """
        fields = self._fields(table)
        try:
            if plan.kind == "append":
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


def _reordered(reader: pa.RecordBatchReader, columns: list[str]) -> pa.RecordBatchReader:
    """Batches with their columns in the configured order (the feed's field order)."""
    if reader.schema.names == columns:
        return reader
    schema = pa.schema([reader.schema.field(c) for c in columns])
    return pa.RecordBatchReader.from_batches(
        schema, (b.select(columns) for b in reader))
