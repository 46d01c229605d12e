"""Metrics: the timing accumulator behind ``metrics()``, and Prometheus collectors.

``Consumer.metrics()``, ``Producer.metrics()`` and ``Daemon.metrics()`` return plain
dicts and need nothing beyond feedkit's core. This module turns those dicts into
Prometheus metric families when Prometheus scrapes (a custom collector: nothing is
recorded twice, nothing is computed between scrapes)::

    import feedkit.metrics
    feedkit.metrics.register(consumer)            # prometheus_client.REGISTRY
    feedkit.metrics.register(producer, registry=my_registry)

Every family is labelled by ``feed``. prometheus_client is imported when a collector is
made, never at import time (the ``metrics`` extra: ``pip install 'feedkit[metrics]'``).
The metric names are listed in :data:`CONSUMER_METRICS` and :data:`PRODUCER_METRICS`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from feedkit.errors import ConfigurationError, NotInstalledError

__all__ = [
    "CONSUMER_METRICS",
    "PRODUCER_METRICS",
    "ConsumerCollector",
    "Durations",
    "Histogram",
    "ProducerCollector",
    "register",
    "unregister",
]


class Durations:
    """Count, sum, last and max of a timed operation, in seconds.

    Not locked: the owner updates and reads it under its own lock.
    """

    __slots__ = ("count", "last", "max", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = self.last = self.max = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        self.last = seconds
        self.max = max(self.max, seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.sum, "last": self.last, "max": self.max}


class Histogram:
    """Counts of observations at or under each upper bound, their count and sum.

    Not locked: the owner updates and reads it under its own lock.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def as_dict(self) -> dict[str, Any]:
        """``buckets`` {upper bound: cumulative count} (+Inf is ``count``), ``count``,
        ``sum``."""
        return {"buckets": dict(zip(self.bounds, self.counts, strict=True)),
                "count": self.count, "sum": self.sum}


# -- Prometheus ---------------------------------------------------------------------------

CONSUMER_METRICS = {
    "feedkit_consumer_version": "gauge: the version served",
    "feedkit_consumer_records": "gauge: records in the version served",
    "feedkit_consumer_announced_version": "gauge: the version last read from the announcement",
    "feedkit_consumer_pinned_version": "gauge: the pinned version (only while pinned)",
    "feedkit_consumer_versions_behind": "gauge: versions published after the served one, up "
                                        "to the announced one (absent while unknown)",
    "feedkit_consumer_staleness_seconds": "gauge: age of the announced version",
    "feedkit_consumer_lag_seconds": "gauge: 0 when serving the announced version, else the "
                                    "age of that announcement",
    "feedkit_consumer_refresh_total": "counter {result=success|failure}: refresh attempts",
    "feedkit_consumer_refresh_consecutive_failures": "gauge: failed refreshes in a row",
    "feedkit_consumer_updates_total": "counter: swaps to a new version",
    "feedkit_consumer_refresh_duration_seconds": "summary: time from a refresh's start to "
                                                 "serving the new version",
    "feedkit_consumer_refresh_last_duration_seconds": "gauge: the last such time",
    "feedkit_consumer_last_success_timestamp_seconds": "gauge: unix time of the last "
                                                       "successful refresh",
    "feedkit_consumer_listener_errors_total": "counter: refresh listeners that raised",
    "feedkit_consumer_lookups_total": "counter {method=get|get_many|find}: calls (get only "
                                      "with count_lookups=True)",
    "feedkit_consumer_get_many_keys_total": "counter: keys asked through get_many",
}

PRODUCER_METRICS = {
    "feedkit_producer_version": "gauge: the version last published or restored",
    "feedkit_producer_records": "gauge: records in the version last published",
    "feedkit_producer_cycles_total": "counter {result=published|unchanged|refused|pinned|"
                                     "failed}",
    "feedkit_producer_cycle_duration_seconds": "summary {step}: seconds per cycle step "
                                               "(encode, diff, write, validate, compress, "
                                               "upload, total)",
    "feedkit_producer_records_read_total": "counter: rows read from the input tables",
    "feedkit_producer_records_changed_total": "counter {change=added|changed|removed}: "
                                              "records changed by published versions",
    "feedkit_producer_bytes_written_total": "counter: bytes uploaded (blobs and manifests)",
    "feedkit_producer_refusals_total": "counter {rule}: refusals per rule",
    "feedkit_producer_last_publish_timestamp_seconds": "gauge: unix time of the last publish",
    "feedkit_daemon_checks_total": "counter {outcome}: the daemon's table checks",
    "feedkit_daemon_consecutive_failures": "gauge: the daemon's failed checks in a row",
    "feedkit_feed_staleness_seconds": "gauge: 0 while the feed reflects the table's current "
                                      "snapshot, else the age of the oldest Iceberg commit "
                                      "it does not (the daemon's feeds)",
    "feedkit_feed_commit_to_announce_seconds": "histogram: seconds from the oldest Iceberg "
                                               "commit a version takes in to its announce",
    "feedkit_daemon_plans_total": "counter {kind=append|files|full}: cycles by what they read",
    "feedkit_daemon_full_reads_total": "counter {cause}: whole-table reads by cause",
}


