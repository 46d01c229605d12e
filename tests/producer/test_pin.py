"""A pinned feed (``feedkit pin``): producers publish nothing, the daemon waits without backing
off and resumes after the unpin with a child of the latest version, and watching consumers
follow the rollback and its end."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import feedkit
from feedkit import admin, names
from feedkit.manifest import Manifest
from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon

from ..conftest import titles_table, truth
from .conftest import append_rows, create_table
from .test_daemon import FEED, TABLE, feed_entry, write_config


def store_files(root: Path) -> dict[str, bytes]:
    """Every object of the store but the announcement (and lock files)."""
    base = root / "store"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.name != "announced.json" and not p.name.endswith(".lock")}


def manifest(store: feedkit.BlobStore, feed: str, version: int) -> Manifest:
    key = names.manifest_key(feed, version)
    return Manifest.from_bytes(store.get_bytes(key), key)


def announced(store: feedkit.BlobStore, feed: str) -> Any:
    found = admin.read_announcement(store, feed)
    assert found is not None
    return found[0]


def test_a_pinned_feed_refuses_to_publish_and_resumes_from_the_latest(store, tmp_path,
                                                                       caplog) -> None:
    caplog.set_level(logging.INFO, logger="feedkit.producer")
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    v1 = producer.publish(titles_table(100))
    v2 = producer.publish(titles_table(110))
    assert v1 is not None and v2 is not None
    admin.pin(store, "titles", v1, reason="bad rows in v2", by="ana@box")
    before = store_files(tmp_path)

    with pytest.raises(feedkit.FeedPinnedError) as caught:
        producer.publish(titles_table(120))
    error = caught.value
    assert isinstance(error, feedkit.ProducerFencedError)  # callers handling fencing stop too
    assert error.version == v1 and error.pin.latest == v2 and error.pin.by == "ana@box"
    text = str(error)
    assert f"pinned to version {v1} by ana@box" in text and "'bad rows in v2'" in text
    assert f"latest version is {v2}" in text and "feedkit unpin" in text
    with pytest.raises(feedkit.FeedPinnedError):
        producer.append(titles_table(5, start=1000))
    with feedkit.Producer(store, feed="titles", primary_key="movie_id") as fresh, \
            pytest.raises(feedkit.FeedPinnedError):
        fresh.restore()
    assert store_files(tmp_path) == before  # no blob, no manifest
    assert announced(store, "titles").version == v1

    admin.unpin(store, "titles")
    caplog.clear()
    v3 = producer.publish(titles_table(120))
    assert v3 is not None
    m3 = manifest(store, "titles", v3)
    assert m3.parent == v2 and m3.delta is not None  # a child of the latest, not of the pin
    assert "from=work_dir" in caplog.text  # the latest state was still at hand
    assert announced(store, "titles").version == v3
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c", watch=False) as feed:
        assert {k: r._asdict() for k, r in feed.items()} == truth(titles_table(120), "movie_id")
    producer.close()


def test_a_watching_consumer_follows_the_pin_back_and_the_unpin_forward(store, tmp_path) -> None:
    tables = [titles_table(300, seed=i) for i in range(5)]
    with feedkit.Producer(store, feed="titles", primary_key="movie_id",
                          snapshot_every=3) as producer:
        versions = [producer.publish(t) for t in tables]
        with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "c",
                              poll_interval=0.2) as feed:
            assert feed.version == versions[-1]

            def wait_for(version: int | None) -> None:
                deadline = time.monotonic() + 10
                while feed.version != version and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert feed.version == version

            # Version 1 was never in this consumer's cache: it plans back to a snapshot.
            admin.pin(store, "titles", versions[1], reason="rollback")
            wait_for(versions[1])
            assert {k: r._asdict() for k, r in feed.items()} == truth(tables[1], "movie_id")
            with pytest.raises(feedkit.FeedPinnedError):
                producer.publish(titles_table(10))
            admin.unpin(store, "titles")
            wait_for(versions[-1])
            v6 = producer.publish(titles_table(310, seed=9))
            wait_for(v6)
            assert feed.get(305).title == "title 305"


@pytest.fixture
def root(tmp_path: Path, catalog: Any) -> Path:
    create_table(catalog, TABLE, titles_table(2000))
    return tmp_path


def test_the_daemon_waits_while_pinned_and_resumes_after_the_unpin(root: Path, catalog: Any,
                                                                   caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="feedkit.producer.daemon")
    config = load_config(write_config(root, [feed_entry(poll_interval=0.5)]))
    store = feedkit.open_store(str(root / "store"))
    daemon = Daemon(config)
    runner = daemon.runners[0]
    try:
        assert runner.check() == "published"
        append_rows(catalog.load_table(TABLE), titles_table(10, start=5000))
        assert runner.check() == "published"
        v1, v2 = (v.version for v in admin.list_versions(store, FEED).versions[::-1])
        admin.pin(store, FEED, v1, reason="bad rows", by="ana@box")
        append_rows(catalog.load_table(TABLE), titles_table(10, start=6000))
        before = store_files(root)

        # The runner's producer meets the pin when it restores for the cycle; afterwards each
        # check restores a fresh producer, which meets it at once.
        for _ in range(2):
            start = time.monotonic()
            assert runner.check() == "pinned"
            assert runner.failures == 0  # not a failure: no backoff
            assert start + 0.5 <= runner.next_check <= time.monotonic() + 0.5
        warnings = [r.getMessage() for r in caplog.records
                    if "event=pinned" in r.getMessage() and r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings  # one line per pin, not one per check
        assert (f"event=pinned feed={FEED} version={v1} latest={v2} by=ana@box" in warnings[0]
                and "reason='bad rows'" in warnings[0])
        assert store_files(root) == before and announced(store, FEED).version == v1
        assert Daemon(config).once() == 0  # a pin is not a failure of `once` either
        assert store_files(root) == before

        admin.unpin(store, FEED)
        assert runner.check() == "published"
        v3 = announced(store, FEED).version
        m3 = manifest(store, FEED, v3)
        assert m3.parent == v2 and m3.delta is not None and m3.record_count == 2020
        assert any(f"event=unpinned feed={FEED} version={v3}" in r.getMessage()
                   for r in caplog.records)
        assert runner.metrics()["checks"]["pinned"] == 2
    finally:
        daemon.close()
    with feedkit.Consumer(store, feed=FEED, cache_dir=root / "cache", watch=False) as feed:
        assert feed.version == v3 and len(feed) == 2020
        assert feed.get(6009) is not None and feed.get(5009) is not None


def test_a_pinned_producer_reads_no_rows(store) -> None:
    with feedkit.Producer(store, feed="titles", primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(10))
        assert v1 is not None
        admin.pin(store, "titles", v1)
        table = titles_table(20)
        read: list[int] = []

        def batches() -> Any:
            read.append(1)
            yield from table.to_batches()

        with pytest.raises(feedkit.FeedPinnedError):
            producer.publish(pa.RecordBatchReader.from_batches(table.schema, batches()))
        assert read == []  # refused before the first batch: a pin costs no table read
    assert "FeedPinnedError" in feedkit.__all__
