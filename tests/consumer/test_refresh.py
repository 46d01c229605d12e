"""Deltas, snapshots, compaction, and refreshes that fail: the last good version keeps serving."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pyarrow as pa
import pytest

import feedkit
from tests.conftest import titles_table, truth


def mutate(table: pa.Table, rng: random.Random, next_id: list[int]) -> pa.Table:
    """Random upserts, deletes and inserts."""
    rows = table.to_pylist()
    rng.shuffle(rows)
    rows = rows[: len(rows) - rng.randint(0, 20)]  # deletes
    for row in rng.sample(rows, min(len(rows), 30)):  # updates
        row["title"] = f"changed {rng.random():.6f}"
        row["country"] = rng.choice(["DE", "US", "JP"])
    for _ in range(rng.randint(0, 20)):  # inserts
        rows.append({"movie_id": next_id[0], "title": "new", "year": 2000, "score": 0.5,
                     "country": "JP"})
        next_id[0] += 1
    return pa.Table.from_pylist(rows, schema=table.schema)


def served(feed: feedkit.Consumer) -> dict:
    return {k: r._asdict() for k, r in feed.items()}


def store_file(tmp_path: Path, pattern: str) -> Path:
    matches = sorted((tmp_path / "store").rglob(pattern))
    assert matches, pattern
    return matches[-1]


@pytest.fixture
def producer(store):
    p = feedkit.Producer(store, feed="titles", primary_key="movie_id", indexes=["country"],
                         snapshot_every=4)
    yield p
    p.close()


def test_delta_chain_and_fresh_consumers_serve_the_truth(store, tmp_path, producer) -> None:
    rng, next_id = random.Random(7), [10_000]
    table = titles_table(2000)
    producer.publish(table)
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c1", watch=False,
                          compact_ratio=10.0) as follower:
        for _ in range(9):
            table = mutate(table, rng, next_id)
            producer.publish(table)
            if rng.random() < 0.5:
                assert follower.refresh() is True
                assert served(follower) == truth(table, "movie_id")
        follower.refresh()
        assert served(follower) == truth(table, "movie_id")
        assert len(follower) == table.num_rows
        assert sorted(r.movie_id for r in follower.find("country", "JP")) == sorted(
            r["movie_id"] for r in table.to_pylist() if r["country"] == "JP")
        with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c2", watch=False) as fresh:
            assert fresh.version == follower.version
            assert served(fresh) == truth(table, "movie_id")


def test_consumer_uses_the_nearest_snapshot(store, tmp_path, producer) -> None:
    table = titles_table(500)
    rng, next_id = random.Random(1), [10_000]
    for _ in range(7):
        table = mutate(table, rng, next_id)
        producer.publish(table)
    # Versions 1 and 5 have snapshots (snapshot_every=4): the deltas before 5 are not needed.
    snapshots = sorted((tmp_path / "store" / "titles" / "snapshots").iterdir())
    assert len(snapshots) == 2
    newest_snapshot = int(snapshots[-1].name[:20])
    for delta in (tmp_path / "store" / "titles" / "deltas").iterdir():
        if int(delta.name[21:41]) <= newest_snapshot:
            delta.unlink()
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        assert served(feed) == truth(table, "movie_id")


def test_compaction_keeps_answers(store, tmp_path, producer) -> None:
    table = titles_table(1000)
    producer.publish(table)
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False,
                          compact_ratio=0.01) as feed:
        table = mutate(table, random.Random(3), [5000])
        producer.publish(table)
        feed.refresh()
        with feed.view() as view:
            assert view.overlay is None, "a large overlay is compacted into a new base"
        assert served(feed) == truth(table, "movie_id")
        assert sorted(r.movie_id for r in feed.find("country", "JP")) == sorted(
            r["movie_id"] for r in table.to_pylist() if r["country"] == "JP")


def corrupt_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"{not json")


@pytest.mark.parametrize("damage", [corrupt_flip, corrupt_truncate, corrupt_garbage])
@pytest.mark.parametrize("target", ["snapshot", "delta", "manifest"])
def test_damaged_blobs_are_refused_and_the_old_version_serves(store, tmp_path, producer,
                                                              target, damage) -> None:
    table = titles_table(800)
    v1 = producer.publish(table)
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        table2 = mutate(table, random.Random(5), [9000])
        if target == "snapshot":
            producer.snapshot_every = 1  # the next version gets a snapshot
        v2 = producer.publish(table2)
        name = {"snapshot": f"{v2:020d}.snapshot.zst", "delta": f"*-{v2:020d}.delta.zst",
                "manifest": f"versions/{v2:020d}.json"}[target]
        victim = store_file(tmp_path, name)
        original = victim.read_bytes()
        damage(victim)
        if target == "snapshot":  # make the consumer need the snapshot: drop the delta
            store_file(tmp_path, f"*-{v2:020d}.delta.zst").rename(tmp_path / "delta.keep")
        with pytest.raises(feedkit.FeedkitError) as info:
            feed.refresh()
        assert isinstance(info.value, feedkit.IntegrityError)
        assert feed.version == v1 and served(feed) == truth(table, "movie_id")
        assert feed.last_error is info.value
        cached = [p.name for p in (tmp_path / "c" / "titles").iterdir() if not p.name.startswith(".")]
        assert not any(str(v2) in name for name in cached), cached
        victim.write_bytes(original)  # repaired: the consumer catches up
        assert feed.refresh() is True
        assert feed.version == v2 and served(feed) == truth(table2, "movie_id")


def test_manifest_that_lies_about_a_checksum(store, tmp_path, producer) -> None:
    v1 = producer.publish(titles_table(300))
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        v2 = producer.publish(titles_table(300, seed=9))
        manifest = store_file(tmp_path, f"versions/{v2:020d}.json")
        text = manifest.read_text()
        for part in text.split('"sha256": "')[1:]:  # every blob it names
            text = text.replace(part[:64], "0" * 64)
        manifest.write_text(text)
        with pytest.raises(feedkit.IntegrityError, match="SHA-256"):
            feed.refresh()
        assert feed.version == v1


def test_missing_delta_falls_back_to_snapshot_else_fails(store, tmp_path, producer) -> None:
    table = titles_table(300)
    v1 = producer.publish(table)
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        table2 = mutate(table, random.Random(2), [900])
        v2 = producer.publish(table2)
        delta = store_file(tmp_path, f"*-{v2:020d}.delta.zst")
        kept = delta.read_bytes()
        delta.unlink()
        with pytest.raises(feedkit.IntegrityError, match="missing"):
            feed.refresh()  # v2 has no snapshot and its only delta is gone
        assert feed.version == v1
        delta.write_bytes(kept)
        assert feed.refresh() and served(feed) == truth(table2, "movie_id")


def test_announcement_naming_a_missing_version(store, tmp_path, producer) -> None:
    v1 = producer.publish(titles_table(100))
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        ann = store_file(tmp_path, "announced.json")
        good = ann.read_text()
        ann.write_text(good.replace(str(v1), str(v1 + 1000)))
        with pytest.raises(feedkit.VersionNotFoundError):
            feed.refresh()
        ann.write_text("][")
        with pytest.raises(feedkit.IntegrityError, match="announcement"):
            feed.refresh()
        assert feed.version == v1 and len(feed) == 100
        ann.write_text(good)
        assert feed.refresh() is False and feed.version == v1


def test_background_refresher_retries_until_the_store_is_repaired(store, tmp_path, producer) -> None:
    table = titles_table(400)
    v1 = producer.publish(table)
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", poll_interval=0.05,
                          max_backoff=0.2) as feed:
        table2 = mutate(table, random.Random(4), [900])
        # Damage the delta as soon as it lands: publish into a copy, then swap bytes.
        v2 = producer.publish(table2)
        deadline = time.monotonic() + 5
        while feed.version != v2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert feed.version == v2  # the healthy path first
        table3 = mutate(table2, random.Random(5), [1900])
        delta_dir = tmp_path / "store" / "titles" / "deltas"
        before = set(delta_dir.iterdir())
        v3 = producer.publish(table3)
        (new_delta,) = set(delta_dir.iterdir()) - before
        original = new_delta.read_bytes()
        corrupt_flip(new_delta)
        time.sleep(0.5)
        # Either the refresher saw the damage (and serves v2) or it was faster than us.
        if feed.version == v2:
            assert served(feed) == truth(table2, "movie_id")
            new_delta.write_bytes(original)
            deadline = time.monotonic() + 5
            while feed.version != v3 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert feed.version == v3 and served(feed) == truth(table3, "movie_id")
        assert v1 < v2 < v3
