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

__all__ = ["IcebergSource", "ReadPlan", "TablePosition", "open_catalog"]


def open_catalog(name: str, properties: dict[str, Any]) -> Catalog:
    """``pyiceberg.catalog.load_catalog(name, **properties)``, errors translated.

    Raises:
        ConfigurationError: the catalog cannot be loaded with these properties.
    """
    try:
        return load_catalog(name, **{k: str(v) for k, v in properties.items()})
    except Exception as exc:  # pyiceberg raises ValueError, ImportError, SQLAlchemy errors...
        raise ConfigurationError(f"catalog {name!r}: cannot load it: {exc}") from exc


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
        catalog: a loaded pyiceberg catalog.
        table: the table identifier, ``"namespace.table"``.
        feed: the feed's name (for messages).
        columns: the columns to read, in this order; None reads every column.
    """

    def __init__(self, catalog: Catalog, table: str, *, feed: str,
                 columns: list[str] | None = None) -> None:
        self.catalog = catalog
        self.table_name = table
        self.feed = feed
        self.columns = list(columns) if columns else None

    def load(self) -> Table:
        """The table at its current metadata.

        Raises:
            ConfigurationError: no such table.
            FeedkitError: the catalog failed.
        """
        try:
            return self.catalog.load_table(self.table_name)
        except NoSuchTableError as exc:
            raise ConfigurationError(f"feed {self.feed!r}: no table {self.table_name!r} in "
                                     f"catalog {self.catalog.name!r}") from exc
        except Exception as exc:
            raise FeedkitError(f"feed {self.feed!r}: cannot load table {self.table_name!r}: "
                               f"{exc}") from exc

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
