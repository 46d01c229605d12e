"""The S3 store against a real S3-API server on 127.0.0.1 (moto's, or FEEDKIT_S3_ENDPOINT).

The behaviour every store shares is in test_store_contract.py; here is what is S3's own:
request counts, 304 polling, multipart, a stalled server, access errors, fencing and
orphans through the producer and the consumer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import feedkit
from feedkit import names
from feedkit.store.s3 import MiB, S3Store

from ..conftest import titles_table, truth
from ..s3server import BUCKET, S3Server

FEED = "titles"


class Requests:
    """Every request the store's boto3 client sends, as (operation, HTTP status), counted
    with boto3's own event hooks."""

    def __init__(self, store: feedkit.BlobStore) -> None:
        assert isinstance(store, S3Store)
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        store.client.meta.events.register("after-call.s3", self._record)

    def _record(self, http_response: Any, model: Any, **_: Any) -> None:
        with self.lock:
            self.seen.append((model.name, http_response.status_code))

    def count(self) -> Counter[tuple[str, int]]:
        with self.lock:
            return Counter(self.seen)

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()


def open_s3(server: S3Server, url: str | None = None, **options: Any) -> feedkit.BlobStore:
    options.setdefault("read_timeout", 5.0)
    options.setdefault("connect_timeout", 2.0)
    options.setdefault("max_attempts", 2)
    return feedkit.open_store(url or server.url(), endpoint_url=server.endpoint, **options)


def served(feed: feedkit.Consumer) -> dict:
    return {k: r._asdict() for k, r in feed.items()}


def test_open_store_s3_urls(s3_server: S3Server) -> None:
    store = open_s3(s3_server, f"s3://{BUCKET}/some/prefix/")
    assert store.url == f"s3://{BUCKET}/some/prefix" and isinstance(store, S3Store)
    with pytest.raises(feedkit.ConfigurationError, match="name a bucket"):
        feedkit.open_store("s3:///x")
    with pytest.raises(feedkit.ConfigurationError, match="colour"):
        feedkit.open_store(f"s3://{BUCKET}/x", colour="blue")


def test_without_boto3_the_error_says_what_to_install() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["boto3"] = None  # as if it were not installed
        import feedkit
        try:
            feedkit.open_store("s3://bucket/prefix")
        except feedkit.NotInstalledError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "refused:" in out and "pip install 'feedkit[s3]'" in out


def test_unchanged_feed_costs_one_conditional_get_answered_304(s3_server: S3Server,
                                                                tmp_path: Path) -> None:
    store = open_s3(s3_server)
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        producer.publish(titles_table(500))
    requests = Requests(store)
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache",
                          poll_interval=0.2) as feed:
        assert len(feed) == 500
        requests.clear()
        time.sleep(2.0)
        polls = requests.count()
        assert len(feed) == 500
    # Only conditional reads of the announcement, all answered 304: no blob, no manifest.
    assert set(polls) == {("GetObject", 304)}, polls
    assert 4 <= polls[("GetObject", 304)] <= 20, polls  # every 0.2 s, with jitter


def test_large_blob_goes_through_multipart_create_only(s3_server: S3Server,
                                                       tmp_path: Path) -> None:
    store = open_s3(s3_server, multipart_threshold=5 * MiB, part_size=5 * MiB)
    requests = Requests(store)
    blob = tmp_path / "big.zst"
    blob.write_bytes(os.urandom(12 * MiB + 123))
    store.put_new("feed/snapshots/big.snapshot.zst", blob)
    ops = requests.count()
    assert ops[("UploadPart", 200)] == 3 and ops[("CompleteMultipartUpload", 200)] == 1
    assert ops[("PutObject", 200)] == 0
    copy = tmp_path / "copy"
    assert store.download("feed/snapshots/big.snapshot.zst", copy) == blob.stat().st_size
    assert copy.read_bytes() == blob.read_bytes()

    # A second writer loses, and its parts are not left behind.
    other = tmp_path / "other.zst"
    other.write_bytes(os.urandom(11 * MiB))
    with pytest.raises(feedkit.BlobExistsError, match="exists already"):
        store.put_new("feed/snapshots/big.snapshot.zst", other)
    assert copy.read_bytes() == Path(blob).read_bytes()
    assert isinstance(store, S3Store)
    uploads = store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix)
    assert not uploads.get("Uploads")


def test_access_denied_names_bucket_and_key(s3_server: S3Server, tmp_path: Path) -> None:
    if s3_server.kind != "moto":
        pytest.skip("needs a server that applies a bucket policy to these credentials")
    bucket = "feedkit-tests-denied"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="p/titles/announced.json", Body=b"{}")
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    store = open_s3(s3_server, f"s3://{bucket}/p")
    with pytest.raises(feedkit.AccessDeniedError) as info:
        store.get_bytes("titles/announced.json")
    assert f"s3://{bucket}/p/titles/announced.json" in str(info.value)
    assert isinstance(info.value, feedkit.StoreError)
    with pytest.raises(feedkit.AccessDeniedError), feedkit.Consumer(
            store, feed=FEED, cache_dir=tmp_path / "cache", watch=False):
        pass


