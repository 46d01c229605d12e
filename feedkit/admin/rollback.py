"""``feedkit pin`` and ``feedkit unpin``: a rollback recorded in the announcement, fenced by
compare-and-swap like a producer's announcement."""

from __future__ import annotations

import contextlib
import getpass
import json
import socket
from dataclasses import dataclass
from functools import partial
from typing import Any

from feedkit import names
from feedkit.errors import BlobNotFoundError, ProducerFencedError, VersionNotFoundError
from feedkit.manifest import Announcement, Manifest, Pin, utc_now
from feedkit.planner import plan
from feedkit.store import BlobStore

from .versions import read_announcement, read_manifest

__all__ = ["AnnouncementChange", "current_user", "pin", "unpin"]


def current_user() -> str | None:
    """``user@host`` of whoever runs this, best effort (None when neither is known)."""
    user = host = None
    with contextlib.suppress(Exception):
        user = getpass.getuser()
    with contextlib.suppress(Exception):
        host = socket.gethostname()
    if user and host:
        return f"{user}@{host}"
    return user or host or None


@dataclass(frozen=True)
class AnnouncementChange:
    """What ``pin`` or ``unpin`` did to the announcement."""

    feed: str
    previous: Announcement
    announcement: Announcement  # the announcement now (``previous`` when nothing changed)
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {"feed": self.feed, "changed": self.changed,
                "previous": json.loads(self.previous.to_bytes()),
                "announcement": json.loads(self.announcement.to_bytes())}


def _check_loadable(store: BlobStore, feed: str, version: int) -> Manifest:
    """The manifest of ``version``, once every blob a fresh consumer needs for it exists.

    Raises:
        VersionNotFoundError: no manifest for ``version``.
        BlobNotFoundError: a blob the version needs is missing (garbage-collected?).
        IntegrityError: a manifest on the way is unreadable, or no snapshot is reachable.
    """
    m = read_manifest(store, feed, version)
    p = plan(m, None, partial(read_manifest, store, feed))
    needed = ([p.snapshot.snapshot] if p.snapshot and p.snapshot.snapshot else []) + [
        d.delta for d in p.deltas if d.delta]
    for blob in needed:
        if not store.exists(blob.key):
            raise BlobNotFoundError(f"feed {feed!r}: version {version} cannot be loaded: its "
                                    f"blob {blob.key} is missing from {store.url}")
    return m


def _announce(store: BlobStore, new: Announcement, etag: str, previous: Announcement,
              action: str) -> None:
    """Compare-and-swap the announcement, as a producer does.

    Raises:
        ProducerFencedError: it moved since it was read; nothing changed.
    """
    try:
        store.replace_if_match(names.announcement_key(new.feed), new.to_bytes(), etag)
    except ProducerFencedError as exc:
        raise ProducerFencedError(
            f"feed {new.feed!r}: the announcement moved while {action} (it was version "
            f"{previous.version}); nothing changed: look again (feedkit versions) and retry"
        ) from exc


def _read_for_change(store: BlobStore, feed: str) -> tuple[Announcement, str]:
    current = read_announcement(store, feed)
    if current is None:
        raise VersionNotFoundError(f"feed {feed!r}: nothing announced in {store.url}")
    return current


def pin(store: BlobStore, feed: str, version: int, *, reason: str | None = None,
        by: str | None = None) -> AnnouncementChange:
    """Announce ``version`` (a rollback, usually) and record the pin in the announcement.

    Consumers move to ``version`` at their next poll; producers publish nothing until
    :func:`unpin`. The pin's ``latest`` is the version announced before it (kept when
    re-pinning a pinned feed).

    Args:
        store: the store.
        feed: the feed.
        version: an existing version whose blobs are all in the store.
        reason: why, recorded in the announcement.
        by: who; None records :func:`current_user`.

    Raises:
        VersionNotFoundError: nothing announced yet, or no manifest for ``version``.
        BlobNotFoundError: a blob ``version`` needs is missing from the store.
        ProducerFencedError: the announcement moved meanwhile; nothing changed.
        IntegrityError: an unreadable manifest or announcement.
        StoreError: the store failed.
    """
    names.validate_version(version)
    previous, etag = _read_for_change(store, feed)
    _check_loadable(store, feed, version)
    who = by if by is not None else current_user()
    latest = previous.pinned.latest if previous.pinned else previous.version
    new = Announcement(feed, version, producer=f"feedkit pin ({who or 'unknown'})",
                       pinned=Pin(at=utc_now(), latest=latest, by=who, reason=reason))
    _announce(store, new, etag, previous, f"pinning version {version}")
    return AnnouncementChange(feed, previous, new, True)


def unpin(store: BlobStore, feed: str, *, by: str | None = None) -> AnnouncementChange:
    """Clear the pin and announce the pin's ``latest`` again: the version announced before
    the pin, the last one a producer announced.

    Never a newer version found in the store: a manifest newer than ``latest`` belongs to
    a version nobody announced (a producer killed after writing it, or fenced by the pin
    before announcing it), which may not be one its producer would have published, and
    that no consumer has served. Producers build their next version on ``latest``.

    An unpinned feed is left as it is (``changed`` is False).

    Raises:
        VersionNotFoundError: nothing announced yet, or the pin's ``latest`` has no
            manifest any more (deleted by hand: gc keeps it).
        BlobNotFoundError: a blob the pin's ``latest`` needs is missing.
        ProducerFencedError: the announcement moved meanwhile; nothing changed.
        IntegrityError: an unreadable manifest or announcement.
        StoreError: the store failed.
    """
    previous, etag = _read_for_change(store, feed)
    if previous.pinned is None:
        return AnnouncementChange(feed, previous, previous, False)
    target = previous.pinned.latest
    try:
        _check_loadable(store, feed, target)
    except (VersionNotFoundError, BlobNotFoundError) as exc:
        raise type(exc)(f"cannot unpin to version {target}, the one announced before the "
                        f"pin: {exc}; nothing changed") from exc
    who = by if by is not None else current_user()
    new = Announcement(feed, target, producer=f"feedkit unpin ({who or 'unknown'})")
    _announce(store, new, etag, previous, "unpinning")
    return AnnouncementChange(feed, previous, new, True)
