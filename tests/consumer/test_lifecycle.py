"""The consumer's lifecycle (new -> open -> closed), prompt release of old versions, the
cache folder coming back, and keys no feed can hold."""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest

import feedkit
from tests.conftest import titles_table


def _mapped(folder: Path) -> list[str]:
    """Mappings of this process whose file lies in ``folder`` (deleted ones included)."""
    prefix = str(folder)
    with open("/proc/self/maps") as f:
        return [line.split(None, 5)[5].strip() for line in f
                if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith(prefix)]


def _fds_into(folder: Path) -> int:
    prefix = str(folder)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(prefix):
                n += 1
        except OSError:
            pass
    return n


def test_a_closed_consumer_refuses_everything_and_cannot_be_reopened(
        store: feedkit.BlobStore, tmp_path: Path) -> None:
    feedkit.Producer(store, feed="titles", primary_key="movie_id",
                     work_dir=tmp_path / "work").publish(titles_table(10))
    feed = feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache", poll_interval=0.1)
    assert feed.state == "new"
    with pytest.raises(feedkit.ClosedError, match="not open"):
        feed.get(1)
    with pytest.raises(feedkit.ClosedError, match="open"):
        feed.refresh()
    feed.open()
    assert feed.state == "open" and feed.get(1).title == "title 1"
    assert feed.open() is feed  # opening an open consumer does nothing
    feed.close()
    assert feed.state == "closed"
    for use in (lambda: feed.get(1), lambda: feed[1], lambda: 1 in feed, lambda: len(feed),
                feed.refresh, lambda: feed.get_many([1]), lambda: feed.version):
        with pytest.raises(feedkit.ClosedError):
            use()
    with pytest.raises(feedkit.ClosedError, match="cannot be reopened"):
        feed.open()
    with pytest.raises(feedkit.ClosedError, match="cannot be reopened"), feed:
        pass
    assert not feed.health().ok and feed.health().state == "closed"
    feed.close()  # idempotent


def test_close_releases_the_mappings_no_view_holds(store: feedkit.BlobStore,
                                                   tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    feedkit.Producer(store, feed="titles", primary_key="movie_id",
                     work_dir=tmp_path / "work").publish(titles_table(50))
    gc.disable()
    try:
        feed = feedkit.Consumer(store, feed="titles", cache_dir=cache, poll_interval=0.1).open()
        assert _mapped(cache)
        with feed.view() as view:
            feed.close()
            assert _mapped(cache), "a view still held keeps its version mapped"
            assert view.get(3).title == "title 3"
        del view
        assert _mapped(cache) == [] and _fds_into(cache) == 0
    finally:
        gc.enable()


def test_old_versions_are_released_without_the_cyclic_collector(
        store: feedkit.BlobStore, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    producer.publish(titles_table(20))
    gc.disable()
    try:
        with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
            counts = []
            for i in range(200):
                producer.publish(titles_table(20, seed=i + 1))
                assert feed.refresh()
                counts.append((len(_mapped(cache)), _fds_into(cache)))
            # Flat: a base (and an overlay) mapped, whatever the number of refreshes.
            assert max(counts[20:]) <= max(counts[:20]), (counts[:20], max(counts[20:]))
            assert max(m for m, _ in counts) <= 4 and max(f for _, f in counts) <= 4
    finally:
        gc.enable()
    producer.close()


def test_a_deleted_cache_folder_comes_back(store: feedkit.BlobStore, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    producer.publish(titles_table(30))
    with feedkit.Consumer(store, feed="titles", cache_dir=cache, watch=False) as feed:
        shutil.rmtree(cache)  # a tmp cleaner
        assert feed.get(5).title == "title 5"  # the mapping outlives the file
        v2 = producer.publish(titles_table(40))
        assert feed.refresh() and feed.version == v2 and feed.get(35).title == "title 35"
        assert (cache / "titles").is_dir()
        assert feed.metrics()["consecutive_failures"] == 0
    producer.close()


@pytest.mark.parametrize("cache_dir", ["", b"", None])
def test_an_empty_cache_dir_is_a_configuration_error(store: feedkit.BlobStore,
                                                     cache_dir: object) -> None:
    with pytest.raises(feedkit.ConfigurationError, match="cache_dir"):
        feedkit.Consumer(store, feed="titles", cache_dir=cache_dir)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "30"])
def test_refresh_timeout_must_be_positive(store: feedkit.BlobStore, tmp_path: Path,
                                          bad: object) -> None:
    with pytest.raises(feedkit.ConfigurationError, match="refresh_timeout"):
        feedkit.Consumer(store, feed="t", cache_dir=tmp_path, refresh_timeout=bad)  # type: ignore[arg-type]


def test_a_lone_surrogate_key_is_a_key_type_error(store: feedkit.BlobStore, tmp_path: Path) -> None:
    table = pa.table({"name": ["a", "b"], "part": [1, 2], "v": [1.0, 2.0]})
    feedkit.Producer(store, feed="named", primary_key="name",
                     work_dir=tmp_path / "w1").publish(table)
    feedkit.Producer(store, feed="pairs", primary_key=("name", "part"),
                     work_dir=tmp_path / "w2").publish(table)
    with feedkit.Consumer(store, feed="named", cache_dir=tmp_path / "c", watch=False) as named, \
            feedkit.Consumer(store, feed="pairs", cache_dir=tmp_path / "c", watch=False) as pairs:
        assert named.get("a").v == 1.0 and pairs.get(("b", 2)).v == 2.0
        for feed, key in ((named, "\ud800"), (pairs, ("\udcff", 1))):
            for use in (feed.get, feed.__getitem__, feed.__contains__,
                        lambda k, f=feed: f.get_many([k])):
                with pytest.raises(feedkit.KeyTypeError, match="not valid text") as err:
                    use(key)
                assert repr(feed.feed) in str(err.value)


def test_health_tells_the_truth_after_failures(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = feedkit.open_store(f"file://{root}")
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    v1 = producer.publish(titles_table(10))
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache", watch=False) as feed:
        h = feed.health(max_staleness=30)
        assert h.ok and bool(h) and h.reason is None and h.version == v1
        assert h.announced_version == v1 and h.versions_behind == 0 and h.last_error is None
        assert 0 <= h.seconds_since_check < 30
        root.rename(tmp_path / "away")
        with pytest.raises(feedkit.FeedkitError):
            feed.refresh()
        # A failure is no check: the age keeps growing from the last success.
        assert feed.health(max_staleness=30).ok
        time.sleep(0.05)
        late = feed.health(max_staleness=0.01)
        assert not late.ok and "last successful check" in late.reason
        assert late.last_error and late.consecutive_failures == 1
        assert late.seconds_since_check >= h.seconds_since_check
        assert feed.metrics()["seconds_since_check"] >= late.seconds_since_check
        (tmp_path / "away").rename(root)
        v2 = producer.publish(titles_table(20))
        assert feed.refresh()
        h = feed.health(max_staleness=30)
        assert h.ok and h.version == v2 and h.last_error is None and h.seconds_since_check < 5
        assert h.to_dict()["version"] == v2
    producer.close()
