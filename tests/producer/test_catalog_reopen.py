"""The daemon and a SQLite catalog file that is deleted and restored, replaced, or broken:
it reopens the catalog, publishes the commits made after, and logs when it cannot read it.

A real SqlCatalog on SQLite; the daemon runs ``run()`` on a thread of the test. Commits go
through a fresh catalog each time: an old one would write into the deleted file."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon

from ..conftest import titles_table
from .conftest import append_rows, catalog_properties, create_table
from .test_daemon import TABLE, announced, feed_entry, manifest, write_config


def fresh_catalog(root: Path) -> SqlCatalog:
    props = catalog_properties(root)
    return SqlCatalog("local", **{k: v for k, v in props.items() if k != "type"})


def commit(root: Path, start: int) -> int:
    """Append 5 rows through a fresh catalog; return the new snapshot id."""
    cat = fresh_catalog(root)
    try:
        table = cat.load_table(TABLE)
        append_rows(table, titles_table(5, start=start))
        return cat.load_table(TABLE).current_snapshot().snapshot_id  # type: ignore[union-attr]
    finally:
        cat.engine.dispose()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def published(root: Path, snapshot_id: int) -> bool:
    version = announced(root)
    return version is not None and manifest(root, version).source["snapshot_id"] == snapshot_id


@pytest.fixture
def daemon(tmp_path: Path, catalog: Any) -> Iterator[Daemon]:
    create_table(catalog, TABLE, titles_table(200))
    catalog.engine.dispose()  # the fixture's catalog is not used again
    d = Daemon(load_config(write_config(tmp_path, [feed_entry(poll_interval=0.2)])))
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: announced(tmp_path) is not None, "the first version")
        yield d
    finally:
        d.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_deleted_and_restored_catalog_is_reopened(tmp_path: Path, daemon: Daemon,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "catalog.db"
    shutil.copy(db, tmp_path / "backup.db")
    db.unlink()
    wait_for(lambda: "cannot read catalog 'local'" in caplog.text, "a line about the catalog")
    assert f"{db} is missing" in caplog.text
    assert not db.exists()  # the daemon did not make an empty catalog in its place
    shutil.copy(tmp_path / "backup.db", db)  # restored: a new file, a new inode
    snapshot = commit(tmp_path, 1000)
    wait_for(lambda: published(tmp_path, snapshot), "the commit after the restore")
    assert "event=catalog_reopened" in caplog.text


def test_catalog_replaced_by_one_with_a_new_snapshot(tmp_path: Path, daemon: Daemon) -> None:
    db = tmp_path / "catalog.db"
    # Another copy of the catalog moves on (a commit to it), then replaces the file.
    copy_root = tmp_path / "copy"
    copy_root.mkdir()
    shutil.copy(db, copy_root / "catalog.db")
    cat = SqlCatalog("local", uri=f"sqlite:///{copy_root}/catalog.db",
                     warehouse=f"file://{tmp_path}/warehouse")
    table = cat.load_table(TABLE)
    append_rows(table, titles_table(5, start=2000))
    snapshot = cat.load_table(TABLE).current_snapshot().snapshot_id  # type: ignore[union-attr]
    cat.engine.dispose()
    os.replace(copy_root / "catalog.db", db)
    # The new metadata file woke the daemon before the swap, to find nothing new: a later
    # poll must see the new catalog file.
    wait_for(lambda: published(tmp_path, snapshot), "the replaced catalog's snapshot")


def test_unreadable_catalog_is_logged_then_reopened(tmp_path: Path, daemon: Daemon,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "catalog.db"
    good = tmp_path / "good.db"
    shutil.copy(db, good)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 200)
    os.replace(garbage, db)
    wait_for(lambda: "cannot read catalog 'local'" in caplog.text, "a line about the catalog")
    line = next(r.getMessage() for r in caplog.records
                if "cannot read catalog 'local'" in r.getMessage())
    assert "event=failed" in line and "muse.titles" in line and "not a database" in line
    os.replace(good, db)
    snapshot = commit(tmp_path, 3000)
    wait_for(lambda: published(tmp_path, snapshot), "the commit after the repair")