def _prometheus() -> Any:
    """The ``prometheus_client`` module.

    Raises:
        NotInstalledError: prometheus_client is not installed.
    """
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise NotInstalledError(
            "feedkit.metrics needs prometheus_client (the metrics extra): "
            "pip install 'feedkit[metrics]'") from exc
    return prometheus_client


class _Collector:
    """A prometheus_client custom collector over feedkit objects, weakly held."""

    def __init__(self, *objects: Any) -> None:
        self._core = _prometheus().core
        self._lock = threading.Lock()
        self._refs: list[weakref.ref[Any]] = []
        for obj in objects:
            self.add(obj)

    def add(self, obj: Any) -> None:
        """Collect ``obj``'s metrics too (it is held weakly: a dropped object disappears).

        Raises:
            ConfigurationError: ``obj`` has no ``metrics()``, or another object of the
                same feed is already collected (their series would clash).
        """
        if not callable(getattr(obj, "metrics", None)):
            raise ConfigurationError(f"cannot collect metrics of a {type(obj).__name__}")
        with self._lock:
            live = self._live()
            if any(o is obj for o in live):
                return
            feeds = {f for o in live for f in _feeds(o)}
            clash = feeds & set(_feeds(obj))
            if clash:
                raise ConfigurationError(
                    f"feed {sorted(clash)[0]!r} is already collected by this collector: "
                    "one object per feed (their series would clash)")
            self._refs.append(weakref.ref(obj))

    def remove(self, obj: Any) -> bool:
        """Stop collecting ``obj``; True when it was collected."""
        with self._lock:
            before = len(self._refs)
            self._refs = [r for r in self._refs if r() is not None and r() is not obj]
            return len(self._refs) < before

    def _live(self) -> list[Any]:
        objs = [r() for r in self._refs]
        return [o for o in objs if o is not None]

    def _gauge(self, dicts: list[dict[str, Any]], name: str, doc: str, key: str) -> Any:
        """A gauge family of ``m[key]`` per feed (feeds without a value are left out)."""
        family = self._core.GaugeMetricFamily(name, doc, labels=["feed"])
        for m in dicts:
            if m.get(key) is not None:
                family.add_metric([m["feed"]], m[key])
        return family

    def describe(self) -> list[Any]:
        """The families this collector yields, without samples (for name clash checks)."""
        return list(self._families([]))

    def collect(self) -> Iterator[Any]:
        """Families built from every collected object's ``metrics()``, now."""
        with self._lock:
            objs = self._live()
        dicts = [m for o in objs for m in _dicts(o.metrics())]
        yield from self._families(dicts)

    def _families(self, dicts: list[dict[str, Any]]) -> Iterable[Any]:
        raise NotImplementedError


