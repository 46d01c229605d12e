"""The per-thread deadline (feedkit.store.deadline), and S3Store honouring it against an
S3 server that stops answering: our own moto server process, SIGSTOPped.

The store is opened with its default timeouts (connect 5 s, read 20 s, 4 retries): without
a deadline a stalled call would take up to 100 s; under ``deadline(2)`` it must end soon
after 2 s with StoreTimeoutError naming the bucket and key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import feedkit
from feedkit.store.deadline import StoreTimeoutError, check, current, deadline, remaining
from feedkit.store.s3 import MiB, S3Store

from ..s3server import S3Server, own_moto

# A stalled call ends at the deadline plus scheduling noise; far below one read timeout.
MARGIN = 2.5

# -- the deadline itself --------------------------------------------------------------------


def test_no_deadline_by_default() -> None:
    assert remaining() is None and current() is None
    check("anything")  # no deadline: nothing to pass
    with deadline(None) as active:
        assert active is None and remaining() is None


def test_remaining_counts_down_and_check_raises_once_passed() -> None:
    with deadline(0.3, what="feed 'titles': refresh") as active:
        assert active is not None and active.what == "feed 'titles': refresh"
        left = remaining()
        assert left is not None and 0.0 < left <= 0.3
        check("reading the announcement")
        time.sleep(0.4)
        assert remaining() == 0.0
        with pytest.raises(StoreTimeoutError) as info:
            check("reading s3://bucket/titles/announced.json")
    message = str(info.value)
    assert "reading s3://bucket/titles/announced.json" in message
    assert "feed 'titles': refresh" in message and "0.3 s" in message and "passed" in message
    assert isinstance(info.value, feedkit.StoreError)
    assert isinstance(info.value, feedkit.StoreTimeoutError)
    assert remaining() is None  # the block's end clears it


def test_nested_deadlines_the_earlier_one_wins() -> None:
    with deadline(0.5, what="outer"):
        with deadline(60, what="inner") as active:
            # A longer inner budget cannot extend the outer one.
            assert active is not None and active.what == "outer"
            left = remaining()
            assert left is not None and left <= 0.5
        with deadline(0.1, what="inner") as active:
            # A shorter one shortens it, for the inner block only.
            assert active is not None and active.what == "inner"
            left = remaining()
            assert left is not None and left <= 0.1
            time.sleep(0.15)
            with pytest.raises(StoreTimeoutError, match="inner"):
                check("x")
        left = remaining()
        assert left is not None and 0.1 < left <= 0.5  # the outer one is back, untouched
        check("x")
        with deadline(None) as active:  # None adds nothing, and keeps the outer one
            assert active is not None and active.what == "outer"
    assert remaining() is None


def test_a_deadline_is_restored_when_its_block_raises() -> None:
    with deadline(30, what="outer"):
        with pytest.raises(KeyError), deadline(1, what="inner"):
            raise KeyError("x")
        active = current()
        assert active is not None and active.what == "outer"
    assert current() is None


def test_a_deadline_belongs_to_its_thread() -> None:
    seen: list[float | None] = []
    with deadline(5):
        t = threading.Thread(target=lambda: seen.append(remaining()))
        t.start()
        t.join()
        assert remaining() is not None
    assert seen == [None]


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_a_deadline_must_be_positive(seconds: float) -> None:
    with pytest.raises(feedkit.ConfigurationError, match="positive"), deadline(seconds):
        pass


def test_the_deadline_module_imports_nothing_heavy() -> None:
    code = textwrap.dedent("""
        import sys
        import feedkit.store.deadline
        heavy = sorted(m for m in ("boto3", "botocore", "pyarrow", "pyiceberg")
                       if m in sys.modules)
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- S3Store under a deadline, against a stalled server --------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    """Our own moto server process: these tests SIGSTOP it, so it is not the session's."""
    with own_moto() as server:
        yield server


