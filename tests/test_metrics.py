"""Metrics: Consumer.metrics(), Producer.metrics(), and their Prometheus collectors.

Real stores in temporary folders, real producers publishing real versions, real
prometheus_client registries read back through the text exposition format.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import feedkit
import feedkit.metrics
from feedkit import names
from feedkit.manifest import Announcement, Manifest, Pin, utc_now
from tests.conftest import titles_table

FEED = "titles"


def consumer(store: feedkit.BlobStore, tmp_path: Path, **kw: Any) -> feedkit.Consumer:
    kw.setdefault("watch", False)
    return feedkit.Consumer(store, feed=kw.pop("feed", FEED), cache_dir=tmp_path / "cache", **kw)


def store_path(tmp_path: Path, key: str) -> Path:
    return tmp_path / "store" / key


def announced_at(tmp_path: Path, feed: str = FEED) -> float:
    doc = json.loads(store_path(tmp_path, names.announcement_key(feed)).read_bytes())
    return dt.datetime.fromisoformat(doc["announced_at"]).timestamp()


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's text exposition: (name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {f.name for f in text_string_to_metric_families(text)}


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


# -- Consumer.metrics() -------------------------------------------------------------------


def test_consumer_metrics_follow_refreshes_and_count_calls(store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id",
                          indexes=["country"]) as producer:
        v1 = producer.publish(titles_table(100))
        with consumer(store, tmp_path) as feed:
            m = feed.metrics()
            assert (m["feed"], m["version"], m["announced_version"], m["records"]) == (
                FEED, v1, v1, 100)
            assert m["versions_behind"] == 0 and m["lag_seconds"] == 0.0
            assert m["pinned_version"] is None
            assert (m["refresh_successes"], m["refresh_failures"], m["updates"]) == (1, 0, 1)
            assert m["refresh_seconds"]["count"] == 1 and m["refresh_seconds"]["sum"] > 0
            assert m["announced_at"] == pytest.approx(announced_at(tmp_path), abs=1e-3)
            assert m["staleness_seconds"] >= 0
            assert m["last_error"] is None and m["consecutive_failures"] == 0
            assert m["lookups"] is None  # get is not counted unless asked for

            assert feed.refresh() is False  # a poll that finds nothing: a success, no update
            m = feed.metrics()
            assert (m["refresh_successes"], m["updates"], m["refresh_seconds"]["count"]) == (
                2, 1, 1)

            v2 = producer.publish(titles_table(101))
            # Until it reads the announcement again, the consumer knows of v1 only.
            assert feed.metrics()["announced_version"] == v1
            assert feed.refresh() is True
            m = feed.metrics()
            assert (m["version"], m["announced_version"], m["records"]) == (v2, v2, 101)
            assert m["updates"] == 2 and m["refresh_seconds"]["count"] == 2
            assert m["refresh_seconds"]["max"] >= m["refresh_seconds"]["last"] > 0
            assert m["last_update_time"] >= m["last_success_time"] - 1

            assert feed.get_many([1, 2, 3, 999_999]) == [feed.get(1), feed.get(2), feed.get(3),
                                                         None]
            feed.get_many(k for k in range(10))  # a generator: counted by the keys it held
            assert len(feed.find("country", "DE")) == 26
            m = feed.metrics()
            assert (m["get_many_calls"], m["get_many_keys"], m["find_calls"]) == (2, 14, 1)
        assert feed.metrics()["version"] is None  # closed: nothing served, counters kept
        assert feed.metrics()["updates"] == 2


def test_versions_behind_while_pinned_behind(store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(50))
        with consumer(store, tmp_path) as feed:
            v2, v3, v4 = (producer.publish(titles_table(50 + i)) for i in (1, 2, 3))
            feed.pin(v1)  # already served: no swap, but the announcement is read
            m = feed.metrics()
            assert (m["version"], m["pinned_version"], m["announced_version"]) == (v1, v1, v4)
            assert m["versions_behind"] == 3
            assert m["lag_seconds"] == m["staleness_seconds"] and m["lag_seconds"] is not None
            feed.pin(v3)
            assert feed.version == v3 and feed.metrics()["versions_behind"] == 1
            feed.unpin()
            m = feed.metrics()
            assert (m["version"], m["pinned_version"], m["versions_behind"]) == (v4, None, 0)
            assert m["lag_seconds"] == 0.0
            assert v2 < v3


def test_versions_behind_off_the_parent_chain_counts_the_manifests(store, tmp_path) -> None:
    """A rollback: the new versions descend from v1, not from the v2 the consumer serves."""
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(50))
        v2 = producer.publish(titles_table(51))
        v3 = producer.publish(titles_table(52))
    key = names.announcement_key(FEED)
    with consumer(store, tmp_path) as feed:
        feed.pin(v2)
        _, etag = store.read_if_changed(key)  # type: ignore[misc]
        store.replace_if_match(key, Announcement(FEED, v1).to_bytes(), etag)
        with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as fresh:
            v4 = fresh.publish(titles_table(60))
        manifest = Manifest.from_bytes(store.get_bytes(names.manifest_key(FEED, v4)), "v4")
        assert manifest.parent == v1  # v2 is not on v4's chain
        feed.refresh()
        m = feed.metrics()
        assert (m["version"], m["announced_version"]) == (v2, v4)
        assert m["versions_behind"] == 2  # v3 and v4 were published after v2
        assert v3 < v4


def test_a_failed_refresh_is_counted_and_the_version_kept(store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(200))
        with consumer(store, tmp_path) as feed:
            v2 = producer.publish(titles_table(201))
            delta = store_path(tmp_path, names.delta_key(FEED, v1, v2))
            kept = delta.read_bytes()
            delta.unlink()  # v2 has no snapshot: it cannot be built
            for _ in range(2):
                with pytest.raises(feedkit.IntegrityError):
                    feed.refresh()
            m = feed.metrics()
            assert (m["version"], m["announced_version"], m["versions_behind"]) == (v1, v2, 1)
            assert (m["refresh_successes"], m["refresh_failures"]) == (1, 2)
            assert m["consecutive_failures"] == 2
            assert "IntegrityError" in m["last_error"] and "missing" in m["last_error"]
            assert m["last_error_time"] >= m["last_success_time"]
            assert m["lag_seconds"] == m["staleness_seconds"] >= 0
            assert m["updates"] == 1 and feed.get(200) is None

            delta.write_bytes(kept)
            assert feed.refresh() is True
            m = feed.metrics()
            assert (m["version"], m["versions_behind"], m["consecutive_failures"]) == (v2, 0, 0)
            assert (m["refresh_successes"], m["refresh_failures"], m["updates"]) == (2, 2, 2)
            assert "missing" in m["last_error"]  # the last failure stays on record


def test_serving_the_cache_with_the_store_unreadable_knows_the_remembered_announcement(
        store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(10))
    with consumer(store, tmp_path):
        pass  # fills the cache folder
    store_path(tmp_path, names.announcement_key(FEED)).unlink()
    with consumer(store, tmp_path) as feed:
        m = feed.metrics()
    # The cache folder remembers the last announcement read: the one being served.
    assert (m["version"], m["announced_version"], m["versions_behind"]) == (v1, v1, 0)
    assert m["staleness_seconds"] is not None and m["lag_seconds"] == 0.0
    assert m["seconds_since_check"] is None  # no check succeeded in this consumer
    assert (m["refresh_successes"], m["refresh_failures"], m["updates"]) == (0, 1, 0)
    assert "nothing announced" in m["last_error"]


def test_get_is_counted_only_when_asked(store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        producer.publish(titles_table(20))
        with consumer(store, tmp_path) as plain, feedkit.Consumer(
                store, feed=FEED, cache_dir=tmp_path / "c2", watch=False,
                count_lookups=True) as counted:
            with plain.view() as state:
                assert plain.get is state.get  # the default path is the generated lookup
            assert plain.get(1).movie_id == 1 and plain.metrics()["lookups"] is None

            for key in (1, 2, 999):
                counted.get(key)
            assert counted[3].movie_id == 3 and 4 in counted and 999 not in counted
            assert counted.metrics()["lookups"] == 6
            assert counted.metrics()["lookups"] == 6  # reading the count is not a lookup
            producer.publish(titles_table(21))
            assert counted.refresh() is True
            assert counted.get(20).movie_id == 20  # the new version's get is counted too
            assert counted.metrics()["lookups"] == 7


def test_metrics_read_from_another_thread_while_the_refresher_runs(store, tmp_path) -> None:
    seen: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def scraper(feed: feedkit.Consumer) -> None:
        while not stop.is_set():
            try:
                seen.append(feed.metrics())
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            time.sleep(0.001)

    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        producer.publish(titles_table(100))
        with consumer(store, tmp_path, watch=True, poll_interval=0.05) as feed:
            thread = threading.Thread(target=scraper, args=(feed,))
            thread.start()
            try:
                for i in range(1, 6):
                    last = producer.publish(titles_table(100 + i))
                    time.sleep(0.05)
                deadline = time.monotonic() + 10
                while feed.version != last and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                stop.set()
                thread.join()
            m = feed.metrics()
    assert not errors and seen
    assert m["version"] == last and m["refresh_failures"] == 0
    assert 2 <= m["updates"] <= 6 and m["refresh_seconds"]["count"] == m["updates"]
    versions = [s["version"] for s in seen]
    assert versions == sorted(versions)  # never seen going back


# -- Producer.metrics() -------------------------------------------------------------------


def blob_bytes(tmp_path: Path, feed: str = FEED) -> int:
    root = tmp_path / "store" / feed
    return sum(p.stat().st_size for d in ("snapshots", "deltas", "versions")
               for p in (root / d).glob("*") if p.is_file())


def test_producer_metrics_count_each_outcome(store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id",
                          max_change_ratio=0.5) as producer:
        assert producer.metrics()["cycles"] == dict.fromkeys(
            ("published", "unchanged", "refused", "pinned", "failed"), 0)
        v1 = producer.publish(titles_table(100))
        assert producer.publish(titles_table(100)) is None
        v2 = producer.publish(titles_table(110))
        written = blob_bytes(tmp_path)
        with pytest.raises(feedkit.RefusedError):
            producer.publish(titles_table(10))  # removes 100 of 110 records
        with pytest.raises(feedkit.ValidationError):
            producer.publish(pa.table({"movie_id": pa.array([1, None], pa.int64())}))
        with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as other:
            other.publish(titles_table(111))  # moves the announcement: the first is fenced
        with pytest.raises(feedkit.ProducerFencedError):
            producer.publish(titles_table(112))
        m = producer.metrics()
    assert m["cycles"] == {"published": 2, "unchanged": 1, "refused": 2, "pinned": 0,
                           "failed": 1}
    assert m["refusals"] == {"max_change_ratio": 1, "table": 1}
    assert m["last_outcome"] == "failed" and "ProducerFencedError" in m["last_error"]
    assert (m["version"], m["last_published_version"], m["record_count"]) == (v2, v2, 110)
    assert m["last_published_time"] is not None and v1 < v2
    # Rows read by every cycle that read its table (the null key stops it while encoding).
    assert m["rows_read"] == {"total": 100 + 100 + 110 + 10, "last": 10}
    assert m["records_added"] == {"total": 110, "last": 10}
    assert m["records_changed"] == {"total": 0, "last": 0}
    assert m["records_removed"] == {"total": 0, "last": 0}
    assert m["bytes_written"]["total"] == written  # every blob and manifest of v1 and v2
    steps = m["step_seconds"]
    assert steps["total"]["count"] == 6 and steps["total"]["sum"] > 0
    assert steps["encode"]["count"] == 4 and steps["upload"]["count"] == 2
    assert steps["write"]["count"] == 3  # the refused cycle wrote its state, then validated


def test_a_pinned_feed_counts_as_pinned_not_failed(store, tmp_path) -> None:
    key = names.announcement_key(FEED)
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(10))
        v2 = producer.publish(titles_table(11))
        with consumer(store, tmp_path) as feed:
            _, etag = store.read_if_changed(key)  # type: ignore[misc]
            pin = Pin(at=utc_now(), latest=v2, by="test", reason="rollback")
            store.replace_if_match(key, Announcement(FEED, v1, pinned=pin).to_bytes(), etag)
            with pytest.raises(feedkit.FeedPinnedError):
                producer.publish(titles_table(12))
            m = producer.metrics()
            assert m["cycles"]["pinned"] == 1 and m["cycles"]["failed"] == 0
            assert m["last_error"] is None
            assert feed.refresh() is True  # consumers follow the rollback
            m = feed.metrics()
            assert (m["version"], m["announced_version"], m["versions_behind"]) == (v1, v1, 0)


def test_a_changed_record_and_a_removed_one_are_counted(store) -> None:
    table = titles_table(30)
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        producer.publish(table)
        titles = table.column("title").to_pylist()
        titles[0] = "renamed"
        producer.publish(table.set_column(1, "title", pa.array(titles)).slice(0, 29))
        m = producer.metrics()
    assert (m["records_changed"]["last"], m["records_removed"]["last"],
            m["records_added"]["last"]) == (1, 1, 0)
    assert m["records_added"]["total"] == 30


# -- Prometheus ---------------------------------------------------------------------------


def test_consumer_collector_exports_every_family(store, tmp_path) -> None:
    registry = CollectorRegistry()
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        producer.publish(titles_table(40))
        with consumer(store, tmp_path, count_lookups=True) as feed:
            collector = feedkit.metrics.register(feed, registry=registry)
            assert isinstance(collector, feedkit.metrics.ConsumerCollector)
            v2 = producer.publish(titles_table(41))
            feed.refresh()
            feed.get(1), feed.get(2), feed.get_many([1, 2, 3])
            feed.pin(v2)
            samples = scrape(registry)
            names_seen = families(registry)
    f = labels(feed=FEED)
    assert samples[("feedkit_consumer_version", f)] == v2
    assert samples[("feedkit_consumer_pinned_version", f)] == v2
    assert samples[("feedkit_consumer_records", f)] == 41
    assert samples[("feedkit_consumer_versions_behind", f)] == 0
    assert samples[("feedkit_consumer_refresh_total", labels(feed=FEED, result="success"))] == 3
    assert samples[("feedkit_consumer_refresh_total", labels(feed=FEED, result="failure"))] == 0
    assert samples[("feedkit_consumer_updates_total", f)] == 2
    assert samples[("feedkit_consumer_refresh_duration_seconds_count", f)] == 2
    assert samples[("feedkit_consumer_refresh_duration_seconds_sum", f)] > 0
    assert samples[("feedkit_consumer_lookups_total", labels(feed=FEED, method="get"))] == 2
    assert samples[("feedkit_consumer_lookups_total", labels(feed=FEED, method="get_many"))] == 1
    assert samples[("feedkit_consumer_get_many_keys_total", f)] == 3
    assert samples[("feedkit_consumer_staleness_seconds", f)] >= 0
    assert samples[("feedkit_consumer_last_success_timestamp_seconds", f)] > 1e9
    for name in feedkit.metrics.CONSUMER_METRICS:
        assert name.removesuffix("_total") in names_seen, name


def test_producer_collector_exports_cycles_refusals_and_steps(store, tmp_path) -> None:
    registry = CollectorRegistry()
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id",
                          min_records=20) as producer:
        registry.register(feedkit.metrics.ProducerCollector(producer))
        v1 = producer.publish(titles_table(30))
        with pytest.raises(feedkit.RefusedError):
            producer.publish(titles_table(5))
        samples = scrape(registry)
        names_seen = families(registry)
    f = labels(feed=FEED)
    assert samples[("feedkit_producer_version", f)] == v1
    assert samples[("feedkit_producer_records", f)] == 30
    assert samples[("feedkit_producer_cycles_total", labels(feed=FEED, result="published"))] == 1
    assert samples[("feedkit_producer_cycles_total", labels(feed=FEED, result="refused"))] == 1
    assert samples[("feedkit_producer_refusals_total", labels(feed=FEED, rule="min_records"))] == 1
    assert samples[("feedkit_producer_records_read_total", f)] == 35
    assert samples[("feedkit_producer_records_changed_total",
                    labels(feed=FEED, change="added"))] == 30
    assert samples[("feedkit_producer_bytes_written_total", f)] == blob_bytes(tmp_path)
    total = labels(feed=FEED, step="total")
    assert samples[("feedkit_producer_cycle_duration_seconds_count", total)] == 2
    assert samples[("feedkit_producer_cycle_duration_seconds_sum", total)] > 0
    assert samples[("feedkit_producer_cycle_duration_seconds_count",
                    labels(feed=FEED, step="upload"))] == 1
    for name in feedkit.metrics.PRODUCER_METRICS:
        assert name.removesuffix("_total") in names_seen, name


def test_register_shares_families_across_feeds_and_holds_objects_weakly(store, tmp_path) -> None:
    registry = CollectorRegistry()
    with feedkit.Producer(store, feed="a", primary_key="movie_id") as pa_, \
            feedkit.Producer(store, feed="b", primary_key="movie_id") as pb:
        va, vb = pa_.publish(titles_table(3)), pb.publish(titles_table(4))
    a = consumer(store, tmp_path, feed="a").open()
    b = feedkit.Consumer(store, feed="b", cache_dir=tmp_path / "cb", watch=False).open()
    try:
        first = feedkit.metrics.register(a, registry=registry)
        assert feedkit.metrics.register(b, registry=registry) is first
        assert feedkit.metrics.register(a, registry=registry) is first  # once only
        samples = scrape(registry)
        assert samples[("feedkit_consumer_version", labels(feed="a"))] == va
        assert samples[("feedkit_consumer_version", labels(feed="b"))] == vb

        again = feedkit.Consumer(store, feed="a", cache_dir=tmp_path / "c3", watch=False)
        with pytest.raises(feedkit.ConfigurationError, match="already collected"):
            feedkit.metrics.register(again, registry=registry)
        with pytest.raises(feedkit.ConfigurationError, match="cannot collect"):
            feedkit.metrics.register(object(), registry=registry)
        with pytest.raises(ValueError, match="Duplicated"):  # the families are described
            registry.register(feedkit.metrics.ConsumerCollector())

        assert feedkit.metrics.unregister(b, registry=registry) is True
        assert feedkit.metrics.unregister(b, registry=registry) is False
        assert ("feedkit_consumer_version", labels(feed="b")) not in scrape(registry)
    finally:
        a.close()
        b.close()
    del a
    gc.collect()
    assert ("feedkit_consumer_version", labels(feed="a")) not in scrape(registry)
    assert "feedkit_consumer_version" in families(registry)  # the family stays, empty


LEAN = r"""
import sys
for name in ("prometheus_client", "pyarrow", "pyiceberg"):
    sys.modules[name] = None      # importing these now raises ImportError
import feedkit
import feedkit.metrics
store = feedkit.open_store(sys.argv[1])
with feedkit.Consumer(store, feed="titles", cache_dir=sys.argv[2], watch=False) as feed:
    m = feed.metrics()
    assert m["version"] and m["refresh_successes"] == 1, m
    for make in (feedkit.metrics.ConsumerCollector, feedkit.metrics.register):
        try:
            make(feed)
        except feedkit.NotInstalledError as exc:
            assert "pip install 'feedkit[metrics]'" in str(exc), exc
        else:
            raise AssertionError("a collector without prometheus_client")
loaded = [m for m in sys.modules if m.startswith(("prometheus", "pyarrow", "pyiceberg"))
          and sys.modules[m]]
assert not loaded, loaded
print("lean ok")
"""


def test_without_prometheus_client_metrics_work_and_collectors_say_what_to_install(
        store, tmp_path) -> None:
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        producer.publish(titles_table(10))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", LEAN, store.url, str(tmp_path / "cache")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "lean ok" in out.stdout
