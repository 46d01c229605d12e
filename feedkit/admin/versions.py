"""Reading a feed's versions: the announcement, the manifests, ``feedkit versions`` and
``feedkit inspect``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from feedkit import names
from feedkit.errors import BlobNotFoundError, FeedkitError, IntegrityError, VersionNotFoundError
from feedkit.manifest import Announcement, Manifest, Pin
from feedkit.planner import plan
from feedkit.store import BlobStore

__all__ = ["FeedVersions", "Inspection", "VersionInfo", "inspect_version", "list_versions",
           "listed_versions", "read_announcement", "read_manifest", "resolve_version"]


def read_announcement(store: BlobStore, feed: str) -> tuple[Announcement, str] | None:
    """The feed's announcement and its ETag; None when the feed was never announced.

    Raises:
        ConfigurationError: an invalid feed name.
        IntegrityError: the announcement is unreadable, or names another feed.
        StoreError: the store failed.
    """
    key = names.announcement_key(names.validate_feed(feed))
    try:
        data, etag = store.read_if_changed(key) or (b"", "")
    except BlobNotFoundError:
        return None
    return Announcement.from_bytes(data, key, feed=feed), etag


def read_manifest(store: BlobStore, feed: str, version: int) -> Manifest:
    """Read one manifest (what ``Loader.manifest`` does, without a cache folder).

    Raises:
        VersionNotFoundError: no manifest for ``version``.
        IntegrityError: unreadable, or it names another feed or version.
    """
    key = names.manifest_key(feed, version)
    try:
        data = store.get_bytes(key)
    except BlobNotFoundError as exc:
        raise VersionNotFoundError(f"feed {feed!r}: no version {version} ({key})") from exc
    m = Manifest.from_bytes(data, key)
    if m.feed != feed or m.version != version:
        raise IntegrityError(f"manifest {key} names feed {m.feed!r} version {m.version}")
    return m


def listed_versions(store: BlobStore, feed: str) -> list[int]:
    """Every version with a manifest, ascending."""
    found = (names.parse_manifest_key(k) for k in store.list(names.manifests_prefix(feed)))
    return sorted(v for v in found if v is not None)


def resolve_version(store: BlobStore, feed: str,
                    version: int | None) -> tuple[int, Announcement | None]:
    """``version`` (validated), or the announced one when None; and the announcement.

    Raises:
        ConfigurationError: an invalid feed name or version.
        VersionNotFoundError: no version given and nothing announced.
    """
    current = read_announcement(store, feed)
    announcement = current[0] if current else None
    if version is not None:
        return names.validate_version(version), announcement
    if announcement is None:
        raise VersionNotFoundError(f"feed {feed!r}: nothing announced in {store.url}; "
                                   "name a version")
    return announcement.version, announcement




@dataclass(frozen=True)
class VersionInfo:
    """One line of ``feedkit versions``."""

    version: int
    created_at: str
    parent: int | None
    record_count: int
    snapshot_size: int | None  # bytes of the snapshot blob; None: no snapshot
    delta_size: int | None  # bytes of the delta blob; None: no delta
    iceberg_snapshot: int | None  # the manifest's source.snapshot_id, when recorded
    source: dict[str, Any] | None
    announced: bool
    pinned: bool  # announced, and held there by a pin
    latest: bool  # the version announced before the pin (``feedkit unpin`` returns to it)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "created_at": self.created_at, "parent": self.parent,
                "record_count": self.record_count, "snapshot_size": self.snapshot_size,
                "delta_size": self.delta_size, "iceberg_snapshot": self.iceberg_snapshot,
                "source": self.source, "announced": self.announced, "pinned": self.pinned,
                "latest": self.latest}


@dataclass(frozen=True)
class FeedVersions:
    """Every version of a feed, newest first, and its announcement."""

    feed: str
    announcement: Announcement | None
    versions: list[VersionInfo]

    def to_json(self) -> dict[str, Any]:
        a = self.announcement
        return {"feed": self.feed, "announced": a.version if a else None,
                "pinned": a.pinned.to_json() if a and a.pinned else None,
                "versions": [v.to_json() for v in self.versions]}


def list_versions(store: BlobStore, feed: str, *, limit: int | None = None) -> FeedVersions:
    """Every version in the store (from the manifests listing), newest first.

    Args:
        store: the store.
        feed: the feed.
        limit: only the newest ``limit`` versions (None: all).

    Raises:
        VersionNotFoundError: the store holds neither a manifest nor an announcement of
            ``feed`` (a misspelt name, or the wrong store).
        IntegrityError: a manifest or the announcement is unreadable.
        StoreError: the store failed.
    """
    current = read_announcement(store, feed)
    announcement = current[0] if current else None
    listed = listed_versions(store, feed)
    if not listed and announcement is None:
        raise VersionNotFoundError(f"feed {feed!r}: no versions in {store.url}")
    listed.reverse()
    if limit is not None:
        listed = listed[:max(limit, 0)]
    pin = announcement.pinned if announcement else None
    rows = []
    for version in listed:
        m = read_manifest(store, feed, version)
        src = m.source if isinstance(m.source, dict) else None
        snapshot_id = src.get("snapshot_id") if src else None
        announced = announcement is not None and announcement.version == version
        rows.append(VersionInfo(
            version=version, created_at=m.created_at, parent=m.parent,
            record_count=m.record_count,
            snapshot_size=m.snapshot.size if m.snapshot else None,
            delta_size=m.delta.size if m.delta else None,
            iceberg_snapshot=snapshot_id if isinstance(snapshot_id, int) else None,
            source=src, announced=announced, pinned=announced and pin is not None,
            latest=pin is not None and pin.latest == version))
    return FeedVersions(feed, announcement, rows)


@dataclass(frozen=True)
class Inspection:
    """One version's manifest, where it stands, and what a fresh consumer fetches for it."""

    manifest: Manifest
    announced: bool
    pin: Pin | None  # the pin holding the feed at this version, if it is pinned
    fetch_snapshot: int | None  # the snapshot a fresh consumer starts from
    fetch_deltas: list[int]  # then the deltas it applies (their versions)
    fetch_bytes: int | None
    fetch_error: str | None  # why no fresh consumer could load it (missing or broken chain)

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "feed": m.feed, "version": m.version, "announced": self.announced,
            "pinned": self.pin.to_json() if self.pin else None, "created_at": m.created_at,
            "parent": m.parent, "nearest_snapshot": m.nearest_snapshot,
            "record_count": m.record_count, "state_digest": f"{m.state_digest:016x}",
            "key": m.key, "index_fields": m.index_fields, "schema": m.schema,
            "snapshot": m.snapshot.to_json() if m.snapshot else None,
            "delta": m.delta.to_json() if m.delta else None, "source": m.source,
            "fetch": {"snapshot": self.fetch_snapshot, "deltas": self.fetch_deltas,
                      "bytes": self.fetch_bytes, "error": self.fetch_error},
        }


def inspect_version(store: BlobStore, feed: str, version: int | None = None) -> Inspection:
    """The manifest of ``version`` (default: the announced one) and how it loads.

    Raises:
        VersionNotFoundError: no such version, or nothing announced and no version given.
        IntegrityError: the manifest or the announcement is unreadable.
        StoreError: the store failed.
    """
    version, announcement = resolve_version(store, feed, version)
    m = read_manifest(store, feed, version)
    announced = announcement is not None and announcement.version == version
    try:
        p = plan(m, None, partial(read_manifest, store, feed))
    except FeedkitError as exc:
        fetch: tuple[Any, ...] = (None, [], None, str(exc))
    else:
        fetch = (p.snapshot.version if p.snapshot else None, [d.version for d in p.deltas],
                 p.cost, None)
    return Inspection(m, announced, announcement.pinned if announced and announcement else None,
                      *fetch)
