"""The consumer's cache folder: which files hold which version, and the build lock.

``{cache_dir}/{feed}/`` holds ``{V}.base`` (a whole state at version V) and
``{B}-{V}.overlay`` (the changes from base B to version V), versions zero-padded to
20 digits. Files appear by atomic rename once verified, so a file with a final name
is complete. Processes sharing the folder build under an exclusive ``flock`` on
``.lock`` and re-check the folder once they hold it: a version is downloaded once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from feedkit.errors import ConfigurationError, StoreError
from feedkit.names import validate_feed

__all__ = ["FeedCache"]

_BASE = re.compile(r"(\d{20})\.base")
_STALE_TMP_SECONDS = 600
_OVERLAY = re.compile(r"(\d{20})-(\d{20})\.overlay")


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
        self.dir = Path(cache_dir) / validate_feed(feed)
        try:
            # Owner-only: the cache folder (when feedkit creates it) and the feed's folder.
            Path(cache_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir.mkdir(exist_ok=True, mode=0o700)
        except ValueError as exc:  # "embedded null byte"
            raise ConfigurationError(f"feed {feed!r}: invalid cache folder {cache_dir!r}: "
                                     f"{exc}") from exc
        except OSError as exc:
            raise StoreError(f"feed {feed!r}: cannot create cache folder {self.dir}: {exc}") from exc

    def base_path(self, version: int) -> Path:
        return self.dir / f"{version:020d}.base"

    def overlay_path(self, base: int, version: int) -> Path:
        return self.dir / f"{base:020d}-{version:020d}.overlay"

    def scratch_path(self, name: str) -> Path:
        return self.dir / f".{name}.{os.getpid()}.part"

    def entries(self) -> list[tuple[int, int | None, Path]]:
        """(version, base version or None, path) of every complete file."""
        out: list[tuple[int, int | None, Path]] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir):
                if m := _BASE.fullmatch(entry.name):
                    out.append((int(m[1]), None, Path(entry.path)))
                elif m := _OVERLAY.fullmatch(entry.name):
                    out.append((int(m[2]), int(m[1]), Path(entry.path)))
        return out

    def find(self, version: int) -> list[Path] | None:
        """The files of ``version`` ([overlay, base] or [base]), if cached."""
        entries = self.entries()
        bases = {v: p for v, b, p in entries if b is None}
        if version in bases:
            return [bases[version]]
        for v, b, p in entries:
            if v == version and b in bases:
                return [p, bases[b]]
        return None

    def versions(self) -> list[int]:
        """Versions that can be served from the cache, newest first."""
        return sorted({v for v, _, _ in self.entries() if self.find(v)}, reverse=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's build lock (an exclusive ``flock``).

        Raises:
            StoreError: the lock file cannot be opened (a read-only or vanished folder).
        """
        try:
            f = open(self.dir / ".lock", "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StoreError(f"cache folder {self.dir}: cannot take the build lock: "
                             f"{exc.strerror or exc}") from exc
        with f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def prune(self, keep: int) -> None:
        """Delete files no longer needed by the newest ``keep`` versions, and stale scratch.

        Deleting a file another process has mapped is safe: its mapping stays valid.
        """
        versions = self.versions()[:keep]
        needed = {p for v in versions for p in (self.find(v) or [])}
        for _, _, path in self.entries():
            if path not in needed:
                with contextlib.suppress(OSError):
                    path.unlink()
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".tmp"):  # a writer that died before its rename
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                        os.unlink(entry.path)
            elif entry.name.endswith(".part"):
                pid = entry.name.rsplit(".", 2)[-2]
                if pid.isdigit() and not _alive(int(pid)):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
