"""A whole-table publish that changes a little keeps its state as [overlay, base], as an
append does: the cycle writes the change, not the feed. Consumers see the same versions."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import feedkit
from feedkit import names
from feedkit.format import StateFile
from feedkit.manifest import Manifest
from feedkit.producer import CycleSummary, ValidationResult

from ..conftest import titles_table, truth

N = 2000


def state_files(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.suffix in (".state", ".overlay"))


def manifest(store: feedkit.BlobStore, version: int) -> Manifest:
    key = names.manifest_key("titles", version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def rescored(table: pa.Table, every: int, bump: float) -> pa.Table:
    """``table`` with the score of every ``every``-th row moved by ``bump``."""
    score = [s + bump if i % every == 0 else s for i, s in enumerate(table["score"].to_pylist())]
    return table.set_column(table.schema.get_field_index("score"), "score", pa.array(score))


def served(feed: feedkit.Consumer) -> dict:
    return {k: r._asdict() for k, r in feed.items()}


def test_small_republishes_write_overlays_and_the_snapshot_due_one_a_base(
        store: feedkit.BlobStore, tmp_path: Path) -> None:
    work = tmp_path / "work"
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work,
                                snapshot_every=3)
    table = titles_table(N)
    v1 = producer.publish(table)
    assert state_files(work) == [f"{v1:020d}.state"]
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        overlays = []
        for i in (1, 2):  # 1% changed, one key gone, one new: a delta and a new overlay
            table = rescored(table, 100, i)
            table = pa.concat_tables([table.filter(pc.field("movie_id") != 7 * i),
                                      titles_table(1, start=N + i)])
            version = producer.publish(table)
            report = producer.last_report
            assert (report.changed, report.added, report.removed) == (N // 100, 1, 1)
            m = manifest(store, version)
            assert m.delta is not None and m.snapshot is None and m.record_count == N
            # The base stays; the overlay holds every change since it (v2's merged into v3's).
            overlays.append(f"{version:020d}.overlay")
            assert state_files(work) == sorted([f"{v1:020d}.state", overlays[-1]])
            assert StateFile(work / overlays[-1]).count == i * (N // 100 + 2) - (i == 2)
            assert feed.refresh() and served(feed) == truth(table, "movie_id")

        # The third version since the snapshot is due: a new base (from the new records,
        # no overlay left) and a snapshot blob beside the delta.
        table = rescored(table, 100, 3)
        version = producer.publish(table)
        m = manifest(store, version)
        assert m.snapshot is not None and m.delta is not None
        assert state_files(work) == [f"{version:020d}.state"]
        assert feed.refresh() and served(feed) == truth(table, "movie_id")
    producer.close()
    # A consumer starting from the new snapshot sees the same.
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "fresh",
                          watch=False) as fresh:
        assert fresh.version == version and served(fresh) == truth(table, "movie_id")


def test_a_large_change_writes_a_base_at_once(store: feedkit.BlobStore, tmp_path: Path) -> None:
    """Past the compaction ratio (25% of the base) the cycle writes a base from the new
    records rather than an overlay it would compact at once; no snapshot is due yet."""
    work = tmp_path / "work"
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work,
                          max_delta_ratio=10.0) as producer:
        table = titles_table(N)
        producer.publish(table)
        table = rescored(table, 3, 1)  # a third of the records
        version = producer.publish(table)
        m = manifest(store, version)
        assert m.delta is not None and m.snapshot is None
        assert state_files(work) == [f"{version:020d}.state"]
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        assert served(feed) == truth(table, "movie_id")


def test_a_restart_restores_the_overlay_from_the_work_dir(store: feedkit.BlobStore,
                                                         tmp_path: Path) -> None:
    work = tmp_path / "work"
    table = titles_table(N)
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work) as first:
        first.publish(table)
        table = rescored(table, 100, 1)
        v2 = first.publish(table)
    assert f"{v2:020d}.overlay" in state_files(work)
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work) as again:
        m = again.restore()
        assert again._restored_from == "work_dir" and m is not None and m.version == v2
        # Diffs against the restored overlay and base: only what changed since v2.
        table = rescored(table, 50, 1)
        v3 = again.publish(table)
        assert again.last_report.changed == N // 50
        assert state_files(work) == sorted([state_files(work)[0], f"{v3:020d}.overlay"])
        assert again.publish(table) is None  # nothing changed since v3
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        assert feed.version == v3 and served(feed) == truth(table, "movie_id")


def test_validators_see_the_overlay_over_the_base(store: feedkit.BlobStore,
                                                 tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def keeps_five(summary: CycleSummary) -> ValidationResult:
        rec = summary.state.get(0)
        seen.update(count=len(summary.state), score=rec.score if rec else None)
        return ValidationResult(passed=summary.state.get(5) is not None, rule="keeps_five",
                                message="record 5 is gone")

    work = tmp_path / "work"
    table = titles_table(N)
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work,
                          validators=[keeps_five]) as p:
        v1 = p.publish(table)
        before = state_files(work)
        # Refused: nothing announced, the work dir as it was, the next cycle diffs from v1.
        with pytest.raises(feedkit.RefusedError, match="record 5 is gone"):
            p.publish(rescored(table, 100, 50).filter(pc.field("movie_id") != 5))
        assert seen == {"count": N - 1, "score": table["score"][0].as_py() + 50}
        assert state_files(work) == before and p.version == v1
        table = rescored(table, 100, 100)
        version = p.publish(table)
        assert seen == {"count": N, "score": table["score"][0].as_py()}
        assert f"{version:020d}.overlay" in state_files(work)
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        assert feed.version == version and served(feed) == truth(table, "movie_id")


def test_a_duplicate_key_is_refused_with_the_keys_named(store: feedkit.BlobStore,
                                                       tmp_path: Path) -> None:
    work = tmp_path / "work"
    with feedkit.Producer(store, feed="titles", primary_key="movie_id", work_dir=work) as p:
        p.publish(titles_table(N))
        before = state_files(work)
        twice = pa.concat_tables([titles_table(N), titles_table(2, start=10)])
        with pytest.raises(feedkit.ValidationError,
                           match=r"feed 'titles': duplicate keys in column\(s\) movie_id: 2 "
                                 r"duplicate row\(s\); first keys: 10, 11"):
            p.publish(twice)
        assert state_files(work) == before


def test_null_and_duplicate_keys_over_a_last_version_name_the_keys(
        store: feedkit.BlobStore, tmp_path: Path) -> None:
    """A publish over a last version diffs batch by batch: its messages still name the keys."""
    work = tmp_path / "work"
    rows = [{"country": c, "movie_id": i, "title": f"t{i}"} for i in range(300)
            for c in ("DE", "US")]
    table = pa.Table.from_pylist(rows)
    with feedkit.Producer(store, feed="titles", primary_key=("country", "movie_id"),
                          work_dir=work, batch_rows=64) as p:
        p.publish(table)
        before = state_files(work)
        again = pa.concat_tables([table, table.slice(450, 2)])  # two rows repeated
        with pytest.raises(feedkit.ValidationError,
                           match=r"duplicate keys in column\(s\) country, movie_id: 2 duplicate "
                                 r"row\(s\); first keys: \('DE', 225\), \('US', 225\)"):
            p.publish(again)
        nulls = pa.Table.from_pylist([*rows, {"country": None, "movie_id": 7, "title": "x"}],
                                     schema=table.schema)
        with pytest.raises(feedkit.ValidationError,
                           match=r"null in key column\(s\) country, movie_id at 1 row\(s\); "
                                 r"first keys: \[\(None, 7\)\]"):
            p.publish(nulls)
        assert state_files(work) == before
        changed = table.set_column(2, "title", pa.array([f"u{i}" if i % 2 else r["title"]
                                                         for i, r in enumerate(rows)]))
        version = p.publish(changed)
        assert p.last_report.changed == len(rows) // 2
        # Half the records changed: the overlay outgrew the base and was compacted into one.
        assert state_files(work) == [f"{version:020d}.state"]
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        assert feed.version == version
        assert served(feed) == truth(changed, ("country", "movie_id"))
