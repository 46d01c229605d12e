"""The consumer's file-system watch on a local store: it wakes on changes, and only on them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import feedkit
from feedkit.store.local import LocalStore
from tests.conftest import titles_table


class CountingStore(LocalStore):
    """The real local store, counting announcement reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0
        self.lock = threading.Lock()

    def read_if_changed(self, key: str, etag: str | None = None):  # type: ignore[override]
        with self.lock:
            self.reads += 1
        return super().read_if_changed(key, etag)


def test_an_idle_watching_consumer_does_not_spin_on_its_own_reads(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "store")
    with feedkit.Producer(store, feed="titles", primary_key="movie_id") as producer:
        producer.publish(titles_table(100))
        with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache") as feed:
            time.sleep(0.3)
            before = store.reads
            time.sleep(1.0)
            idle_reads = store.reads - before
            # A change still wakes it.
            producer.publish(titles_table(101))
            deadline = time.monotonic() + 10
            while len(feed) != 101 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(feed) == 101
    # The poll (every second, with jitter) reads it once or twice; a watch that woke on
    # its own reads would make thousands.
    assert idle_reads <= 3, f"{idle_reads} announcement reads in 1 s of idling"
