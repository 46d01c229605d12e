"""A Consumer inherited through fork keeps following its feed; one sent to a spawned
process says what to do instead."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import select
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import feedkit
from tests.conftest import titles_table


def _publish(producer: Any, n: int) -> int:
    version = producer.publish(titles_table(n))
    assert version is not None
    return version


def _child(fn: Any) -> tuple[int, int]:
    """Fork; run ``fn()`` in the child and send its JSON result up a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(r)
            out = fn()
            os.write(w, json.dumps(out).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _result(pid: int, r: int, timeout: float = 30) -> dict[str, Any]:
    ready, _, _ = select.select([r], [], [], timeout)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the child did not answer (deadlocked?)")
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    out: dict[str, Any] = json.loads(b"".join(chunks))
    assert "error" not in out, out["error"]
    return out


def _wait_for(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_a_forked_child_keeps_following_the_feed(store: feedkit.BlobStore, tmp_path: Path) -> None:
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    v1 = _publish(producer, 100)
    # A poll too slow for the test: the child must move through its own file-system watch.
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          poll_interval=60) as feed:
        go_r, go_w = os.pipe()

        def in_child() -> dict[str, Any]:
            assert feed.version == v1
            os.close(go_w)
            os.read(go_r, 1)  # the parent published v2
            moved = _wait_for(lambda: feed.version != v1, 10)
            m = feed.metrics()
            return {"moved": moved, "version": feed.version, "records": len(feed),
                    "title": feed.get(150).title if feed.get(150) else None,
                    "versions_behind": m["versions_behind"], "lag": m["lag_seconds"],
                    "announced": m["announced_version"], "healthy": feed.health().ok,
                    "pid": feed.health().pid}

        pid, r = _child(in_child)
        os.close(go_r)
        v2 = _publish(producer, 200)
        os.write(go_w, b"x")
        os.close(go_w)
        out = _result(pid, r)
        assert out["moved"], out
        assert (out["version"], out["records"], out["title"]) == (v2, 200, "title 150")
        assert out["announced"] == v2 and out["versions_behind"] == 0 and out["lag"] == 0.0
        assert out["healthy"] and out["pid"] == pid
        # The parent is unaffected and follows on its own.
        assert _wait_for(lambda: feed.version == v2, 10)
    producer.close()


def test_a_child_forked_while_the_refresher_holds_the_lock(store: feedkit.BlobStore,
                                                           tmp_path: Path) -> None:
    """A listener runs on the refresher with the consumer's lock held: fork right then."""
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    _publish(producer, 100)
    in_listener, release = threading.Event(), threading.Event()
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          poll_interval=0.1) as feed:

        @feed.on_refresh
        def slow(old: int | None, new: int) -> None:
            in_listener.set()
            release.wait(10)

        v2 = _publish(producer, 120)
        assert in_listener.wait(10)

        def in_child() -> dict[str, Any]:
            feed.refresh()  # deadlocked here before: the parent's refresher held the lock
            return {"version": feed.version}

        pid, r = _child(in_child)
        try:
            assert _result(pid, r, timeout=20)["version"] == v2
        finally:
            release.set()
    producer.close()


_INHERITED: Any = None  # a pool's fork workers see module globals as they were at fork


def _child_sees(wanted: int) -> tuple[int, int]:
    _wait_for(lambda: _INHERITED.version == wanted, 10)
    return os.getpid(), _INHERITED.version


def test_multiprocessing_fork_children_follow(store: feedkit.BlobStore, tmp_path: Path) -> None:
    global _INHERITED
    producer = feedkit.Producer(store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    _publish(producer, 100)
    ctx = multiprocessing.get_context("fork")
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          poll_interval=0.2) as feed:
        _INHERITED = feed
        try:
            with ctx.Pool(2) as pool:
                pids = set(pool.map(_pid, range(8)))  # the workers exist before v2
                v2 = _publish(producer, 130)
                # Each worker inherited `feed` at fork and must see v2 on its own.
                seen = pool.map(_child_sees, [v2] * 8)
                assert {version for _, version in seen} == {v2}, seen
                assert {pid for pid, _ in seen} <= pids
        finally:
            _INHERITED = None
        assert _wait_for(lambda: feed.version == v2, 10)
    producer.close()


def _pid(_: int) -> int:
    time.sleep(0.05)
    return os.getpid()


def test_a_consumer_sent_to_a_spawned_process_says_what_to_do(store: feedkit.BlobStore,
                                                              tmp_path: Path) -> None:
    feedkit.Producer(store, feed="titles", primary_key="movie_id",
                     work_dir=tmp_path / "work").publish(titles_table(10))
    with feedkit.Consumer(store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        with pytest.raises(feedkit.ConfigurationError, match="open a Consumer in that process"):
            pickle.dumps(feed)
        proc = multiprocessing.get_context("spawn").Process(target=len, args=(feed,))
        with pytest.raises(feedkit.ConfigurationError, match="same cache_dir"):
            proc.start()


def test_a_forked_child_on_s3_uses_connections_of_its_own(s3_store: feedkit.BlobStore,
                                                          tmp_path: Path) -> None:
    producer = feedkit.Producer(s3_store, feed="titles", primary_key="movie_id",
                                work_dir=tmp_path / "work")
    v1 = _publish(producer, 50)
    with feedkit.Consumer(s3_store, feed="titles", cache_dir=tmp_path / "cache",
                          watch=False) as feed:
        go_r, go_w = os.pipe()

        def in_child() -> dict[str, Any]:
            os.close(go_w)
            os.read(go_r, 1)
            versions = []
            for _ in range(20):  # interleaved with the parent's requests on its own pool
                feed.refresh()
                versions.append(feed.version)
            return {"versions": versions}

        pid, r = _child(in_child)
        os.close(go_r)
        v2 = _publish(producer, 60)
        os.write(go_w, b"x")
        os.close(go_w)
        for _ in range(20):
            feed.refresh()
        out = _result(pid, r)
        assert set(out["versions"]) == {v2} and feed.version == v2 and v1 != v2
    producer.close()
