"""The local-folder store: create-only by hard link, announcement swap by lock and rename."""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import feedkit._native as _native
from feedkit import names
from feedkit.errors import (
    BlobExistsError,
    BlobNotFoundError,
    ConfigurationError,
    ProducerFencedError,
    StoreError,
)
from feedkit.forks import on_fork_in_child
from feedkit.store import BlobStore, Watch

__all__ = ["LocalStore", "TempFile"]


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


_CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})
# errnos that only writing the destination of a download can raise
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
# What :meth:`LocalStore._temp` names a write in progress: ``.{name}.{12 hex}.tmp``
_SMALL = 1 << 20  # objects read without giving the GIL up: announcements, manifests
_TEMP_RE = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


@dataclass(frozen=True)
class TempFile:
    """A temporary file of a write in progress, or left by one that failed."""

    key: str  # its object name (``{folder}/.{name}.{12 hex}.tmp``)
    size: int
    age: float  # seconds since it was last written


class LocalStore(BlobStore):
    """A store in a local folder (or any POSIX file system with hard links and flock).

    * create-only: the content goes to a temporary file, then ``os.link`` gives it its
      name, which fails if the name exists; readers never see a partial object.
    * compare-and-swap: an exclusive ``flock`` on ``{key}.lock`` around read, compare,
      write temporary, ``os.replace``.
    * watching: a watchdog observer on the announcement's folder.

    A write that fails (a full disk, say) removes its temporary file; one that could not
    (its process was killed) leaves it, and ``feedkit gc`` removes it later
    (:meth:`temporaries`). The folder is created by the first write, never by opening
    the store or reading it: a reader pointed at a wrong path creates nothing.
    """

    def __init__(self, root: Path) -> None:
        """Open the store in the folder ``root`` (which need not exist yet).

        Raises:
            ConfigurationError: ``root`` contains a NUL byte (no folder can have that name).
        """
        if "\0" in os.fspath(root):
            raise ConfigurationError(f"store folder {str(root)!r}: embedded null byte")
        self.root = root.absolute()
        self.url = self.root.as_uri()
        self._observer: Any = None
        self._observer_lock = threading.Lock()
        on_fork_in_child(self, LocalStore._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the parent's watchdog observer has no thread here (it would
        schedule watches that never fire), and its lock may be held: start afresh."""
        self._observer, self._observer_lock = None, threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*names.check_object_name(key, self.url))

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"store {self.url}: no object {key!r}") from exc
        except OSError as exc:
            raise StoreError(f"store {self.url}: {key!r}: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def _temp(self, path: Path) -> Iterator[Path]:
        """A temporary file beside ``path`` (its folders created), removed afterwards
        whatever happens: after a link or rename gave it its name, or after a failed
        write (ENOSPC, EIO) left it partial."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            yield tmp
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _link_new(self, key: str, path: Path, tmp: Path) -> None:
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise BlobExistsError(f"store {self.url}: {key!r} exists already (create-only)") from exc

    def put_new(self, key: str, src: str | os.PathLike[str]) -> None:
        path = self._path(key)
        with self._errors(key):
            if path.exists():
                raise BlobExistsError(f"store {self.url}: {key!r} exists already (create-only)")
            with self._temp(path) as tmp:
                shutil.copyfile(src, tmp)
                self._link_new(key, path, tmp)

    def put_new_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._errors(key), self._temp(path) as tmp:
            tmp.write_bytes(data)
            self._link_new(key, path, tmp)

    def _read(self, key: str) -> bytes:
        """The object's bytes. Small objects (announcements, manifests) are read in
        compiled code holding the GIL: microseconds, where Python's open, read and close
        would each give it up (a refresh beside a thread busy with lookups then waits up
        to the switch interval for it each time)."""
        path = self._path(key)
        with self._errors(key):
            data: bytes = _native.read_small(path, _SMALL)
            return data if len(data) <= _SMALL else path.read_bytes()

    def get_bytes(self, key: str) -> bytes:
        return self._read(key)

    def download(self, key: str, dest: str | os.PathLike[str]) -> int:
        path = self._path(key)
        try:
            # Compiled, holding the GIL unless the blob is large (see _read).
            return int(_native.copy_file(path, dest))
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS or (exc.filename is not None
                                              and os.fspath(exc.filename) == os.fspath(dest)):
                raise  # the caller's file (a full or read-only cache folder), not the store
            with self._errors(key):
                raise

    def exists(self, key: str) -> bool:
        with self._errors(key):
            return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        folder, _, stem = prefix.rpartition("/")
        base = self._path(folder) if folder else self.root
        with self._errors(prefix):
            if not base.is_dir():
                return []
            names = [
                f"{folder}/{entry.name}" if folder else entry.name
                for entry in os.scandir(base)
                if entry.is_file() and entry.name.startswith(stem) and not entry.name.startswith(".")
                and not entry.name.endswith(".lock")
            ]
        return sorted(names)

    def delete(self, key: str) -> None:
        with self._errors(key), contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def read_if_changed(self, key: str, etag: str | None = None) -> tuple[bytes, str] | None:
        data = self._read(key)
        tag = _etag(data)
        return None if tag == etag else (data, tag)

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key)
        with self._errors(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(path.name + ".lock"), "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    current = path.read_bytes()
                except FileNotFoundError:
                    current = None
                current_tag = None if current is None else _etag(current)
                if current_tag != etag:
                    raise ProducerFencedError(
                        f"store {self.url}: {key!r} changed since it was read "
                        f"(expected ETag {etag}, found {current_tag}): another writer moved it"
                    )
                with self._temp(path) as tmp:
                    tmp.write_bytes(data)
                    os.replace(tmp, path)
        return _etag(data)

    def temporaries(self, prefix: str) -> builtins.list[TempFile]:  # list: the method's name
        """The temporary files in the folder of ``prefix`` (the part up to its last
        ``/``): writes in progress, or leftovers of writes whose process died before it
        could remove them. Their ``age`` tells the two apart: a write in progress keeps
        writing its file, so an old one is a leftover. Other dot-files are not listed.

        Raises:
            ConfigurationError: ``prefix`` is not a plain object name.
            StoreError: the folder cannot be read.
        """
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        found: builtins.list[TempFile] = []
        now = time.time()
        with self._errors(prefix):
            if not base.is_dir():
                return []
            for entry in os.scandir(base):
                if not _TEMP_RE.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # renamed or removed meanwhile: a live write
                    continue
                if entry.is_file(follow_symlinks=False):
                    key = f"{folder}/{entry.name}" if folder else entry.name
                    found.append(TempFile(key, st.st_size, max(0.0, now - st.st_mtime)))
        return sorted(found, key=lambda t: t.key)

    def watch(self, key: str, callback: Callable[[], None]) -> Watch | None:
        path = self._path(key)
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # watchdog is a core dependency; polling still works without it
            return None
        target = str(path)

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                # Only changes: watchdog also reports opens and reads ("opened",
                # "closed_no_write"), and the consumer's own read would wake it forever.
                if getattr(event, "event_type", None) not in _CHANGES:
                    return
                paths = (getattr(event, "src_path", None), getattr(event, "dest_path", None))
                if target in paths:
                    callback()

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._observer_lock:
                if self._observer is None:
                    observer = Observer()
                    observer.daemon = True
                    observer.start()
                    self._observer = observer
                watch = self._observer.schedule(_Handler(), str(path.parent))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):  # inotify limits: fall back to polling
                return None
            raise StoreError(f"store {self.url}: cannot watch {key!r}: {exc}") from exc
        observer = self._observer

        class _LocalWatch(Watch):
            def stop(self) -> None:
                with contextlib.suppress(Exception):
                    observer.unschedule(watch)

        return _LocalWatch()

    def close(self) -> None:
        with self._observer_lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
