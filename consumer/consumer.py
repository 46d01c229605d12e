"""The consumer: follow a feed's announcement and serve its latest verified version in-process."""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from feedkit import names
from feedkit.cache import FeedCache, check_cache_dir
from feedkit.errors import (
    BlobNotFoundError,
    ClosedError,
    ConfigurationError,
    FeedkitError,
    VersionNotFoundError,
)
from feedkit.forks import on_fork_in_child
from feedkit.loader import Loader
from feedkit.manifest import Announcement
from feedkit.signing import signer_from
from feedkit.state import State
from feedkit.store import BlobStore, Watch
from feedkit.store.deadline import deadline

from .health import Health
from .stats import RefreshStats

__all__ = ["Consumer"]

log = logging.getLogger("feedkit.consumer")

RefreshListener = Callable[[int | None, int], None]

MAX_BEHIND_WALK = 32  # manifests walked back for versions_behind before listing them

# The lifecycle: new -> open -> closed. A closed consumer is never reopened (its
# refresher, watch and loader are gone): make a new one.
NEW, OPEN, CLOSED = "new", "open", "closed"


class _Unavailable:
    """Stands in for a State before open() and after close(): every use says why."""

    def __init__(self, message: str) -> None:
        self.message = message

    def get(self, key: Any) -> Any:
        raise ClosedError(self.message)

    def __getattr__(self, name: str) -> Any:
        raise ClosedError(self.message)

    def __getitem__(self, key: Any) -> Any:
        raise ClosedError(self.message)

    def __contains__(self, key: Any) -> bool:
        raise ClosedError(self.message)

    def __len__(self) -> int:
        raise ClosedError(self.message)


