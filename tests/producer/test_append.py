"""Producer.append keeps its state as [overlay, base]: appends cost the change, not the feed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import feedkit
from feedkit import names
from feedkit.manifest import Manifest

from ..conftest import titles_table, truth


def work_files(work: Path) -> list[str]:
    return sorted(p.suffix for p in work.iterdir() if p.suffix in (".state", ".overlay"))


def manifest(store: feedkit.BlobStore, feed: str, version: int) -> Manifest:
    key = names.manifest_key(feed, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def served(feed: feedkit.Consumer) -> dict:
    return {k: r._asdict() for k, r in feed.items()}


def test_appends_overlay_then_full_cycle_and_snapshot_compact(store, tmp_path: Path) -> None:
    work = tmp_path / "work"
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work,
                                snapshot_every=4, indexes=["country"])
    table = titles_table(2000)
    producer.publish(table)
    assert work_files(work) == [".state"]
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        for i in range(2):  # appends: the base stays, an overlay holds the new records
            rows = titles_table(50, start=10_000 + 100 * i, seed=i)
            version = producer.append(rows)
            table = pa.concat_tables([table, rows])
            assert work_files(work) == [".overlay", ".state"]
            m = manifest(store, "titles", version)
            assert m.delta is not None and m.snapshot is None and m.record_count == len(table)
            assert feed.refresh() and served(feed) == truth(table, "movie_id")
            assert sorted(r.movie_id for r in feed.find("country", "DE")) == sorted(
                r["movie_id"] for r in table.to_pylist() if r["country"] == "DE")

        # An appended key that the overlay holds is a duplicate too.
        with pytest.raises(feedkit.ValidationError, match="already"):
            producer.append(titles_table(1, start=10_100))

        # A full cycle diffs against base and overlay: changes and deletions in both ...
        changed = table.set_column(1, "title", pa.array(
            [t + "!" if i % 10 == 0 else t for i, t in enumerate(table["title"].to_pylist())]))
        gone = {3, 11, 10_001, 10_103}  # two in the base, two in the overlay
        changed = changed.filter(pa.array([k not in gone for k in changed["movie_id"].to_pylist()]))
        version = producer.publish(changed)
        report = producer.last_report
        assert report.removed == 4 and report.added == 0
        assert report.changed == sum(1 for i, k in enumerate(table["movie_id"].to_pylist())
                                     if i % 10 == 0 and k not in gone)
        # ... and, like an append, leaves the delta merged into a new overlay over the base.
        assert work_files(work) == [".overlay", ".state"]
        assert feed.refresh() and served(feed) == truth(changed, "movie_id")

        # The fourth version since the snapshot is due: the overlay is merged, a snapshot written.
        rows = titles_table(30, start=20_000)
        version = producer.append(rows)
        m = manifest(store, "titles", version)
        assert m.snapshot is not None and m.delta is not None
        assert work_files(work) == [".state"]
        expected = pa.concat_tables([changed, rows])
        assert feed.refresh() and served(feed) == truth(expected, "movie_id")
    producer.close()

    # A fresh consumer starting from that snapshot sees the same.
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache2",
                          watch=False) as fresh:
        assert served(fresh) == truth(expected, "movie_id")


def test_restart_restores_base_and_overlay_from_the_work_dir(store, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work) as first:
        first.publish(titles_table(500))
        first.append(titles_table(20, start=5000))
    assert work_files(work) == [".overlay", ".state"]
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work) as again:
        m = again.restore()
        assert again._restored_from == "work_dir" and m.record_count == 520
        version = again.append(titles_table(5, start=6000))
        assert manifest(store, "titles", version).record_count == 525
        with pytest.raises(feedkit.ValidationError, match="already"):
            again.append(titles_table(1, start=5000))  # in the restored overlay
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        assert len(feed) == 525 and feed.get(6004).title == "title 6004"


def test_a_refused_append_leaves_the_state_as_it_was(store, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work,
                          max_change_ratio=0.05) as producer:
        producer.publish(titles_table(1000))
        producer.append(titles_table(10, start=5000))
        before = sorted(p.name for p in work.iterdir())
        with pytest.raises(feedkit.RefusedError, match="max_change_ratio"):
            producer.append(titles_table(100, start=7000))
        assert sorted(p.name for p in work.iterdir()) == before
        version = producer.append(titles_table(10, start=8000))
        assert manifest(store, "titles", version).record_count == 1020
