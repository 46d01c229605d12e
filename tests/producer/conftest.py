"""Iceberg fixtures: a real pyiceberg SqlCatalog on SQLite with a local warehouse folder."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table


def catalog_properties(root: Path) -> dict[str, str]:
    """The properties of the test catalog under ``root`` (as in a [catalog] config table)."""
    return {"type": "sql", "uri": f"sqlite:///{root}/catalog.db",
            "warehouse": f"file://{root}/warehouse"}


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    """An empty catalog with the namespace ``muse``."""
    props = catalog_properties(tmp_path)
    (tmp_path / "warehouse").mkdir()
    cat = SqlCatalog("local", **{k: v for k, v in props.items() if k != "type"})
    cat.create_namespace("muse")
    return cat


def create_table(cat: SqlCatalog, name: str, data: pa.Table) -> Table:
    """Create ``name`` with ``data``'s schema and append ``data`` (one append snapshot)."""
    table = cat.create_table(name, schema=data.schema)
    table.append(data)
    return table


def append_rows(table: Table, data: pa.Table) -> None:
    """Append ``data`` cast to the table's current schema."""
    table.refresh()
    table.append(data.cast(table.schema().as_arrow()))
