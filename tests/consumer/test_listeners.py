"""Refresh listeners: called once per new version, in order, and never able to break a refresh."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import feedkit
from tests.conftest import titles_table

FEED = "titles"


@pytest.fixture
def producer(store: feedkit.BlobStore) -> Any:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as p:
        yield p


def test_listeners_see_old_and_new_versions_in_order(store, tmp_path: Path, producer) -> None:
    v1 = producer.publish(titles_table(50))
    calls: list[tuple[str, int | None, int]] = []
    feed = feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False)

    @feed.on_refresh  # returns the listener: usable as a decorator
    def first(old: int | None, new: int) -> None:
        calls.append(("first", old, new))

    feed.on_refresh(lambda old, new: calls.append(("second", old, new)))
    with feed:
        assert calls == [("first", None, v1), ("second", None, v1)]  # the first load
        assert feed.refresh() is False and len(calls) == 2  # nothing new: no call
        v2 = producer.publish(titles_table(51))
        feed.refresh()
        assert calls[2:] == [("first", v1, v2), ("second", v1, v2)]
        feed.pin(v1)
        assert calls[4:] == [("first", v2, v1), ("second", v2, v1)]  # a pin is a swap too
    assert callable(first)


def test_a_raising_listener_does_not_stop_the_others_or_the_refresh(store, tmp_path: Path,
                                                                  producer) -> None:
    v1 = producer.publish(titles_table(50))
    seen: list[tuple[int | None, int]] = []
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        def broken(old: int | None, new: int) -> None:
            raise RuntimeError("listener bug")

        feed.on_refresh(broken)
        feed.on_refresh(lambda old, new: seen.append((old, new)))
        v2 = producer.publish(titles_table(60))
        assert feed.refresh() is True  # no exception reaches the caller
        assert feed.version == v2 and len(feed) == 60 and feed.last_error is None
        assert seen == [(v1, v2)]
        m = feed.metrics()
        assert m["listener_errors"] == 1 and m["refresh_failures"] == 0


def test_the_swap_to_a_compacted_base_calls_no_listener(store, tmp_path: Path,
                                                        producer) -> None:
    v1 = producer.publish(titles_table(200))
    seen: list[tuple[int | None, int]] = []
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False,
                          compact_ratio=0.01) as feed:
        feed.on_refresh(lambda old, new: seen.append((old, new)))
        v2 = producer.publish(titles_table(220))  # 20 new records: past 1% of the base
        assert feed.refresh() is True
        with feed.view() as state:
            assert state.overlay is None, "the overlay was compacted into a new base"
            assert state.version == v2
        assert seen == [(v1, v2)]  # once, for the new version; not for the same-version swap
        assert feed.metrics()["updates"] == 2


def test_a_listener_can_read_the_consumer_it_listens_to(store, tmp_path: Path,
                                                        producer) -> None:
    producer.publish(titles_table(10))
    inside: list[tuple[int, int, int]] = []
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        feed.on_refresh(lambda old, new: inside.append(
            (feed.version, len(feed), feed.metrics()["version"])))
        v2 = producer.publish(titles_table(11))
        feed.refresh()
    assert inside == [(v2, 11, v2)]  # already serving the new version, and no deadlock


def test_remove_listener(store, tmp_path: Path, producer) -> None:
    producer.publish(titles_table(10))
    seen: list[int] = []

    def listener(old: int | None, new: int) -> None:
        seen.append(new)

    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c", watch=False) as feed:
        feed.on_refresh(listener)
        v2 = producer.publish(titles_table(11))
        feed.refresh()
        assert feed.remove_listener(listener) is True
        assert feed.remove_listener(listener) is False
        producer.publish(titles_table(12))
        assert feed.refresh() is True
    assert seen == [v2]


def test_the_background_refresher_survives_raising_listeners(store, tmp_path: Path,
                                                             producer) -> None:
    producer.publish(titles_table(10))
    calls = threading.Semaphore(0)

    def broken(old: int | None, new: int) -> None:
        calls.release()
        raise ValueError("always")

    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "c",
                          poll_interval=0.05) as feed:
        feed.on_refresh(broken)
        for n in (11, 12):
            version = producer.publish(titles_table(n))
            assert calls.acquire(timeout=10), "the refresher should apply the new version"
            deadline = time.monotonic() + 5
            while feed.version != version and time.monotonic() < deadline:
                time.sleep(0.01)
            assert feed.version == version and len(feed) == n
        m = feed.metrics()
        assert m["listener_errors"] == 2 and m["refresh_failures"] == 0
        assert feed._thread is not None and feed._thread.is_alive()
