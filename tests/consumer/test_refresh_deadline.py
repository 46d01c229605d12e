"""A refresh has one total deadline (``refresh_timeout``, 30 s by default) across its
retries and downloads: against an S3 server that stops answering (our own moto server
process, SIGSTOPped), ``refresh()`` fails with a StoreError by then, while the consumer
keeps serving its version, and succeeds once the server answers again.

The store is opened with its default options (read timeout 20 s, 4 retries): without
the deadline, one stalled read of the announcement takes 100 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import feedkit

from ..conftest import titles_table
from ..faults.proxy import FaultProxy
from ..s3server import S3Server, own_moto

FEED = "titles"
# Slack for a loaded 2-core machine: a stalled refresh ends within about 0.2 s of its
# deadline. Short enough that two budgets in a row (3 s + 3 s) fail the short cases.
MARGIN = 5.0
SHORT = 3.0
SHORT_MARGIN = 2.5


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    """Our own moto server process: these tests SIGSTOP it, so it is not the session's."""
    with own_moto() as server:
        yield server


@pytest.fixture
def published(moto: S3Server) -> Iterator[tuple[feedkit.BlobStore, feedkit.Producer, int]]:
    """A store with default options on a fresh prefix, a producer, its first version."""
    store = feedkit.open_store(moto.url(), endpoint_url=moto.endpoint)
    producer = feedkit.Producer(store, feed=FEED, primary_key="movie_id")
    version = producer.publish(titles_table(200))
    assert version is not None
    yield store, producer, version
    moto.resume()
    producer.close()
    store.close()


def stalled_refresh(moto: S3Server, feed: feedkit.Consumer) -> tuple[float, Exception]:
    """refresh() while the server is stopped: how long it took and what it raised."""
    moto.stall()
    try:
        started = time.monotonic()
        with pytest.raises(feedkit.StoreError) as info:
            feed.refresh()
        return time.monotonic() - started, info.value
    finally:
        moto.resume()


def test_default_refresh_ends_within_30_s(moto: S3Server, published, tmp_path: Path) -> None:
    store, producer, v1 = published
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.refresh_timeout <= 30
        assert feed.version == v1 and len(feed) == 200
        took, error = stalled_refresh(moto, feed)
        assert took < feed.refresh_timeout + MARGIN, f"refresh took {took:.1f} s"
        assert isinstance(error, feedkit.StoreTimeoutError) and store.url in str(error), error
        # Still serving its version, whole.
        assert feed.version == v1 and len(feed) == 200 and feed[7].title == "title 7"
        # Once the server answers again, a refresh moves on.
        v2 = producer.publish(titles_table(210))
        assert feed.refresh() is True and feed.version == v2 and len(feed) == 210


def test_refresh_timeout_bounds_a_stalled_refresh(moto: S3Server, published,
                                                  tmp_path: Path) -> None:
    store, producer, v1 = published
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False,
                          refresh_timeout=SHORT) as feed:
        assert feed.refresh_timeout == SHORT
        took, error = stalled_refresh(moto, feed)
        assert took < SHORT + SHORT_MARGIN, f"refresh took {took:.1f} s (refresh_timeout 3 s)"
        assert isinstance(error, feedkit.StoreTimeoutError), error
        assert "deadline" in str(error) and "announced.json" in str(error), error
        assert feed.version == v1 and len(feed) == 200
        # A second stalled refresh gets a fresh budget of its own, not what is left.
        took, _ = stalled_refresh(moto, feed)
        assert took < SHORT + SHORT_MARGIN
        v2 = producer.publish(titles_table(220))
        assert feed.refresh() is True and feed.version == v2 and len(feed) == 220


def test_refresh_timeout_bounds_a_stalled_download(moto: S3Server, published,
                                                   tmp_path: Path) -> None:
    # The announcement answers; the manifest and blob reads that follow stall (a real
    # proxy in front of the server holds them).
    store, producer, v1 = published
    proxy = FaultProxy(moto.endpoint)
    proxied = feedkit.open_store(store.url, endpoint_url=proxy.endpoint)
    try:
        with feedkit.Consumer(proxied, feed=FEED, cache_dir=tmp_path / "cache", watch=False,
                              refresh_timeout=SHORT) as feed:
            v2 = producer.publish(titles_table(230))
            proxy.set_mode("stall-but-announcements")
            try:
                started = time.monotonic()
                with pytest.raises(feedkit.StoreError):
                    feed.refresh()
                took = time.monotonic() - started
            finally:
                proxy.set_mode("pass")
            assert feed.metrics()["announced_version"] == v2  # the announcement was read
            assert took < SHORT + SHORT_MARGIN, f"refresh took {took:.1f} s (refresh_timeout 3 s)"
            assert feed.version == v1 and len(feed) == 200
            assert feed.refresh() is True and feed.version == v2 and len(feed) == 230
    finally:
        proxied.close()
        proxy.close()


def test_refresh_timeout_bounds_open(moto: S3Server, published, tmp_path: Path) -> None:
    store, _, _ = published
    feed = feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "empty-cache", watch=False,
                            refresh_timeout=SHORT)
    moto.stall()
    try:
        started = time.monotonic()
        with pytest.raises(feedkit.StoreError):
            feed.open()  # nothing cached to fall back on
        took = time.monotonic() - started
    finally:
        moto.resume()
        feed.close()
    assert took < SHORT + SHORT_MARGIN, f"open took {took:.1f} s (refresh_timeout 3 s)"


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_refresh_timeout_must_be_positive(moto: S3Server, published, tmp_path: Path,
                                          bad: float) -> None:
    store, _, _ = published
    with pytest.raises(feedkit.ConfigurationError, match="refresh_timeout"):
        feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", refresh_timeout=bad)
