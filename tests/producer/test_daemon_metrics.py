"""Daemon.metrics(): per-feed producer metrics that outlive the daemon's producers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import feedkit.metrics
from feedkit.producer.config import load_config
from feedkit.producer.daemon import Daemon

from ..conftest import titles_table
from .conftest import create_table
from .test_daemon import FEED, TABLE, announced, feed_entry, write_config


def test_daemon_metrics_count_cycles_and_checks_across_producers(tmp_path: Path,
                                                                 catalog: Any) -> None:
    create_table(catalog, TABLE, titles_table(2000))
    daemon = Daemon(load_config(write_config(tmp_path, [feed_entry(min_records=1500)])))
    registry = CollectorRegistry()
    feedkit.metrics.register(daemon, registry=registry)
    assert daemon.metrics()[FEED]["cycles"]["published"] == 0  # before any check

    assert daemon.once() == 0  # publishes, then closes the feed's producer
    m = daemon.metrics()[FEED]
    assert m["version"] == announced(tmp_path) and m["record_count"] == 2000
    assert m["cycles"]["published"] == 1 and m["checks"] == {"published": 1}
    assert m["rows_read"]["total"] == 2000 and m["last_check"] == "published"

    catalog.load_table(TABLE).delete("movie_id >= 1000")
    assert daemon.once() == 1  # refused by min_records, with a new producer
    assert daemon.once() == 0  # the refused position is not read again
    m = daemon.metrics()[FEED]
    assert m["cycles"]["published"] == 1 and m["cycles"]["refused"] == 1
    assert m["refusals"] == {"min_records": 1}
    assert m["checks"] == {"published": 1, "refused": 1, "idle": 1}
    assert m["rows_read"]["total"] == 3000 and m["consecutive_failures"] == 0

    text = generate_latest(registry).decode()
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("feedkit_daemon_checks_total",
                    frozenset({"feed": FEED, "outcome": "refused"}.items()))] == 1
    assert samples[("feedkit_producer_cycles_total",
                    frozenset({"feed": FEED, "result": "published"}.items()))] == 1
    assert samples[("feedkit_daemon_consecutive_failures", frozenset({"feed": FEED}.items()))] == 0
