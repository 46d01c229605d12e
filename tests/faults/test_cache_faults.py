"""The consumers' cache folder full (ENOSPC) or read-only (EROFS), for real: a small tmpfs
mounted for the test (root only; skipped elsewhere). Consumers keep serving the last
good version with zero wrong answers, and catch up once there is room again."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import feedkit
from tests.faults.harness import (
    FEED,
    Feed,
    ProcessReader,
    ThreadReaders,
    check_reports,
    serving,
    wait_until,
)
from tests.tmpfs import fill, mounted_tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted at ``tmp_path / "cache"``."""
    with mounted_tmpfs(tmp_path / "cache", "2m") as mount:
        yield mount


def remount(folder: Path, mode: str) -> None:
    for _ in range(50):
        done = subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(0.1)  # busy: a file open for writing in a refresh
    raise AssertionError(f"remount {mode} failed: {done.stderr}")


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_cache_folder_full_or_read_only(tmp_path: Path, small_fs: Path, fault: str) -> None:
    feed = Feed(tmp_path)
    feed.publish(1)
    v2 = feed.publish(2)
    consumer = feedkit.Consumer(feed.store, feed=FEED, cache_dir=small_fs, poll_interval=0.1,
                                max_backoff=0.4).open()
    threads = ThreadReaders(consumer)
    proc = ProcessReader(feed.url, small_fs, tmp_path)
    reports = lambda: [*threads.reports, proc.report()]  # noqa: E731
    try:
        wait_until(lambda: serving(reports, v2), 60, f"consumers serving {v2}")
        ballast = fill(small_fs) if fault == "full" else None
        if fault == "read-only":
            remount(small_fs, "ro")
        v3 = feed.publish(3)
        wait_until(lambda: isinstance(consumer.last_error, feedkit.StoreError)
                   and (proc.report() or threads.reports[0]).last_error is not None,
                   30, "both consumers to fail on the cache folder")
        message = str(consumer.last_error)
        assert str(small_fs) in message and FEED in message
        assert ("No space left" in message) if fault == "full" else ("Read-only" in message)
        time.sleep(0.5)
        assert consumer.version == v2 and serving(reports, v2)
        if ballast is not None:
            ballast.unlink()
        else:
            remount(small_fs, "rw")
        wait_until(lambda: serving(reports, v3), 30, f"consumers serving {v3}")
    finally:
        thread_reports = threads.stop()
        proc_report = proc.stop()
        consumer.close()
        with contextlib.suppress(Exception):
            feed.close()
    check_reports([*thread_reports, proc_report], feed.gen_of)
    # The failed attempts left no scratch file of this process behind.
    assert not list((small_fs / FEED).glob(f".*.{os.getpid()}.part"))