def test_consumers_follow_a_feed_on_s3(s3_server: S3Server, tmp_path: Path) -> None:
    store = open_s3(s3_server)
    table = titles_table(3000)
    producer = feedkit.Producer(store, feed=FEED, primary_key="movie_id", snapshot_every=3)
    producer.publish(table)
    with producer, feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache",
                                    watch=False) as feed:
        assert feed.refresh() is False and served(feed) == truth(table, "movie_id")
        for i in range(4):
            table = titles_table(3000 + 10 * (i + 1), seed=i)
            producer.publish(table)
            assert feed.refresh() and served(feed) == truth(table, "movie_id")
    # A fresh consumer starts from the nearest snapshot plus deltas.
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "fresh", watch=False) as fresh:
        assert served(fresh) == truth(table, "movie_id")


def test_a_missing_blob_is_an_integrity_error_and_the_old_version_serves(
        s3_server: S3Server, tmp_path: Path) -> None:
    store = open_s3(s3_server)
    producer = feedkit.Producer(store, feed=FEED, primary_key="movie_id")
    producer.publish(titles_table(100))
    with producer, feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache",
                                    watch=False) as feed:
        version = producer.publish(titles_table(120))
        store.delete(names.delta_key(FEED, feed.version, version))
        store.delete(names.snapshot_key(FEED, feed.version))  # no way round it
        with pytest.raises(feedkit.IntegrityError, match="missing from the store"):
            feed.refresh()
        assert len(feed) == 100


def test_fenced_producer_never_overwrites_and_a_fresh_one_carries_on(
        s3_server: S3Server, tmp_path: Path) -> None:
    url = s3_server.url()
    first = feedkit.Producer(open_s3(s3_server, url), feed=FEED, primary_key="movie_id")
    second = feedkit.Producer(open_s3(s3_server, url), feed=FEED, primary_key="movie_id")
    v1 = first.publish(titles_table(100))
    assert second.restore().version == v1  # both now hold the same announcement ETag
    v2 = first.publish(titles_table(110))
    with pytest.raises(feedkit.ProducerFencedError):
        second.publish(titles_table(200))
    store = open_s3(s3_server, url)
    data, _ = store.read_if_changed(names.announcement_key(FEED))  # type: ignore[misc]
    assert json.loads(data)["version"] == v2
    first.close()
    second.close()

    with feedkit.Producer(open_s3(s3_server, url), feed=FEED, primary_key="movie_id") as fresh:
        v3 = fresh.publish(titles_table(120))
        m = json.loads(store.get_bytes(names.manifest_key(FEED, v3)))
        assert m["parent"] == v2 and m["delta"] is not None
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.version == v3 and len(feed) == 120


def test_a_producer_dying_before_the_announcement_leaves_consumers_untouched(
        s3_server: S3Server, tmp_path: Path) -> None:
    url = s3_server.url()
    store = open_s3(s3_server, url)
    with feedkit.Producer(store, feed=FEED, primary_key="movie_id") as producer:
        v1 = producer.publish(titles_table(100))
    # A producer process killed right after it wrote its blobs and manifest.
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        import feedkit
        from feedkit.store.s3 import S3Store
        from tests.conftest import titles_table

        class DiesAfterTheManifest(S3Store):
            def put_new_bytes(self, key, data):
                super().put_new_bytes(key, data)
                if key.endswith(".json"):
                    os._exit(9)

        store = DiesAfterTheManifest({BUCKET!r}, {url.split('/', 3)[3]!r},
                                     endpoint_url={s3_server.endpoint!r})
        feedkit.Producer(store, feed={FEED!r}, primary_key="movie_id").publish(
            titles_table(150))
    """)
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert died.returncode == 9, died.stderr
    manifests = store.list(names.manifests_prefix(FEED))
    assert len(manifests) == 2  # the orphan's manifest is there, not announced
    with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache", watch=False) as feed:
        assert feed.version == v1 and len(feed) == 100
        with feedkit.Producer(open_s3(s3_server, url), feed=FEED,
                              primary_key="movie_id") as again:
            v2 = again.publish(titles_table(130))
        assert feed.refresh() and feed.version == v2 and len(feed) == 130


def test_stalled_server_consumers_keep_serving_then_catch_up(s3_server: S3Server,
                                                               tmp_path: Path) -> None:
    if not s3_server.can_stall:
        pytest.skip("needs our own server process to SIGSTOP")
    url = s3_server.url()
    store = open_s3(s3_server, url, read_timeout=1.0, connect_timeout=1.0, max_attempts=1)
    with feedkit.Producer(open_s3(s3_server, url), feed=FEED, primary_key="movie_id") as producer:
        producer.publish(titles_table(100))
        with feedkit.Consumer(store, feed=FEED, cache_dir=tmp_path / "cache",
                              poll_interval=0.2, max_backoff=0.5) as feed:
            s3_server.stall()
            try:
                started = time.monotonic()
                with pytest.raises(feedkit.StoreError, match="timed out"):
                    feed.refresh()
                assert time.monotonic() - started < 30  # bounded by the timeouts, no hang
                for key in range(100):  # lookups never wait for the store
                    assert feed.get(key).title == f"title {key}"
                assert isinstance(feed.last_error, feedkit.StoreError)
            finally:
                s3_server.resume()
            version = producer.publish(titles_table(140))
            deadline = time.monotonic() + 30
            while feed.version != version and time.monotonic() < deadline:
                time.sleep(0.05)
            assert feed.version == version and len(feed) == 140
