"""Freshness a user can watch: staleness, commit-to-announce, the plan of each cycle, in
Daemon.metrics(), the log and the daemon's Prometheus port (a real HTTP scrape)."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyiceberg.expressions import EqualTo

from feedkit.errors import ConfigurationError
from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon
from feedkit.producer.freshness import Freshness

from ..conftest import titles_table
from .test_daemon import FEED, TABLE, announced, feed_entry, write_config


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def scrape(address: tuple[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{address[1]}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def with_metrics(path: Path, port: int = 0) -> Path:
    path.write_text(path.read_text() + f"\n[metrics]\nport = {port}\naddress = \"127.0.0.1\"\n")
    return path


def test_freshness_counts_and_histogram() -> None:
    f = Freshness()
    assert f.as_dict()["staleness_seconds"] == 0.0
    f.pending(100.0)
    assert f.as_dict(now=130.0)["staleness_seconds"] == 30.0
    f.planned("full", "first", "no version yet")
    assert f.announced(now=100.7) == pytest.approx(0.7)
    f.pending(200.0)
    f.planned("files", "", "delete: 1 data file(s) added")
    assert f.announced(now=203.0) == pytest.approx(3.0)
    f.caught_up()
    d = f.as_dict(now=500.0)
    assert d["staleness_seconds"] == 0.0 and d["pending_since"] is None
    h = d["commit_to_announce"]
    assert h["count"] == 2 and h["sum"] == pytest.approx(3.7) and h["last"] == pytest.approx(3.0)
    assert h["buckets"][0.5] == 0 and h["buckets"][1.0] == 1 and h["buckets"][5.0] == 2
    assert d["plans"] == {"full": 1, "files": 1} and d["full_reads"] == {"first": 1}
    assert d["last_plan"] == {"kind": "files", "cause": "", "reason": "delete: 1 data file(s) added"}


def test_the_daemon_reports_freshness_on_its_metrics_port(tmp_path: Path, catalog: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="feedkit.producer.daemon")
    data = titles_table(400)
    table = catalog.create_table(TABLE, schema=data.schema)
    with table.update_spec() as spec:
        spec.add_identity("country")
    table.append(data)
    config = load_config(with_metrics(write_config(tmp_path, [feed_entry(
        max_change_ratio=0.5)])))
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        first = wait_for(lambda: announced(tmp_path), "the first version")
        address = wait_for(lambda: daemon.metrics_address, "the metrics port")
        m = scrape(address)
        feed = (("feed", FEED),)
        assert m[("feedkit_feed_staleness_seconds", feed)] == 0.0
        assert m[("feedkit_feed_commit_to_announce_seconds_count", feed)] == 1
        assert m[("feedkit_daemon_full_reads_total", (("cause", "first"), *feed))] == 1

        # A partition overwrite: a file diff, announced; its latency is counted.
        table.overwrite(data.filter(pa.compute.equal(data["country"], "DE")).set_column(
            1, "title", pa.array(["new"] * 100)), overwrite_filter=EqualTo("country", "DE"))
        wait_for(lambda: (announced(tmp_path) or 0) > first, "the overwrite's version")
        m = wait_for(lambda: (s := scrape(address))[(
            "feedkit_feed_commit_to_announce_seconds_count", feed)] == 2 and s, "the count")
        assert m[("feedkit_daemon_plans_total", (("feed", FEED), ("kind", "files")))] == 1
        assert m[("feedkit_feed_staleness_seconds", feed)] == 0.0
        assert m[("feedkit_feed_commit_to_announce_seconds_sum", feed)] > 0
        assert "event=announced feed=muse.titles" in caplog.text and "plan=files" in caplog.text
        fresh = daemon.metrics()[FEED]["freshness"]
        assert fresh["last_plan"]["kind"] == "files" and fresh["commit_to_announce"]["count"] == 2

        # A change the validators refuse: nothing announced, the feed goes stale.
        table.overwrite(titles_table(400, seed=9).set_column(
            1, "title", pa.array(["all new"] * 400)))
        wait_for(lambda: daemon.metrics()[FEED]["cycles"]["refused"] >= 1, "a refusal")
        stale = scrape(address)[("feedkit_feed_staleness_seconds", feed)]
        time.sleep(0.3)
        assert scrape(address)[("feedkit_feed_staleness_seconds", feed)] > stale > 0
    finally:
        daemon.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    with pytest.raises(OSError):  # closed with the daemon
        urllib.request.urlopen(f"http://127.0.0.1:{address[1]}/metrics", timeout=2)


def test_a_bad_metrics_section_is_a_configuration_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, [feed_entry()])
    path.write_text(path.read_text() + "\n[metrics]\nport = 70000\n")
    with pytest.raises(ConfigurationError, match="metrics.port must be 0..65535"):
        load_config(path)
    path.write_text(path.read_text().replace("port = 70000", "prt = 1"))
    with pytest.raises(ConfigurationError, match="unknown key metrics.prt"):
        load_config(path)
