"""Damaged, missing and lying objects in the store: consumers (two reader threads on one
consumer here, and a consumer in a separate process sharing its cache folder) keep
serving the last good version with zero wrong answers, then catch up on their own once
the fault is cleared (or at once, when another path avoids it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import feedkit
from tests.faults.harness import (
    FEED,
    Fault,
    Feed,
    ProcessReader,
    ThreadReaders,
    check_reports,
    drop,
    flip,
    rewrite_manifest,
    serving,
    truncate,
    wait_until,
)


def flip_in(marker: bytes, offset: int) -> Fault:
    """Flip one byte ``offset`` bytes after the first ``marker``."""
    def apply(key: str, data: bytes) -> bytes:
        i = data.index(marker) + len(marker) + offset
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
    return apply


def lie(blob: str, field: str, value: Any) -> Fault:
    def edit(doc: dict[str, Any]) -> None:
        doc[blob][field] = value(doc[blob][field]) if callable(value) else value
    return rewrite_manifest(edit)


@dataclass
class Case:
    target: str  # the object the fault applies to: delta, snapshot or manifest
    fault: Fault
    extra: bool = False  # generation 3 gets a new column: a snapshot without a delta
    snapshot_every: int = 100
    tolerated: bool = False  # consumers reach generation 3 despite the fault


CASES = {
    "delta-flipped-byte": Case("delta", flip(0.6)),
    "delta-truncated": Case("delta", truncate(0.5)),
    "snapshot-flipped-byte": Case("snapshot", flip(0.6), extra=True),
    "snapshot-truncated": Case("snapshot", truncate(0.7), extra=True),
    "manifest-flipped-byte-in-a-checksum": Case("manifest", flip_in(b'"sha256": "', 10)),
    "manifest-flipped-byte-in-a-count": Case("manifest", flip_in(b'"record_count": ', 0)),
    "manifest-truncated": Case("manifest", truncate(0.5)),
    "manifest-lies-about-the-checksum": Case("manifest", lie("delta", "sha256", "0" * 64)),
    "manifest-lies-about-the-size": Case("manifest", lie("delta", "size", lambda n: n + 1)),
    "manifest-lies-about-the-raw-size": Case("manifest",
                                             lie("delta", "raw_size", lambda n: n - 64)),
    "missing-snapshot": Case("snapshot", drop(), extra=True),
    "missing-delta-without-a-later-snapshot": Case("delta", drop()),
    # Generation 3 has a snapshot and a delta (snapshot_every=2): without its delta,
    # consumers take the snapshot.
    "missing-delta-with-a-snapshot": Case("delta", drop(), snapshot_every=2, tolerated=True),
}


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    f = Feed(tmp_path)
    yield f
    f.close()


def start_consumers(feed: Feed, tmp: Path) -> tuple[feedkit.Consumer, ThreadReaders, ProcessReader]:
    consumer = feedkit.Consumer(feed.store, feed=FEED, cache_dir=tmp / "cache",
                                poll_interval=0.1, max_backoff=0.4).open()
    return consumer, ThreadReaders(consumer), ProcessReader(feed.url, tmp / "cache", tmp)


@pytest.mark.parametrize("name", list(CASES))
def test_consumers_keep_the_last_good_version_then_catch_up(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    feed = Feed(tmp_path, snapshot_every=case.snapshot_every)
    try:
        feed.publish(1)
        v2 = feed.publish(2)
        consumer, threads, proc = start_consumers(feed, tmp_path)
        reports = lambda: [*threads.reports, proc.report()]  # noqa: E731
        try:
            wait_until(lambda: serving(reports, v2), 60, f"consumers serving {v2}")
            v3 = feed.publish(3, extra=case.extra, target=case.target, fault=case.fault)
            if not case.tolerated:
                # Both consumers have tried version 3 and failed; answers are still checked.
                wait_until(lambda: consumer.last_error is not None
                           and (proc.report() or threads.reports[0]).last_error is not None,
                           30, "both consumers to fail on the damaged version")
                time.sleep(0.5)  # a few more retries
                assert consumer.version == v2
                assert serving(reports, v2)
                assert isinstance(consumer.last_error, feedkit.FeedkitError)
                feed.repair()
            wait_until(lambda: serving(reports, v3), 30, f"consumers serving {v3}")
            assert consumer.version == v3
        finally:
            thread_reports = threads.stop()
            proc_report = proc.stop()
            consumer.close()
        lookups = check_reports([*thread_reports, proc_report], feed.gen_of)
        assert lookups > 0 and proc_report.lookups > 0
        assert proc_report.versions[-1] == v3
    finally:
        feed.close()


def test_an_announcement_naming_a_missing_version(feed: Feed, tmp_path: Path) -> None:
    feed.publish(1)
    v2 = feed.publish(2)
    consumer, threads, proc = start_consumers(feed, tmp_path)
    reports = lambda: [*threads.reports, proc.report()]  # noqa: E731
    try:
        wait_until(lambda: serving(reports, v2), 60, f"consumers serving {v2}")
        feed.announce(v2 + 1000)  # no manifest, no blobs
        wait_until(lambda: isinstance(consumer.last_error, feedkit.VersionNotFoundError)
                   and (proc.report() or threads.reports[0]).last_error is not None,
                   30, "both consumers to fail on the missing version")
        assert consumer.version == v2 and str(v2 + 1000) in str(consumer.last_error)
        v3 = feed.publish(3)  # the producer announces a real version again
        wait_until(lambda: serving(reports, v3), 30, f"consumers serving {v3}")
    finally:
        thread_reports = threads.stop()
        proc_report = proc.stop()
        consumer.close()
    check_reports([*thread_reports, proc_report], feed.gen_of)