def _dicts(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One metrics dict per feed: a producer's or consumer's, or each of a daemon's."""
    return [metrics] if isinstance(metrics.get("feed"), str) else list(metrics.values())


def _feeds(obj: Any) -> list[str]:
    return [m["feed"] for m in _dicts(obj.metrics())]


class ConsumerCollector(_Collector):
    """Prometheus families from ``Consumer.metrics()``, labelled by feed.

    Args:
        *consumers: consumers to collect (more with :meth:`add`).

    Raises:
        NotInstalledError: prometheus_client is not installed.
        ConfigurationError: two consumers of the same feed.
    """

    def _families(self, dicts: list[dict[str, Any]]) -> Iterable[Any]:
        core, feed = self._core, ["feed"]
        gauge = partial(self._gauge, dicts)

        yield gauge("feedkit_consumer_version", "The version served.", "version")
        yield gauge("feedkit_consumer_records", "Records in the version served.", "records")
        yield gauge("feedkit_consumer_announced_version",
                    "The version last read from the announcement.", "announced_version")
        yield gauge("feedkit_consumer_pinned_version", "The pinned version (while pinned).",
                    "pinned_version")
        yield gauge("feedkit_consumer_versions_behind",
                    "Versions published after the served one up to the announced one.",
                    "versions_behind")
        yield gauge("feedkit_consumer_staleness_seconds",
                    "Seconds since the announced version was announced.", "staleness_seconds")
        yield gauge("feedkit_consumer_lag_seconds", "0 when serving the announced version, "
                    "else seconds since it was announced.", "lag_seconds")
        refresh = core.CounterMetricFamily("feedkit_consumer_refresh", "Refresh attempts.",
                                           labels=["feed", "result"])
        for m in dicts:
            refresh.add_metric([m["feed"], "success"], m["refresh_successes"])
            refresh.add_metric([m["feed"], "failure"], m["refresh_failures"])
        yield refresh
        yield gauge("feedkit_consumer_refresh_consecutive_failures",
                    "Failed refreshes in a row.", "consecutive_failures")
        updates = core.CounterMetricFamily("feedkit_consumer_updates",
                                           "Swaps to a new version.", labels=feed)
        duration = core.SummaryMetricFamily(
            "feedkit_consumer_refresh_duration_seconds",
            "Seconds from the start of a refresh to serving the new version.", labels=feed)
        last = core.GaugeMetricFamily("feedkit_consumer_refresh_last_duration_seconds",
                                      "The last refresh's duration.", labels=feed)
        for m in dicts:
            d = m["refresh_seconds"]
            updates.add_metric([m["feed"]], m["updates"])
            duration.add_metric([m["feed"]], d["count"], d["sum"])
            if d["count"]:
                last.add_metric([m["feed"]], d["last"])
        yield from (updates, duration, last)
        yield gauge("feedkit_consumer_last_success_timestamp_seconds",
                    "Unix time of the last successful refresh.", "last_success_time")
        errors = core.CounterMetricFamily("feedkit_consumer_listener_errors",
                                          "Refresh listeners that raised.", labels=feed)
        lookups = core.CounterMetricFamily(
            "feedkit_consumer_lookups", "Lookup calls (get only with count_lookups=True).",
            labels=["feed", "method"])
        keys = core.CounterMetricFamily("feedkit_consumer_get_many_keys",
                                        "Keys asked through get_many.", labels=feed)
        for m in dicts:
            errors.add_metric([m["feed"]], m["listener_errors"])
            if m["lookups"] is not None:
                lookups.add_metric([m["feed"], "get"], m["lookups"])
            lookups.add_metric([m["feed"], "get_many"], m["get_many_calls"])
            lookups.add_metric([m["feed"], "find"], m["find_calls"])
            keys.add_metric([m["feed"]], m["get_many_keys"])
        yield from (errors, lookups, keys)


class ProducerCollector(_Collector):
    """Prometheus families from ``Producer.metrics()`` or ``Daemon.metrics()``, by feed.

    Args:
        *objects: producers or daemons to collect (more with :meth:`add`).

    Raises:
        NotInstalledError: prometheus_client is not installed.
        ConfigurationError: two objects publishing the same feed.
    """

    def _families(self, dicts: list[dict[str, Any]]) -> Iterable[Any]:
        core, feed = self._core, ["feed"]
        gauge = partial(self._gauge, dicts)

        def counter(name: str, doc: str, label: str, key: str,
                    of: list[dict[str, Any]] = dicts) -> Any:
            family = core.CounterMetricFamily(name, doc, labels=["feed", label])
            for m in of:
                for value, n in sorted(m.get(key, {}).items()):
                    family.add_metric([m["feed"], value], n)
            return family

        yield gauge("feedkit_producer_version", "The version last published or restored.",
                    "version")
        yield gauge("feedkit_producer_records", "Records in the version last published.",
                    "record_count")
        yield counter("feedkit_producer_cycles", "Cycles by result.", "result", "cycles")
        duration = core.SummaryMetricFamily("feedkit_producer_cycle_duration_seconds",
                                            "Seconds per cycle step.", labels=["feed", "step"])
        read = core.CounterMetricFamily("feedkit_producer_records_read",
                                        "Rows read from input tables.", labels=feed)
        changed = core.CounterMetricFamily(
            "feedkit_producer_records_changed", "Records changed by published versions.",
            labels=["feed", "change"])
        written = core.CounterMetricFamily("feedkit_producer_bytes_written",
                                           "Bytes uploaded (blobs and manifests).", labels=feed)
        for m in dicts:
            for step, d in sorted(m["step_seconds"].items()):
                duration.add_metric([m["feed"], step], d["count"], d["sum"])
            read.add_metric([m["feed"]], m["rows_read"]["total"])
            for change in ("added", "changed", "removed"):
                changed.add_metric([m["feed"], change], m[f"records_{change}"]["total"])
            written.add_metric([m["feed"]], m["bytes_written"]["total"])
        yield from (duration, read, changed, written)
        yield counter("feedkit_producer_refusals", "Refusals by rule.", "rule", "refusals")
        yield gauge("feedkit_producer_last_publish_timestamp_seconds",
                    "Unix time of the last publish.", "last_published_time")
        yield counter("feedkit_daemon_checks", "The daemon's table checks by outcome.",
                      "outcome", "checks")
        yield gauge("feedkit_daemon_consecutive_failures", "The daemon's failed checks in a row.",
                    "consecutive_failures")
        fresh = [dict(m["freshness"], feed=m["feed"]) for m in dicts if "freshness" in m]
        yield self._gauge(fresh, "feedkit_feed_staleness_seconds",
                          "0 while the feed reflects the table's current snapshot, else the "
                          "age of the oldest Iceberg commit it does not.", "staleness_seconds")
        latency = core.HistogramMetricFamily(
            "feedkit_feed_commit_to_announce_seconds",
            "Seconds from the oldest Iceberg commit a version takes in to its announce.",
            labels=feed)
        for m in fresh:
            h = m["commit_to_announce"]
            latency.add_metric([m["feed"]], [(repr(float(b)), n) for b, n in h["buckets"].items()]
                               + [("+Inf", h["count"])], h["sum"])
        yield latency
        yield counter("feedkit_daemon_plans", "Cycles by what they read.", "kind", "plans",
                      fresh)
        yield counter("feedkit_daemon_full_reads", "Whole-table reads by cause.", "cause",
                      "full_reads", fresh)


_registered: weakref.WeakKeyDictionary[Any, dict[str, _Collector]] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def _kind(obj: Any) -> str:
    from feedkit.consumer import Consumer

    if isinstance(obj, Consumer):
        return "consumer"
    if type(obj).__module__.startswith("feedkit.producer") and callable(
            getattr(obj, "metrics", None)):
        return "producer"
    raise ConfigurationError(f"cannot collect metrics of a {type(obj).__name__}: pass a "
                             "Consumer, Producer or producer Daemon")


def register(obj: Any, registry: Any = None) -> _Collector:
    """Export ``obj``'s metrics to a Prometheus registry.

    One :class:`ConsumerCollector` and one :class:`ProducerCollector` are kept per
    registry; each ``register`` adds to them, so several feeds share the families.

    Args:
        obj: a ``Consumer``, ``Producer`` or producer ``Daemon`` (held weakly).
        registry: a ``prometheus_client.CollectorRegistry``; None is the default
            ``prometheus_client.REGISTRY``.

    Returns:
        The collector that now holds ``obj``.

    Raises:
        NotInstalledError: prometheus_client is not installed.
        ConfigurationError: ``obj`` is none of those, or its feed is already registered
            by another object in that registry.
    """
    prom = _prometheus()
    registry = prom.REGISTRY if registry is None else registry
    kind = _kind(obj)
    with _registered_lock:
        collectors = _registered.setdefault(registry, {})
        collector = collectors.get(kind)
        if collector is None:
            collector = ConsumerCollector() if kind == "consumer" else ProducerCollector()
            registry.register(collector)
            collectors[kind] = collector
    collector.add(obj)
    return collector


def unregister(obj: Any, registry: Any = None) -> bool:
    """Stop exporting ``obj``'s metrics to ``registry``; True when it was exported.

    Raises:
        NotInstalledError: prometheus_client is not installed.
    """
    registry = _prometheus().REGISTRY if registry is None else registry
    with _registered_lock:
        collectors = list(_registered.get(registry, {}).values())
    return any([c.remove(obj) for c in collectors])
