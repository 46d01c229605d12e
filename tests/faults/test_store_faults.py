"""The store unreachable, stalled, or answering 503 / 403: consumers reach the S3 server
(moto's, or FEEDKIT_S3_ENDPOINT) through a fault-injecting proxy on loopback. They keep
serving the last good version with zero wrong answers and catch up once the store is
back; the producer writes to the server directly."""

from __future__ import annotations

import contextlib
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
from tests.faults.proxy import FaultProxy
from tests.s3server import S3Server

EXPECTED = {
    "unreachable": feedkit.StoreError,
    "stalled": feedkit.StoreError,
    "503": feedkit.StoreError,
    "403": feedkit.AccessDeniedError,
}


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_server.endpoint)
    yield p
    p.close()


@pytest.mark.parametrize("fault", list(EXPECTED))
def test_consumers_ride_out_a_store_outage(tmp_path: Path, s3_server: S3Server,
                                           proxy: FaultProxy, fault: str) -> None:
    url = s3_server.url()
    direct = feedkit.open_store(url, endpoint_url=s3_server.endpoint)
    feed = Feed(tmp_path, store=direct)
    through = feedkit.open_store(url, endpoint_url=proxy.endpoint, read_timeout=1.0,
                                 connect_timeout=1.0, max_attempts=1)
    feed.publish(1)
    v2 = feed.publish(2)
    consumer = feedkit.Consumer(through, feed=FEED, cache_dir=tmp_path / "cache",
                                poll_interval=0.1, max_backoff=0.4).open()
    threads = ThreadReaders(consumer)
    proc = ProcessReader(url, tmp_path / "cache", tmp_path, endpoint_url=proxy.endpoint)
    reports = lambda: [*threads.reports, proc.report()]  # noqa: E731
    try:
        wait_until(lambda: serving(reports, v2), 60, f"consumers serving {v2}")
        if fault == "unreachable":
            proxy.stop()
        else:
            proxy.set_mode({"stalled": "stall"}.get(fault, fault))
        v3 = feed.publish(3)
        wait_until(lambda: isinstance(consumer.last_error, EXPECTED[fault])
                   and (proc.report() or threads.reports[0]).last_error is not None,
                   30, f"both consumers to see the store {fault}")
        assert consumer.version == v2 and serving(reports, v2)
        assert proxy.endpoint.split("//")[1] in str(consumer.last_error) or \
            url.split("//")[1] in str(consumer.last_error)
        time.sleep(0.5)  # a few more failed polls while readers keep checking
        assert consumer.version == v2
        if fault == "unreachable":
            proxy.start()
        else:
            proxy.set_mode("pass")
        wait_until(lambda: serving(reports, v3), 30, f"consumers serving {v3}")
    finally:
        proxy.set_mode("pass")
        thread_reports = threads.stop()
        proc_report = proc.stop()
        consumer.close()
        through.close()
        with contextlib.suppress(Exception):
            feed.close()
    check_reports([*thread_reports, proc_report], feed.gen_of)
