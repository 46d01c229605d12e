"""The producer daemon: watch Iceberg tables, publish a feed version per change.

One :class:`FeedRunner` per ``[[feed]]``; the :class:`Daemon` schedules them on one
thread (a cycle is CPU-bound, and two cores gain nothing from running cycles side by
side under the GIL). A runner checks its table every ``poll_interval``; on a local
warehouse a watchdog observer on the table's metadata folder wakes it at once, and it
then re-checks every 50 ms for a moment, since the catalog row moves just after the
metadata file appears.

A failing feed (catalog down, store down, bad data) is logged and retried with backoff;
the others go on. A refused table position (validators, key rules) is not read again
until the table moves. SIGTERM/SIGINT stop the loop: a cycle still reading is abandoned
(nothing written), one already uploading finishes (its announcement is one atomic
compare-and-swap), and ``run`` returns 0.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog

from feedkit.errors import (
    ConfigurationError,
    FeedkitError,
    FeedPinnedError,
    ProducerFencedError,
    RefusedError,
    ValidationError,
)
from feedkit.store import BlobStore, open_store

from .config import DaemonConfig, FeedConfig
from .freshness import Freshness
from .iceberg import CatalogHandle, IcebergSource, ReadPlan, TablePosition
from .producer import Producer
from .stats import CycleStats
from .validate import load_validator

__all__ = ["Daemon", "FeedRunner"]

log = logging.getLogger("feedkit.producer.daemon")

BURST_SECONDS = 2.0  # after a file-system event, re-check this long ...
BURST_INTERVAL = 0.05  # ... this often, until the catalog shows the new metadata
MAX_BACKOFF = 300.0


class Abandoned(Exception):  # noqa: N818 - a signal, not an error
    """The daemon is stopping: the cycle in progress gives up before writing anything."""


class FeedRunner:
    """One feed: its table, its producer, and what it last published."""

    def __init__(self, cfg: FeedConfig, config: DaemonConfig, store: BlobStore,
                 catalog: CatalogHandle | Catalog, stop: threading.Event, *,
                 force: bool = False) -> None:
        self.cfg = cfg
        self.config = config
        self.store = store
        self.stop = stop
        self.force = force
        self.source = IcebergSource(catalog, cfg.table, feed=cfg.name,
                                    columns=list(cfg.columns) if cfg.columns else None,
                                    key=cfg.primary_key)
        try:
            self.validators = [load_validator(v) for v in cfg.validators]
        except ConfigurationError as exc:
            raise ConfigurationError(f"feed {cfg.name!r}: {exc}") from None
        self.producer: Producer | None = None
        self.published: TablePosition | None = None  # the position the feed's state reflects
        self.refused: TablePosition | None = None
        self.seen_location: str | None = None
        self.metadata_dir: Path | None = None
        self.failures = 0
        self.next_check = 0.0
        self.burst_until = 0.0
        self.last_wake = -1.0
        self.last_outcome = ""
        self.checks: Counter[str] = Counter()  # outcomes of check(), for metrics()
        self.stats = CycleStats()  # handed to each producer made, so counts survive a fence
        self.freshness = Freshness()
        self.pin: tuple[int | None, str | None] | None = None  # the pin last logged

    # -- lifecycle ------------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        work_dir = self.config.work_dir / self.cfg.name if self.config.work_dir else None
        producer = Producer.from_settings(self.store, self.cfg, validators=self.validators,
                                          work_dir=work_dir)
        producer._stats = self.stats
        return producer

    def _restore(self) -> Producer:
        """The producer, restored to the announced version (made on first use)."""
        if self.producer is None:
            producer = self._new_producer()
            try:
                manifest = producer.restore()
            except BaseException:
                producer.close()
                raise
            self.producer = producer
            src = manifest.source if manifest else None
            same_table = bool(src) and src.get("table") == self.cfg.table  # type: ignore[union-attr]
            self.published = TablePosition.from_source(src) if same_table else None
            self.seen_location = None
        return self.producer

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
            self.producer = None

    def metrics(self) -> dict[str, Any]:
        """The producer's metrics for this feed, plus ``checks`` (counts per outcome of
        :meth:`check`, ``idle`` included), ``last_check`` and ``consecutive_failures``."""
        producer = self.producer
        m = producer.manifest if producer is not None else None
        out = self.stats.as_dict(self.cfg.name, m.version if m else None,
                                 m.record_count if m else None)
        out.update(checks=dict(self.checks), last_check=self.last_outcome or None,
                   consecutive_failures=self.failures, freshness=self.freshness.as_dict())
        return out

    def wake(self, now: float) -> None:
        """A file-system event: check now, then often for a moment."""
        self.last_wake = now
        self.next_check = now
        self.burst_until = now + BURST_SECONDS

    # -- one check --------------------------------------------------------------------------

    def check(self) -> str:
        """Look at the table once and run a cycle if it moved.

        Returns the outcome: ``idle`` (nothing new), ``published``, ``unchanged`` (read,
        but the feed's records are the same), ``refused``, ``failed``, ``abandoned`` or
        ``pinned`` (an operator pinned the feed: nothing published, checked again at the
        next poll, and ``once`` does not count it as a failure).
        """
        now = time.monotonic()
        try:
            outcome = self._check()
        except Abandoned:
            outcome = "abandoned"
            log.warning("event=abandoned feed=%s reason=stopping", self.cfg.name)
        except RefusedError:
            outcome = "refused"  # the producer logged the rule and its figures
        except ValidationError as exc:
            outcome = "refused"
            log.error("event=refused feed=%s rule=keys reason=%r", self.cfg.name, str(exc))
        except FeedPinnedError as exc:
            outcome = "pinned"  # an operator's rollback: not a failure, no backoff
            self._log_pin(exc)
            self.close()  # while pinned, each check is one announcement read (the restore)
        except ProducerFencedError as exc:
            outcome = "failed"
            log.error("event=fenced feed=%s reason=%r (restoring from the store next time)",
                      self.cfg.name, str(exc))
            self.close()
        except Exception as exc:  # noqa: BLE001 - a failing feed must not stop the others
            outcome = "failed"
            log.error("event=failed feed=%s error=%s reason=%r", self.cfg.name,
                      type(exc).__name__, str(exc), exc_info=not isinstance(exc, FeedkitError))
        if self.pin is not None and outcome not in ("pinned", "failed", "abandoned"):
            log.info("event=unpinned feed=%s version=%s", self.cfg.name,
                     self.producer.version if self.producer else None)
            self.pin = None
        self.last_outcome = outcome
        self.checks[outcome] += 1
        self._schedule(outcome, now)
        if self.last_wake >= now and outcome != "failed":
            # A commit landed while this check ran: look again at once.
            self.next_check = time.monotonic()
            self.burst_until = self.last_wake + BURST_SECONDS
        return outcome

    def _log_pin(self, exc: FeedPinnedError) -> None:
        """One ``event=pinned`` line per pin; the checks while it lasts log at debug level."""
        pin = exc.pin
        key = (exc.version, getattr(pin, "at", None))
        log.log(logging.WARNING if key != self.pin else logging.DEBUG,
                "event=pinned feed=%s version=%s latest=%s by=%s at=%s reason=%r "
                "(publishing nothing until feedkit unpin)", self.cfg.name, exc.version,
                getattr(pin, "latest", None), getattr(pin, "by", None), key[1],
                getattr(pin, "reason", None))
        self.pin = key

    def _schedule(self, outcome: str, now: float) -> None:
        if outcome == "failed":
            self.failures += 1
            backoff = min(self.cfg.poll_interval * 2 ** min(self.failures, 10), MAX_BACKOFF)
            self.next_check = now + backoff * random.uniform(0.8, 1.2)
            self.burst_until = 0.0
            return
        self.failures = 0
        if outcome == "idle" and now < self.burst_until:
            self.next_check = now + BURST_INTERVAL
        else:
            self.burst_until = 0.0
            self.next_check = now + self.cfg.poll_interval

    def _check(self) -> str:
        producer = self._restore()
        table = self.source.load()
        if self.metadata_dir is None:
            self.metadata_dir = self.source.local_metadata_dir(table)
        if table.metadata_location == self.seen_location:
            return "idle"
        position = self.source.position(table)
        self.freshness.pending(None if position == self.published
                               else _oldest_commit(table, self.published))
        if position == self.refused:
            self.seen_location = table.metadata_location
            return "idle"
        began = time.monotonic()
        plan = self.source.plan(table, self.published)
        plan_seconds = time.monotonic() - began
        if plan.kind == "none":
            if plan.since != plan.position:  # compactions: the feed's rows are the table's
                log.info("event=skipped feed=%s reason=%r iceberg_snapshot=%s", self.cfg.name,
                         plan.reason, plan.position.snapshot_id)
                self.published = plan.position
            self.freshness.caught_up()
            self.seen_location = table.metadata_location
            return "idle"
        change = self.source.read_change(table, plan) if plan.kind == "files" else None
        reader = change.upserts if change is not None else self.source.read(table, plan)
        if plan.kind in ("append", "files") and not producer.can_append(reader.schema):
            plan = ReadPlan.full("columns", f"the feed's columns differ from the {plan.kind} "
                                 "plan's rows'", plan.position, plan.since, live=plan.live)
            change, reader = None, self.source.read(table, plan)
        log.info("event=read feed=%s plan=%s cause=%s reason=%r iceberg_snapshot=%s "
                 "schema_id=%s plan_s=%.3f", self.cfg.name, plan.kind, plan.cause or "-",
                 plan.reason, plan.position.snapshot_id, plan.position.schema_id, plan_seconds)
        self.freshness.planned(plan.kind, plan.cause, plan.reason)
        batches = self._watched(reader, _expected_rows(table, plan))
        source = self.source.source(table, plan.position)
        try:
            if change is not None:
                version = producer.update(batches, deletes=change.deletes, source=source,
                                          force=self.force)
            elif plan.kind == "append":
                version = producer.append(batches, source=source, force=self.force)
            else:
                version = producer.publish(batches, source=source, force=self.force)
        except (RefusedError, ValidationError):
            self.refused = plan.position
            self.seen_location = table.metadata_location
            raise
        self.published = plan.position
        self.refused = None
        self.seen_location = table.metadata_location
        if version is None:
            self.freshness.caught_up()
            return "unchanged"
        seconds = self.freshness.announced()
        log.info("event=announced feed=%s version=%s plan=%s cause=%s iceberg_snapshot=%s "
                 "commit_to_announce_s=%s", self.cfg.name, version, plan.kind, plan.cause or "-",
                 plan.position.snapshot_id, f"{seconds:.3f}" if seconds is not None else "-")
        return "published"

    def _watched(self, reader: pa.RecordBatchReader, total: int | None) -> pa.RecordBatchReader:
        """The reader's batches, with a progress bar on a terminal and a stop check."""
        from tqdm import tqdm

        bar = tqdm(total=total, unit="rows", unit_scale=True, desc=self.cfg.name, leave=False,
                   disable=not sys.stderr.isatty())

        def batches() -> Iterator[pa.RecordBatch]:
            with bar:
                for batch in reader:
                    if self.stop.is_set():
                        raise Abandoned()
                    bar.update(batch.num_rows)
                    yield batch
                if self.stop.is_set():
                    raise Abandoned()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _oldest_commit(table: Any, published: TablePosition | None) -> float | None:
    """Unix time of the oldest commit the table holds beyond ``published``: the first
    snapshot after it on the current branch; the current snapshot's when ``published`` is
    not an ancestor (a rollback) or unknown; the metadata's last update for a schema
    change without a new snapshot."""
    snap = table.current_snapshot()
    if snap is None or (published is not None and snap.snapshot_id == published.snapshot_id):
        return table.metadata.last_updated_ms / 1000
    oldest = snap
    if published is not None and published.snapshot_id is not None:
        seen = 0
        while snap is not None and seen < 10_000:
            if snap.snapshot_id == published.snapshot_id:
                return oldest.timestamp_ms / 1000
            oldest, seen = snap, seen + 1
            snap = (table.snapshot_by_id(snap.parent_snapshot_id)
                    if snap.parent_snapshot_id is not None else None)
        oldest = table.current_snapshot()  # not an ancestor: the current snapshot's time
    return oldest.timestamp_ms / 1000


def _expected_rows(table: Any, plan: ReadPlan) -> int | None:
    """Rows the plan will read, from the snapshot summaries (for the progress bar)."""
    with contextlib.suppress(Exception):
        if plan.change is not None:
            return sum(t.file.record_count for t in plan.change.added)
        if plan.kind == "full":
            summary = table.current_snapshot().summary
            return int(summary["total-records"])
        total = 0
        snap = table.current_snapshot()
        while snap is not None and snap.snapshot_id != plan.since.snapshot_id:  # type: ignore[union-attr]
            total += int(snap.summary["added-records"])
            snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
        return total
    return None


class Daemon:
    """Run every configured feed: ``run()`` until stopped, or ``once()``.

    Args:
        config: the parsed configuration.
        force: publish past the threshold rules (``max_change_ratio``, ``min_records``).

    Raises:
        ConfigurationError: the store, the catalog or a validator cannot be loaded.
    """

    def __init__(self, config: DaemonConfig, *, force: bool = False) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self.store = open_store(config.store.url, **config.store.options)
        # A handle, not the catalog: it reopens a SQLite catalog whose file was replaced.
        self.catalog = CatalogHandle(config.catalog.name, config.catalog.properties)
        self.runners = [FeedRunner(f, config, self.store, self.catalog, self.stop_event,
                                   force=force) for f in config.feeds]
        self._observer: Any = None
        self._watched: set[Path] = set()
        self._http: Any = None  # the [metrics] port's server, while run() runs
        self.metrics_address: tuple[str, int] | None = None

    def _serve_metrics(self) -> None:
        """Serve :meth:`metrics` for Prometheus on the ``[metrics]`` port.

        Raises:
            NotInstalledError: prometheus_client is not installed.
            ConfigurationError: the port cannot be bound.
        """
        cfg = self.config.metrics
        if cfg is None or self._http is not None:
            return
        from feedkit.metrics import ProducerCollector, _prometheus

        prom = _prometheus()
        registry = prom.CollectorRegistry()
        registry.register(ProducerCollector(self))
        try:
            server, _ = prom.start_http_server(cfg.port, addr=cfg.address, registry=registry)
        except OSError as exc:
            raise ConfigurationError(f"{self.config.source}: metrics.port: cannot serve on "
                                     f"{cfg.address}:{cfg.port}: {exc.strerror}") from exc
        self._http = server
        self.metrics_address = (cfg.address, server.server_address[1])
        log.info("event=metrics_serving address=%s port=%s", *self.metrics_address)

    def metrics(self) -> dict[str, dict[str, Any]]:
        """``{feed: metrics}`` for every configured feed (see :meth:`FeedRunner.metrics`);
        safe to call from another thread while the daemon runs."""
        return {r.cfg.name: r.metrics() for r in self.runners}

    def stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler or another thread)."""
        self.stop_event.set()
        self._wake.set()

    def once(self) -> int:
        """One check and cycle per feed; 0 when every feed published or had nothing to do."""
        failed = []
        restore = self._install_signals()
        try:
            for runner in self.runners:
                if self.stop_event.is_set():
                    break
                outcome = runner.check()
                log.info("event=checked feed=%s outcome=%s", runner.cfg.name, outcome)
                if outcome in ("failed", "refused", "abandoned"):
                    failed.append(f"{runner.cfg.name} ({outcome})")
        finally:
            self.close()
            restore()
        if failed:
            log.error("event=once_failed feeds=%s", ",".join(failed))
            return 1
        return 0

    def run(self) -> int:
        """Watch and publish until :meth:`stop` (or SIGTERM/SIGINT); returns 0."""
        restore = self._install_signals()
        log.info("event=started feeds=%s store=%s", ",".join(r.cfg.name for r in self.runners),
                 self.config.store.url)
        try:
            self._serve_metrics()
            while not self.stop_event.is_set():
                for runner in self.runners:
                    if self.stop_event.is_set():
                        break
                    if runner.next_check <= time.monotonic():
                        runner.check()
                        if not self.stop_event.is_set():
                            self._watch(runner)
                delay = min(r.next_check for r in self.runners) - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    self._wake.clear()
        finally:
            self.close()
            restore()
            log.info("event=stopped")
        return 0

    def close(self) -> None:
        if self._http is not None:
            with contextlib.suppress(Exception):
                self._http.shutdown()
                self._http.server_close()
            self._http = None
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(timeout=5)
            self._observer = None
        for runner in self.runners:
            runner.close()

    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, frame: Any) -> None:
            log.info("event=stopping signal=%s", signal.Signals(signum).name)
            self.stop()

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)
        return restore

    def _watch(self, runner: FeedRunner) -> None:
        """Watch the runner's metadata folder once it is known (local warehouses only)."""
        folder = runner.metadata_dir
        if folder is None or folder in self._watched:
            return
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                now = time.monotonic()
                for r in daemon.runners:
                    if r.metadata_dir == folder:
                        r.wake(now)
                daemon._wake.set()

        try:
            if self._observer is None:
                self._observer = Observer()
                self._observer.daemon = True
                self._observer.start()
            self._observer.schedule(Handler(), str(folder), recursive=False)
            self._watched.add(folder)
            log.info("event=watching feed=%s folder=%s", runner.cfg.name, folder)
        except OSError as exc:  # e.g. out of inotify watches: polling still works
            self._watched.add(folder)
            log.warning("event=watch_failed feed=%s folder=%s reason=%r (polling every %ss)",
                        runner.cfg.name, folder, str(exc), runner.cfg.poll_interval)

