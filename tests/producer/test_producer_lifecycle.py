"""A Producer's own folder and its arguments: the temporary work dir goes with the producer
(closed, left by a ``with`` block or garbage-collected), leftovers in a given work dir are
removed but nothing else is, and bad arguments or tables are FeedkitErrors that say what
is wrong."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import feedkit
from feedkit.producer import Producer

from ..conftest import titles_table

FEED = "life.titles"


def store_files(store_dir: Path) -> list[str]:
    if not store_dir.exists():
        return []
    return sorted(str(p.relative_to(store_dir)) for p in store_dir.rglob("*") if p.is_file())


# -- the temporary work dir ------------------------------------------------------------------


def test_close_removes_the_temporary_work_dir(store: feedkit.BlobStore) -> None:
    p = Producer(store, feed=FEED, primary_key="movie_id")
    assert p.publish(titles_table(50)) is not None
    work = p.work_dir
    assert any(work.iterdir())
    p.close()
    assert not work.exists()
    p.close()  # idempotent
    with pytest.raises(feedkit.ClosedError, match=FEED):
        p.publish(titles_table(50))


def test_a_collected_producer_removes_its_temporary_work_dir(store: feedkit.BlobStore) -> None:
    p = Producer(store, feed=FEED, primary_key="movie_id")
    assert p.publish(titles_table(50)) is not None
    work = p.work_dir
    assert work.exists()
    del p
    gc.collect()
    assert not work.exists()


def test_producer_is_a_context_manager(store: feedkit.BlobStore, tmp_path: Path) -> None:
    with Producer(store, feed=FEED, primary_key="movie_id") as p:
        version = p.publish(titles_table(500))
        work = p.work_dir
    assert version is not None and not work.exists()
    with pytest.raises(feedkit.ClosedError):
        p.publish(titles_table(510))
    with pytest.raises(feedkit.ClosedError), p:
        pass
    # A given work dir is the user's: it keeps the last state for the next producer.
    with Producer(store, feed=FEED, primary_key="movie_id", work_dir=tmp_path / "w") as p:
        v2 = p.publish(titles_table(510))
    # (v2 is a small change: an overlay over the base of the version it restored)
    assert sorted(f.name for f in (tmp_path / "w").iterdir()) == [
        f"{version:020d}.state", f"{v2:020d}.overlay"]


def test_restore_removes_leftovers_but_not_other_files(store: feedkit.BlobStore,
                                                       tmp_path: Path) -> None:
    work = tmp_path / "work"
    with Producer(store, feed=FEED, primary_key="movie_id", work_dir=work) as p:
        v1 = p.publish(titles_table(50))
    # The user's own files in the work dir, and names a producer never writes.
    (work / "notes.txt").write_text("mine")
    (work / "keep.state").write_text("not a version's state")
    (work / "sub").mkdir()
    with Producer(store, feed=FEED, primary_key="movie_id", work_dir=work) as p:
        assert p.restore().version == v1  # type: ignore[union-attr]
    assert sorted(f.name for f in work.iterdir()) == sorted(
        [f"{v1:020d}.state", "notes.txt", "keep.state", "sub"])


# -- arguments checked at construction -------------------------------------------------------


@pytest.mark.parametrize("key", [None, 5, "", ()])
def test_a_missing_or_unusable_primary_key(store: feedkit.BlobStore, key: Any) -> None:
    with pytest.raises(feedkit.ConfigurationError) as info:
        Producer(store, feed=FEED, primary_key=key)
    assert FEED in str(info.value) and "primary_key" in str(info.value)


@pytest.mark.parametrize("level", [23, 1000, -(1 << 17) - 1, 2.5, "3", None])
def test_compression_level_outside_zstds_range(store: feedkit.BlobStore, tmp_path: Path,
                                               level: Any) -> None:
    with pytest.raises(feedkit.ConfigurationError) as info:
        Producer(store, feed=FEED, primary_key="movie_id", compression_level=level,
                 work_dir=tmp_path / "work")
    message = str(info.value)
    assert FEED in message and "compression_level" in message and "-131072..22" in message
    assert not (tmp_path / "work").exists()  # refused before anything was made


@pytest.mark.parametrize("level", [-(1 << 17), -7, 0, 22])
def test_zstds_negative_and_extreme_levels_publish(store: feedkit.BlobStore, tmp_path: Path,
                                                   level: int) -> None:
    with Producer(store, feed=FEED, primary_key="movie_id", compression_level=level) as p:
        version = p.publish(titles_table(200))
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.version == version and feed.get(150).title == "title 150"


def test_negative_thresholds_name_the_feed(store: feedkit.BlobStore) -> None:
    with pytest.raises(feedkit.ConfigurationError, match=f"{FEED}.*max_change_ratio"):
        Producer(store, feed=FEED, primary_key="movie_id", max_change_ratio=-1)
    with pytest.raises(feedkit.ConfigurationError, match=f"{FEED}.*min_records"):
        Producer(store, feed=FEED, primary_key="movie_id", min_records=-1)


# -- tables that cannot be published ---------------------------------------------------------


@pytest.mark.parametrize("names, twice", [
    (["movie_id", "title", "title"], "title"),
    (["movie_id", "movie_id", "title"], "movie_id"),  # the key column itself
])
def test_duplicate_column_names(store: feedkit.BlobStore, tmp_path: Path, names: list[str],
                                twice: str) -> None:
    data = pa.table([pa.array([1, 2], pa.int64()), pa.array([3, 4], pa.int64()),
                     pa.array(["a", "b"])], names=names)
    with Producer(store, feed=FEED, primary_key="movie_id") as p:
        with pytest.raises(feedkit.ValidationError) as info:
            p.publish(data)
        assert f"feed {FEED!r}" in str(info.value) and f"column {twice!r}" in str(info.value)
        assert "appears 2 times" in str(info.value)
        assert p.metrics()["refusals"] == {"table": 1}
    assert store_files(tmp_path / "store") == []  # nothing written
