"""The local store's writes: a failed write (a full disk, for real: a small tmpfs, root
only) leaves no temporary file and no object, and the store folder is created by the
first write, never by opening the store or reading it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import feedkit
from feedkit.store.local import LocalStore
from tests.tmpfs import fill, mounted_tmpfs


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at ``tmp_path / "fs"``."""
    with mounted_tmpfs(tmp_path / "fs", "1m") as mount:
        yield mount


def test_a_write_that_finds_the_disk_full_leaves_no_temporary_file(small_fs: Path,
                                                                    tmp_path: Path) -> None:
    store = feedkit.open_store(small_fs / "store")
    big = tmp_path / "big.zst"
    big.write_bytes(os.urandom(2 << 20))  # twice the file system
    key = "titles/snapshots/00000000000000000001.snapshot.zst"
    with pytest.raises(feedkit.StoreError, match=f"{key}.*No space left"):
        store.put_new(key, big)
    with pytest.raises(feedkit.StoreError, match="No space left"):
        store.put_new_bytes("titles/versions/00000000000000000001.json", big.read_bytes())
    assert tree(small_fs / "store") == {"titles", "titles/snapshots", "titles/versions"}
    assert not store.exists(key)

    # The announcement: the old one stays whole, and no temporary is left beside it.
    announcement = "titles/announced.json"
    etag = store.replace_if_match(announcement, b'{"feed": "titles", "version": 1}', None)
    ballast = fill(small_fs)
    with pytest.raises(feedkit.StoreError, match=f"{announcement}.*No space left"):
        store.replace_if_match(announcement, b"x" * 65536, etag)
    assert store.get_bytes(announcement) == b'{"feed": "titles", "version": 1}'
    assert not [p for p in (small_fs / "store").rglob("*.tmp")]
    ballast.unlink()
    store.replace_if_match(announcement, b'{"feed": "titles", "version": 2}', etag)
    store.put_new_bytes("titles/versions/00000000000000000002.json", b"{}")  # room again
    assert not [p for p in (small_fs / "store").rglob("*.tmp")]


def test_opening_or_reading_a_store_never_creates_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "no" / "such" / "store"
    for url in (str(root), f"file://{root}"):
        store = feedkit.open_store(url)
        assert isinstance(store, LocalStore)
        assert not store.exists("titles/announced.json")
        assert store.list("titles/versions/") == [] and store.list("") == []
        assert store.temporaries("titles/versions/") == []
        with pytest.raises(feedkit.BlobNotFoundError):
            store.read_if_changed("titles/announced.json")
        with pytest.raises(feedkit.BlobNotFoundError):
            store.get_bytes("titles/versions/00000000000000000001.json")
        with pytest.raises(feedkit.BlobNotFoundError):
            store.download("titles/snapshots/x", tmp_path / "dest")
        store.delete("titles/versions/00000000000000000001.json")
        store.close()
        assert not (tmp_path / "no").exists()
    # The first write creates it.
    store = feedkit.open_store(root)
    store.replace_if_match("titles/announced.json", b"{}", None)
    assert (root / "titles" / "announced.json").read_bytes() == b"{}"


def test_a_store_folder_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    store = feedkit.open_store(tmp_path / "file")
    with pytest.raises(feedkit.StoreError, match="file"):
        store.put_new_bytes("titles/versions/00000000000000000001.json", b"{}")
    with pytest.raises(feedkit.StoreError):
        store.read_if_changed("titles/announced.json")
