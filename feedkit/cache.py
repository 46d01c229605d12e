"""A cache folder of state files (a consumer's, the producer's restore folder, the
``feedkit`` command's): which files hold which version, and the build lock.

``{cache_dir}/{feed}/`` holds ``{V}.base`` (a whole state at version V) and
``{B}-{V}.overlay`` (the changes from base B to version V), versions zero-padded to
20 digits. Files appear by atomic rename once verified, so a file with a final name
is complete. Processes sharing the folder build under an exclusive ``flock`` on
``.lock`` and re-check the folder once they hold it: a version is downloaded once.

Beside the state files: ``.announced.json``, a copy of the last announcement a
consumer read (so a restart with the store unreachable serves the announced
version, a rollback included, rather than the newest one held), and
``.manifests/{V}.json``, the manifests of cached versions as read from the store
(so a consumer with a signing key can check the signature of a version it serves
from the cache while the store is down). Both are untrusted on reading: parsed by
the same strict parsers as the store's objects, and a manifest's signature is
checked again.

A folder deleted under a running consumer (a tmp cleaner) is created again by the
next build: every writer goes through :meth:`FeedCache.ensure`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from feedkit import _native
from feedkit.errors import ConfigurationError, StoreError, StoreTimeoutError
from feedkit.forks import on_fork_in_child
from feedkit.names import validate_feed
from feedkit.store.deadline import remaining

__all__ = ["FeedCache", "check_cache_dir"]

_BASE = re.compile(r"(\d{20})\.base")
_STALE_TMP_SECONDS = 600
_OVERLAY = re.compile(r"(\d{20})-(\d{20})\.overlay")
_MANIFEST = re.compile(r"(\d{20})\.json")
_MAX_SMALL = 1 << 20  # announcements and manifests are a few KiB; more is not ours


class FeedCache:
    """The cache folder of one feed: ``{cache_dir}/{feed}/``.

    Raises:
        ConfigurationError: ``feed`` is not a valid feed name (it is a folder name here:
            ``..`` or ``/`` would leave ``cache_dir``), or ``cache_dir`` is no usable
            path (a NUL byte).
        StoreError: the folder cannot be created (permissions, a full or read-only disk).
    """

    def __init__(self, cache_dir: str | os.PathLike[str], feed: str) -> None:
        # Consumers validate the name already; checked again where it becomes a path.
        self.feed = validate_feed(feed)
        check_cache_dir(cache_dir, feed)
        self.root = Path(cache_dir)
        self.dir = self.root / self.feed
        try:
            self.ensure()
        except ValueError as exc:  # "embedded null byte"
            raise ConfigurationError(f"feed {feed!r}: invalid cache folder {cache_dir!r}: "
                                     f"{exc}") from exc

    def ensure(self) -> None:
        """Create the folder if it is missing (first use, or deleted under a consumer).

        Raises:
            StoreError: it cannot be created (permissions, a full or read-only disk).
        """
        if self.dir.is_dir():
            return
        try:
            # Owner-only: the cache folder (when feedkit creates it) and the feed's folder.
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"feed {self.feed!r}: cannot create cache folder {self.dir}: "
                             f"{exc}") from exc

    def base_path(self, version: int) -> Path:
        return self.dir / f"{version:020d}.base"

    def overlay_path(self, base: int, version: int) -> Path:
        return self.dir / f"{base:020d}-{version:020d}.overlay"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _read_small(self, path: Path) -> bytes | None:
        """A small file's bytes; None when missing, unreadable or implausibly large.

        Read in compiled code holding the GIL (``native/src/files.rs``): microseconds,
        where Python's open, read and close would each give it up."""
        try:
            data: bytes = _native.read_small(path, _MAX_SMALL)
        except OSError:
            return None
        return data if len(data) <= _MAX_SMALL else None

    def remember_announcement(self, data: bytes) -> None:
        """Keep the announcement just read (best effort: a failure only loses the memory)."""
        with contextlib.suppress(OSError):
            self.ensure_quietly()
            self._write_atomic(self.dir / ".announced.json", data)

    def announcement(self) -> bytes | None:
        """The last announcement a consumer of this folder read (untrusted bytes)."""
        return self._read_small(self.dir / ".announced.json")

    def remember_manifest(self, version: int, data: bytes) -> None:
        """Keep a manifest read from the store (best effort)."""
        path = self.dir / ".manifests" / f"{version:020d}.json"
        if path.exists():
            return
        with contextlib.suppress(OSError):
            path.parent.mkdir(exist_ok=True, mode=0o700)
            self._write_atomic(path, data)

    def manifest(self, version: int) -> bytes | None:
        """A manifest kept by :meth:`remember_manifest` (untrusted bytes)."""
        return self._read_small(self.dir / ".manifests" / f"{version:020d}.json")

    def ensure_quietly(self) -> None:
        with contextlib.suppress(StoreError):
            self.ensure()

    def scratch_path(self, name: str) -> Path:
        return self.dir / f".{name}.{os.getpid()}.part"

    def entries(self) -> list[tuple[int, int | None, Path]]:
        """(version, base version or None, path) of every complete file.

        Listed in compiled code holding the GIL (``native/src/files.rs``): ``os.scandir``
        gives it up for every entry, and a refresh lists the folder several times."""
        out: list[tuple[int, int | None, Path]] = []
        try:
            listed: list[str] = _native.list_dir(self.dir)
        except FileNotFoundError:
            return out
        for name in listed:
            if m := _BASE.fullmatch(name):
                out.append((int(m[1]), None, self.dir / name))
            elif m := _OVERLAY.fullmatch(name):
                out.append((int(m[2]), int(m[1]), self.dir / name))
        return out

    @staticmethod
    def _find(entries: list[tuple[int, int | None, Path]], version: int) -> list[Path] | None:
        bases = {v: p for v, b, p in entries if b is None}
        if version in bases:
            return [bases[version]]
        for v, b, p in entries:
            if v == version and b in bases:
                return [p, bases[b]]
        return None

    def find(self, version: int) -> list[Path] | None:
        """The files of ``version`` ([overlay, base] or [base]), if cached."""
        return self._find(self.entries(), version)

    def versions(self) -> list[int]:
        """Versions that can be served from the cache, newest first."""
        entries = self.entries()
        return sorted({v for v, _, _ in entries if self._find(entries, v)}, reverse=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's build lock (an exclusive ``flock``), creating the folder first.

        The wait for another process's build ends at the calling thread's deadline
        (:func:`feedkit.store.deadline.deadline`), if one is set.

        Raises:
            StoreError: the lock file cannot be opened (a read-only folder).
            StoreTimeoutError: the deadline passed while another process held the lock.
        """
        # Taken in compiled code when it is free (no GIL release: open and flock are
        # microseconds); a lock another process holds is waited for as before.
        try:
            handle = _native.FileLock.try_new(self.dir / ".lock")
        except FileNotFoundError:  # the folder is gone (a tmp cleaner): make it again
            self.ensure()
            handle = None
        except OSError:
            handle = None  # reported by the path below, with its message
        if handle is not None:
            token = _held.add(handle)
            try:
                yield
            finally:
                if _held.discard(token):
                    handle.close()
            return
        self.ensure()
        try:
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cache folder {self.dir}: cannot take the build lock: "
                             f"{exc.strerror or exc}") from exc
        token = _held.add(fd)
        try:
            _flock(fd, self.dir)
            yield
        finally:
            if _held.discard(token):  # not when a fork's child closed the parent's copy
                os.close(fd)

    def prune(self, keep: int, serving: int | None = None) -> None:
        """Delete files no longer needed by the newest ``keep`` versions or by ``serving``
        (a pinned or rolled-back version may be older than all of them), and stale scratch.

        Deleting a file another process has mapped is safe: its mapping stays valid.
        """
        # Listings and removals in compiled code, holding the GIL (see entries()).
        try:
            listed: list[str] = _native.list_dir(self.dir)
        except OSError:
            return
        entries = self.entries()
        cached = sorted({v for v, _, _ in entries if self._find(entries, v)}, reverse=True)
        versions = set(cached[:keep])
        if serving is not None:
            versions.add(serving)
        needed = {p for v in versions for p in (self._find(entries, v) or [])}
        for _, _, path in entries:
            if path not in needed:
                _native.remove_file(path)
        if ".manifests" in listed:
            with contextlib.suppress(OSError):
                for name in _native.list_dir(self.dir / ".manifests"):
                    m = _MANIFEST.fullmatch(name)
                    if m is None or int(m[1]) not in versions:
                        _native.remove_file(self.dir / ".manifests" / name)
        for name in listed:
            if name.endswith(".tmp"):  # a writer that died before its rename
                with contextlib.suppress(OSError):
                    if time.time() - (self.dir / name).stat().st_mtime > _STALE_TMP_SECONDS:
                        os.unlink(self.dir / name)
            elif name.endswith(".part"):
                pid = name.rsplit(".", 2)[-2]
                if pid.isdigit() and not _alive(int(pid)):
                    _native.remove_file(self.dir / name)


def check_cache_dir(cache_dir: object, feed: str) -> None:
    """Refuse a ``cache_dir`` that names no folder.

    Raises:
        ConfigurationError: an empty path (``Path("")`` is the working directory, never a
            cache folder anyone meant) or no path at all.
    """
    if not isinstance(cache_dir, str | os.PathLike) or not os.fspath(cache_dir):
        raise ConfigurationError(f"feed {feed!r}: cache_dir must name a folder, "
                                 f"not {cache_dir!r}")


def _flock(fd: int, folder: Path) -> None:
    """Take an exclusive flock on ``fd``, waiting at most until the thread's deadline."""
    left = remaining()
    if left is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    end = time.monotonic() + left
    pause = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= end:
                raise StoreTimeoutError(f"cache folder {folder}: another process held the "
                                        "build lock past the refresh deadline") from None
            time.sleep(min(pause, max(end - time.monotonic(), 0.0)))
            pause = min(pause * 2, 0.1)


class _HeldLocks:
    """The build-lock descriptors this process holds, so a forked child can let go.

    A flock belongs to the open file, which a fork shares: a child forked while a parent
    thread holds the lock would otherwise keep it held for as long as the child lives
    (that thread, and its ``close``, are not in the child). The child closes its copies;
    the parent's lock is untouched, since the parent's descriptor still holds it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fds: dict[int, int | _native.FileLock] = {}
        self.next = 0
        on_fork_in_child(self, _HeldLocks.after_fork)

    def add(self, fd: int | _native.FileLock) -> int:
        with self.lock:
            self.next += 1
            self.fds[self.next] = fd
            return self.next

    def discard(self, token: int) -> bool:
        with self.lock:
            return self.fds.pop(token, None) is not None

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                if isinstance(fd, int):
                    os.close(fd)
                else:
                    fd.close()
        self.fds.clear()


_held = _HeldLocks()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