@pytest.fixture(scope="module")
def stocked(moto: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    """A store with default timeouts and retries, holding a few objects."""
    store = feedkit.open_store(moto.url(), endpoint_url=moto.endpoint)
    assert isinstance(store, S3Store)
    assert (store.read_timeout, store.connect_timeout, store.max_attempts) == (20.0, 5.0, 4)
    blob = tmp_path_factory.mktemp("blobs") / "big.bin"
    blob.write_bytes(os.urandom(32 * MiB))
    store.put_new("titles/snapshots/big.snapshot.zst", blob)
    store.put_new_bytes("titles/announced.json", b'{"version": 1}')
    for i in range(3):
        store.put_new_bytes(f"titles/versions/{i:020d}.json", b"{}")
    yield store
    store.close()


def _ops(store: S3Store, tmp: Path) -> dict[str, Callable[[], Any]]:
    small = tmp / "small.bin"
    small.write_bytes(b"x" * 1000)
    return {
        "get_bytes": lambda: store.get_bytes("titles/announced.json"),
        "read_if_changed": lambda: store.read_if_changed("titles/announced.json"),
        "download": lambda: store.download("titles/snapshots/big.snapshot.zst", tmp / "out"),
        "list": lambda: store.list("titles/versions/"),
        "put_new": lambda: store.put_new(f"titles/deltas/{time.monotonic_ns()}.delta.zst",
                                         small),
        "exists": lambda: store.exists("titles/announced.json"),
    }


@pytest.mark.parametrize("op", ["get_bytes", "read_if_changed", "download", "list", "put_new",
                                "exists"])
def test_a_stalled_call_ends_at_the_deadline(moto: S3Server, stocked: S3Store, tmp_path: Path,
                                             op: str) -> None:
    call = _ops(stocked, tmp_path)[op]
    call()  # answers while the server runs (and leaves a pooled connection to reuse)
    moto.stall()
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError) as info, deadline(2, what="the test's refresh"):
            call()
        took = time.monotonic() - started
    finally:
        moto.resume()
    assert took < 2 + MARGIN, f"{op} took {took:.1f} s under a 2 s deadline"
    message = str(info.value)
    assert stocked.url in message and "s3://" in message and "titles/" in message, message
    assert "deadline of the test's refresh (2 s) passed" in message, message
    call()  # and the store works again once the server answers


def test_no_attempt_starts_after_the_deadline(stocked: S3Store) -> None:
    sent: list[str] = []

    def count(**_: Any) -> None:
        sent.append("request")

    stocked.client.meta.events.register("before-send.s3", count)
    try:
        with deadline(0.05, what="a short budget"):
            time.sleep(0.1)
            with pytest.raises(StoreTimeoutError, match="titles/announced.json"):
                stocked.get_bytes("titles/announced.json")
        assert sent == []
        stocked.get_bytes("titles/announced.json")
        assert sent == ["request"]
    finally:
        stocked.client.meta.events.unregister("before-send.s3", count)


def test_a_download_stalled_in_mid_body_ends_at_the_deadline(moto: S3Server, stocked: S3Store,
                                                             tmp_path: Path) -> None:
    # The download writes into a pipe we read: after its first 2 MiB we stall the server,
    # so the rest of the 32 MiB blob never comes (socket buffers hold far less).
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = [0]

    def reader() -> None:
        with open(fifo, "rb") as f:
            while chunk := f.read(64 * 1024):
                got[0] += len(chunk)
                if got[0] >= 2 * MiB and not stalled.is_set():
                    moto.stall()
                    stalled.set()

    stalled = threading.Event()
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError) as info, deadline(4, what="a download"):
            stocked.download("titles/snapshots/big.snapshot.zst", fifo)
        took = time.monotonic() - started
    finally:
        moto.resume()
        t.join(timeout=30)
    assert stalled.is_set()
    assert took < 4 + MARGIN, f"took {took:.1f} s under a 4 s deadline"
    assert "big.snapshot.zst" in str(info.value) and "deadline" in str(info.value)
    assert got[0] < 32 * MiB


def test_without_a_deadline_calls_are_unchanged(stocked: S3Store, tmp_path: Path) -> None:
    # Plain calls use the store's own client; a deadline with time to spare does too.
    assert stocked.get_bytes("titles/announced.json") == b'{"version": 1}'
    with deadline(30):
        assert stocked.download("titles/snapshots/big.snapshot.zst", tmp_path / "b") == 32 * MiB
        assert len(stocked.list("titles/versions/")) == 3
        assert stocked.read_if_changed("titles/announced.json") is not None


def test_without_a_deadline_a_stalled_call_is_retried_as_before(moto: S3Server) -> None:
    # max_attempts keeps botocore's meaning: retries after the first attempt.
    store = feedkit.open_store(moto.url(), endpoint_url=moto.endpoint, read_timeout=0.5,
                               max_attempts=2)
    assert isinstance(store, S3Store)
    store.put_new_bytes("titles/announced.json", b"{}")
    sent: list[str] = []

    def count(**_: Any) -> None:
        sent.append("request")

    store.client.meta.events.register("before-send.s3", count)
    moto.stall()
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match="timed out reading"):
            store.get_bytes("titles/announced.json")
        took = time.monotonic() - started
    finally:
        moto.resume()
        store.close()
    assert len(sent) == 3, sent
    assert 1.5 <= took < 1.5 + MARGIN, took