class Consumer:
    """Serve a feed from memory-mapped local files, following its announcement.

    ``get`` is rebound to the current version's generated lookup on every swap, so a
    lookup costs one call. Lookups in flight finish on the state they started on.

    Args:
        store: where the feed lives (``feedkit.open_store(url)``).
        feed: the feed's name.
        cache_dir: a local folder for the state files; processes may share it.
        watch: run a background refresher (file-system watch on a local store, plus a
            poll every ``poll_interval`` seconds with jitter).
        poll_interval: seconds between polls of the announcement.
        keep_versions: versions kept on disk (rollback and ``pin`` to them is a swap).
        compact_ratio: rewrite base + overlay as one base once the overlay holds more
            than this share of the base's records.
        max_backoff: the longest wait between retries after failed refreshes.
        refresh_timeout: seconds one refresh may take in all, across its retries,
            downloads and the wait for another process's build in the cache folder; past
            it the refresh fails with :class:`feedkit.StoreTimeoutError` and the last good
            version keeps serving. ``open()`` has the same limit for its first load (and
            again for a start from the cache folder when the store cannot be read).
        count_lookups: count every ``get`` (and ``feed[key]``, ``key in feed``) for
            :meth:`metrics`. Off by default: ``get`` is then the generated lookup itself,
            with no counter in its path.
        signing_key: refuse every version whose manifest is not signed with this key
            (HMAC-SHA256; bytes, a str taken as UTF-8, or a ``pathlib.Path`` to a key
            file); None takes ``FEEDKIT_SIGNING_KEY`` or ``FEEDKIT_SIGNING_KEY_FILE``
            from the environment, else signatures are not checked. A refused version is
            a failed refresh: the last good version keeps serving.

    A consumer survives ``os.fork()`` (gunicorn ``--preload``, ``multiprocessing`` with
    the fork start method): the child keeps the mapped version (its pages shared with
    the parent) and starts its own refresher and watch. It cannot be pickled into a
    spawned process: open one there instead.

    Raises:
        ConfigurationError: an invalid feed name, interval or cache folder, or a signing
            key shorter than 16 bytes.
    """

    def __init__(self, store: BlobStore, *, feed: str, cache_dir: str | os.PathLike[str],
                 watch: bool = True, poll_interval: float = 1.0, keep_versions: int = 3,
                 compact_ratio: float = 0.25, max_backoff: float = 30.0,
                 count_lookups: bool = False,
                 signing_key: str | bytes | os.PathLike[str] | None = None,
                 refresh_timeout: float = 30.0) -> None:
        self.feed = names.validate_feed(feed)
        self._signer = signer_from(signing_key)
        for name, value in (("poll_interval", poll_interval), ("max_backoff", max_backoff),
                            ("refresh_timeout", refresh_timeout)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ConfigurationError(f"feed {feed!r}: {name} must be a number > 0, "
                                         f"not {value!r}")
        if keep_versions < 1:
            raise ConfigurationError(f"feed {feed!r}: keep_versions must be >= 1")
        check_cache_dir(cache_dir, feed)  # checked now: the folder is made at open()
        self.store = store
        self.cache_dir = cache_dir
        self.watch = watch
        self.poll_interval = poll_interval
        self.keep_versions = keep_versions
        self.compact_ratio = compact_ratio
        self.max_backoff = max_backoff
        self.refresh_timeout = float(refresh_timeout)
        self._phase = NEW
        self._state: Any = _Unavailable(
            f"consumer of feed {feed!r} is not open: use `with Consumer(...)` or call open()")
        self.get: Callable[[Any], Any] = self._state.get
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Watch | None = None
        self._loader: Loader | None = None
        self._etag: str | None = None
        self._announced: int | None = None
        self._pinned: int | None = None
        self._listeners: list[RefreshListener] = []
        self.last_error: FeedkitError | None = None
        self._stats = RefreshStats()
        self._announced_at: float | None = None  # unix time the announced version got announced
        self._behind: tuple[int, int, int] | None = None  # (served, announced, versions_behind)
        # Counting gets: next() on an itertools.count is one atomic C call. Its value is
        # read by calling next() too, so metrics() subtracts the reads it made.
        self._lookups: itertools.count[int] | None = itertools.count() if count_lookups else None
        self._lookup_reads = 0
        on_fork_in_child(self, Consumer._after_fork, late=True)

    # -- lifecycle --------------------------------------------------------------------

    def open(self) -> Consumer:
        """Load the announced version (blocking) and start the background refresher.

        When the store cannot be read but the cache holds a version, the version the
        announcement last named (a pin included) is served, or the newest cached version
        older than it, and the refresher keeps trying. Opening an open consumer does
        nothing.

        Raises:
            ClosedError: the consumer was closed (a closed consumer is not reopened:
                create a new one).
            FeedkitError: nothing could be loaded at all.
        """
        with self._lock:
            if self._phase == OPEN:
                return self
            if self._phase == CLOSED:
                raise ClosedError(f"consumer of feed {self.feed!r} is closed and cannot be "
                                  "reopened: create a new Consumer")
            self._loader = Loader(self.store, self.feed, FeedCache(self.cache_dir, self.feed),
                                  self._signer)
            try:
                self._attempt()
            except FeedkitError as exc:
                if not self._serve_cached(exc):
                    self._loader = None
                    raise
            self._phase = OPEN
            if self.watch:
                self._start_refresher()
        return self

    def _start_refresher(self, *, watch_later: bool = False) -> None:
        """Start the watch and the refresher thread. ``watch_later``: the thread arms the
        watch itself, so that a forked child that execs at once (``subprocess`` with a
        ``preexec_fn``) has only started a thread."""
        if not watch_later:
            self._arm_watch(self._wake)
        self._thread = threading.Thread(target=self._run,
                                        args=(self._stop, self._wake, watch_later),
                                        daemon=True, name=f"feedkit-refresh-{self.feed}")
        self._thread.start()

    def _arm_watch(self, wake: threading.Event) -> None:
        try:
            self._watch = self.store.watch(names.announcement_key(self.feed), wake.set)
        except FeedkitError as exc:  # polling still follows the feed
            log.warning("feed %s: cannot watch the announcement, polling only: %s", self.feed, exc)
            self._watch = None

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, and a refresher and watch of its own.

        The parent's threads are not in the child, and a lock one of them held at the
        fork would stay held. The child keeps the served version's mappings (its pages
        stay shared with the parent) and the counters as they were.
        """
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stats.after_fork()
        self._thread, self._watch = None, None  # the parent's; they do not run here
        self._swap(self._state)  # a fork between the two assignments of a swap
        if self._phase == OPEN and self.watch:
            self._start_refresher(watch_later=True)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise ConfigurationError(
            f"a Consumer of feed {self.feed!r} cannot be sent to another process (spawn and "
            "forkserver pickle their arguments): open a Consumer in that process instead, "
            "with the same cache_dir so the state files are shared (a forked child inherits "
            "an open Consumer, which keeps refreshing)")

    def close(self) -> None:
        """Stop the refresher and the watch, refuse further lookups, and let go of the
        mapped files (a ``view()`` still held keeps its version mapped until it is
        released). Idempotent; a closed consumer cannot be reopened."""
        self._phase = CLOSED
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.refresh_timeout + 10)
        watch, self._watch = self._watch, None  # after the join: the thread may arm it
        if watch is not None:
            watch.stop()
        with self._lock:
            self._swap(_Unavailable(f"consumer of feed {self.feed!r} is closed"))
            self._loader = None
            self._thread = None

    @property
    def state(self) -> str:
        """The lifecycle state: ``new``, ``open`` or ``closed``."""
        return self._phase

    def __enter__(self) -> Consumer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        version = getattr(self._state, "version", None) if isinstance(self._state, State) else None
        return f"<Consumer {self.feed} version={version}>"

    # -- lookups (the current state answers) ------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        rec = self.get(key)
        if rec is None:
            raise KeyError(key)
        return rec

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self._state)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._state.keys())

    def keys(self) -> Iterator[Any]:
        return self._state.keys()  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[Any, Any]]:
        return self._state.items()  # type: ignore[no-any-return]

    def get_many(self, keys: Iterable[Any]) -> list[Any]:
        """Records aligned with ``keys``, None where absent (vectorised probe)."""
        records: list[Any] = self._state.get_many(keys)
        self._stats.many(len(records))
        return records

    def find(self, field: str, value: Any) -> list[Any]:
        """Records whose ``field`` equals ``value``, through a secondary index."""
        records: list[Any] = self._state.find(field, value)
        self._stats.found()
        return records

    @property
    def version(self) -> int:
        return self._state.version  # type: ignore[no-any-return]

    @property
    def schema(self) -> list[dict[str, Any]]:
        return self._state.schema  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def view(self) -> Iterator[State]:
        """One version for a whole request: lookups on the view never change version."""
        state = self._state
        if not isinstance(state, State):
            state.get(None)  # raises ClosedError with the reason
        yield state

    # -- refresh ----------------------------------------------------------------------

    def on_refresh(self, listener: RefreshListener) -> RefreshListener:
        """Call ``listener(old_version, new_version)`` after every swap to a new version.

        ``old_version`` is None for the first version loaded by :meth:`open`. Listeners
        run on the refreshing thread, in the order added, after the new version serves
        and before compaction; swapping to a compacted base of the same version calls
        none. A listener that raises is logged and counted (``listener_errors``): the
        other listeners still run and the refresh still succeeds.

        Returns ``listener``, so this also works as a decorator.
        """
        self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: RefreshListener) -> bool:
        """Stop calling ``listener``; True when it was registered."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            return False
        return True

    def refresh(self) -> bool:
        """Poll the announcement and apply a new version now.

        Returns True when the served version moved.

        Raises:
            FeedkitError: the refresh failed; the previous version keeps serving.
        """
        with self._lock:
            if self._phase != OPEN or self._loader is None:
                raise ClosedError(f"consumer of feed {self.feed!r} is {self._phase}"
                                  + (": call open() first" if self._phase == NEW else ""))
            return self._attempt()

    def pin(self, version: int) -> None:
        """Serve ``version`` and stop following the announcement until :meth:`unpin`.

        The announcement is still read on each refresh (a failure to read it is then
        not a failure), so that :meth:`metrics` shows how far behind the pin is.

        Raises:
            VersionNotFoundError: no such version in the store.
        """
        names.validate_version(version)
        with self._lock:
            previous = self._pinned
            self._pinned = version
            try:
                self.refresh()
            except FeedkitError:
                self._pinned = previous
                raise

    def unpin(self) -> None:
        """Follow the announcement again (and move to it now)."""
        with self._lock:
            self._pinned = None
            self._etag = None
            self.refresh()

    @property
    def pinned(self) -> int | None:
        return self._pinned

    def _attempt(self) -> bool:
        """One refresh, counted in :meth:`metrics` (the lock is held).

        One deadline covers it all: the announcement, the load, and the manifests read
        afterwards for ``versions_behind``."""
        with deadline(self.refresh_timeout, f"feed {self.feed!r}: refresh"):
            try:
                moved = self._refresh()
            except Exception as exc:
                if isinstance(exc, FeedkitError):
                    self.last_error = exc
                self._stats.failed(exc)
                self._observe()
                raise
            self.last_error = None
            self._stats.succeeded()
            self._observe()
            return moved

    def _read_announcement(self, current: State | None) -> None:
        key = names.announcement_key(self.feed)
        try:
            changed = self.store.read_if_changed(key, self._etag if current else None)
        except BlobNotFoundError as exc:
            raise VersionNotFoundError(f"feed {self.feed!r}: nothing announced yet "
                                       f"({self.store.url}/{key})") from exc
        if changed is not None:
            announcement = Announcement.from_bytes(changed[0], key, feed=self.feed)
            self._announced, self._etag = announcement.version, changed[1]
            self._announced_at = _unix_time(announcement.announced_at)
            if self._loader is not None:  # a restart without the store serves this one
                self._loader.cache.remember_announcement(changed[0])

    def _refresh(self) -> bool:
        assert self._loader is not None
        started = time.monotonic()
        current = self._state if isinstance(self._state, State) else None
        with deadline(self.refresh_timeout, f"feed {self.feed!r}: refresh"):
            state = self._fetch(current)
        if state is None:
            return False
        self._swap(state)
        self._stats.updated(time.monotonic() - started)
        old = current.version if current else None
        log.info("feed %s: serving version %s (was %s, %d records)", self.feed, state.version,
                 old, len(state))
        for listener in list(self._listeners):
            try:
                listener(old, state.version)
            except Exception:  # a listener never breaks a refresh
                self._stats.listener_failed()
                log.exception("feed %s: refresh listener %r failed", self.feed, listener)
        self._maybe_compact(state)
        with contextlib.suppress(OSError):
            self._loader.cache.prune(self.keep_versions, state.version)
        return True

    def _fetch(self, current: State | None) -> State | None:
        """Read the announcement and load what it (or the pin) asks for; None: served."""
        assert self._loader is not None
        if self._pinned is not None:
            target = self._pinned
            # Still read the announcement, for versions_behind and staleness; a pinned
            # consumer does not need it, so failing to read it fails nothing.
            try:
                self._read_announcement(current)
            except FeedkitError as exc:
                log.debug("feed %s: pinned; announcement unreadable: %s", self.feed, exc)
        else:
            self._read_announcement(current)
            assert self._announced is not None
            target = self._announced
        if current is not None and current.version == target:
            return None
        return State(self._loader.load(target, current.files if current else None))

    def _maybe_compact(self, state: State) -> None:
        if state.overlay is None or self._loader is None:
            return
        if state.overlay.count <= self.compact_ratio * max(state.base.count, 1):
            return
        try:
            compacted = State(self._loader.compact(state.files))
        except FeedkitError as exc:
            log.warning("feed %s: compaction failed, serving base + overlay: %s", self.feed, exc)
            return
        if self._state is state:
            self._swap(compacted)

    def _swap(self, state: Any) -> None:
        self._state = state
        if self._lookups is not None and isinstance(state, State):
            self.get = _counting(state.get, self._lookups.__next__)
        else:
            self.get = state.get

    # -- metrics ----------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """What this consumer serves and what its refreshes did, as a plain dict.

        Safe to call from any thread, and cheap: it reads counters and never the store.
        Times are unix seconds; ``None`` means not known (yet). The keys:

        - ``feed``, ``version`` (served), ``records`` (in the served version),
          ``announced_version`` (last read from the announcement), ``pinned_version``.
        - ``versions_behind``: versions published after the served one, up to the
          announced one: the manifest parent chain's length from announced back to
          served, else (served not on that chain, or more than 32 back) the count of
          manifests in (served, announced]. 0 when served >= announced. Worked out by
          the refresher once per (served, announced) pair, None until then.
        - ``announced_at``: when the announced version was announced (the
          announcement's ``announced_at``, else its manifest's ``created_at``);
          ``staleness_seconds``: now minus that; ``lag_seconds``: 0 when the announced
          version is served, else the same as staleness.
        - ``refresh_successes``, ``refresh_failures``, ``consecutive_failures``,
          ``last_error`` (message of the last failure, kept after a success),
          ``last_error_time``, ``last_success_time``.
        - ``updates``: swaps to a new version; ``last_update_time``;
          ``refresh_seconds``: ``count``, ``sum``, ``last``, ``max`` of the time from a
          refresh's start to serving its new version (polls that find nothing new are
          not timed, they would swamp it).
        - ``state``: ``new``, ``open`` or ``closed``; ``seconds_since_check``: seconds
          since the last successful refresh (see :meth:`health`), None before one.
        - ``listener_errors``: refresh listeners that raised.
        - ``lookups``: ``get`` calls (with ``feed[key]`` and ``key in feed``) when made
          with ``count_lookups=True``, else None; ``get_many_calls``,
          ``get_many_keys``, ``find_calls`` always. Lookups on a ``view()`` are not
          counted.
        """
        state = self._state
        served = state.version if isinstance(state, State) else None
        announced, announced_at = self._announced, self._announced_at
        behind: int | None = None
        if served is not None and announced is not None:
            if served >= announced:
                behind = 0
            elif self._behind is not None and self._behind[:2] == (served, announced):
                behind = self._behind[2]
        staleness = None if announced_at is None else max(0.0, time.time() - announced_at)
        out: dict[str, Any] = {
            "feed": self.feed,
            "state": self._phase,
            "version": served,
            "records": len(state) if isinstance(state, State) else None,
            "announced_version": announced,
            "pinned_version": self._pinned,
            "versions_behind": behind,
            "announced_at": announced_at,
            "staleness_seconds": staleness,
            "lag_seconds": 0.0 if served is not None and served == announced else staleness,
        }
        out.update(self._stats.as_dict())
        out["seconds_since_check"] = self._stats.since_success()
        out["lookups"] = None
        if self._lookups is not None:
            with self._stats.lock:
                out["lookups"] = next(self._lookups) - self._lookup_reads
                self._lookup_reads += 1
        return out

    def health(self, max_staleness: float | None = None) -> Health:
        """Whether this consumer's answers are fresh: for a readiness probe.

        ``ok`` when the consumer is open, serves a version, and its last successful
        refresh (the announcement read, and the version it names, or the pinned one,
        served) is at most ``max_staleness`` seconds old. True in a forked child (its
        own refresher's checks) and after failures (they do not count as checks). Cheap:
        reads counters, never the store.

        Args:
            max_staleness: seconds; None takes ``3 * poll_interval + refresh_timeout``
                (three polls missed, the last one stuck for its whole deadline). A
                consumer opened with ``watch=False`` is only as fresh as its last
                ``refresh()``.
        """
        limit = (3 * self.poll_interval + self.refresh_timeout if max_staleness is None
                 else float(max_staleness))
        m = self.metrics()
        age = m["seconds_since_check"]
        reason = None
        if self._phase != OPEN:
            reason = f"consumer is {self._phase}"
        elif m["version"] is None:
            reason = "no version served"
        elif age is None:
            reason = "never checked the announcement successfully"
        elif age > limit:
            reason = (f"last successful check {age:.1f} s ago (limit {limit:g} s)"
                      + (f"; last error: {m['last_error']}" if m["last_error"] else ""))
        return Health(ok=reason is None, reason=reason, feed=self.feed, state=self._phase,
                      version=m["version"], announced_version=m["announced_version"],
                      pinned_version=m["pinned_version"], versions_behind=m["versions_behind"],
                      seconds_since_check=age, max_staleness=limit,
                      last_error=m["last_error"] if m["consecutive_failures"] else None,
                      consecutive_failures=m["consecutive_failures"], pid=os.getpid())

    def _observe(self) -> None:
        """After a refresh: work out versions_behind and a missing announcement time.

        Reads manifests (remembered by the loader) or, rarely, lists them; once per
        (served, announced) pair. A store failure leaves them unknown until next time.
        """
        state, announced, loader = self._state, self._announced, self._loader
        if not isinstance(state, State) or announced is None or loader is None:
            return
        try:
            if self._announced_at is None:
                self._announced_at = _unix_time(loader.manifest(announced).created_at)
            pair = (state.version, announced)
            if pair[0] < pair[1] and (self._behind is None or self._behind[:2] != pair):
                self._behind = (*pair, self._count_versions(*pair))
        except FeedkitError as exc:
            log.debug("feed %s: versions behind unknown for now: %s", self.feed, exc)

    def _count_versions(self, served: int, announced: int) -> int:
        """Versions in (served, announced]: along the parent chain, else by listing."""
        assert self._loader is not None
        m = self._loader.manifest(announced)
        for steps in range(1, MAX_BEHIND_WALK + 1):
            if m.parent is None or m.parent < served:
                break
            if m.parent == served:
                return steps
            m = self._loader.manifest(m.parent)
        keys = self.store.list(names.manifests_prefix(self.feed))
        versions = (names.parse_manifest_key(k) for k in keys)
        return sum(1 for v in versions if v is not None and served < v <= announced)

    def _serve_cached(self, exc: FeedkitError) -> bool:
        """Serve from the cache folder when the store cannot be read at ``open()``.

        The version served is the one the last announcement read by any consumer of the
        folder named (a pin or rollback included), else the newest cached version older
        than it: never a newer one, which the announcement moved away from. With a
        signing key, a version is served only once its manifest (the store's, else the
        folder's copy) is verified and matches its files.
        """
        assert self._loader is not None
        cache = self._loader.cache
        remembered = None
        if (data := cache.announcement()) is not None:
            try:
                remembered = Announcement.from_bytes(data, f"{cache.dir}/.announced.json",
                                                     feed=self.feed)
            except FeedkitError as bad:
                log.warning("feed %s: ignoring the cache folder's announcement: %s", self.feed, bad)
        versions = cache.versions()
        if remembered is not None:
            versions = [v for v in versions if v <= remembered.version]
        with deadline(self.refresh_timeout, f"feed {self.feed!r}: start from the cache"):
            for version in versions:
                try:
                    files = self._loader.trusted_cached(version, offline=True)
                except FeedkitError as why:
                    log.warning("feed %s: cannot serve cached version %s: %s", self.feed,
                                version, why)
                    continue
                if files is None:
                    continue
                log.warning("feed %s: store unavailable (%s); serving cached version %s",
                            self.feed, exc, version)
                self._swap(State(files))
                if remembered is not None and self._announced is None:
                    self._announced = remembered.version
                    self._announced_at = _unix_time(remembered.announced_at)
                self.last_error = exc
                return True
        return False

    def _run(self, stop: threading.Event, wake: threading.Event, arm_watch: bool) -> None:
        if arm_watch:
            self._arm_watch(wake)
            # A forked child: the announcement may have moved between the fork and the
            # watch's arming (a busy machine), and the watch reports only later moves.
            wake.set()
        failures = 0
        while not stop.is_set():
            if failures:
                delay = min(self.max_backoff, self.poll_interval * 2 ** failures)
                delay *= random.uniform(0.5, 1.0)
            else:
                delay = self.poll_interval * random.uniform(0.8, 1.2)
            wake.wait(delay)
            wake.clear()
            if stop.is_set():
                break
            try:
                self.refresh()
                failures = 0
            except ClosedError:
                break
            except FeedkitError as exc:
                failures += 1
                log.warning("feed %s: refresh failed (%d in a row), still serving %s: %s",
                            self.feed, failures, getattr(self._state, "version", None), exc)
            except Exception:
                failures += 1
                log.exception("feed %s: unexpected refresh failure", self.feed)


def _counting(get: Callable[[Any], Any], tick: Callable[[], int]) -> Callable[[Any], Any]:
    """``get`` that counts its calls (``Consumer(count_lookups=True)``)."""

    def counted_get(key: Any) -> Any:
        tick()
        return get(key)

    return counted_get


def _unix_time(iso: str) -> float | None:
    """Unix seconds of an ISO-8601 time (naive means UTC), or None when unreadable."""
    try:
        t = _dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return (t if t.tzinfo else t.replace(tzinfo=_dt.UTC)).timestamp()
