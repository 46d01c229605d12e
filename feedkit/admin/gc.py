"""``feedkit gc``: delete the manifests and blobs no retained version needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedkit import names
from feedkit.errors import (
    ConfigurationError,
    IntegrityError,
    ProducerFencedError,
    VersionNotFoundError,
)
from feedkit.manifest import Announcement, Manifest
from feedkit.store import BlobStore

from .versions import listed_versions, read_announcement

__all__ = ["DeletedBlob", "GcReport", "collect_garbage"]


@dataclass(frozen=True)
class DeletedBlob:
    key: str
    size: int | None  # None: a blob no manifest names (left by a failed cycle)


@dataclass(frozen=True)
class GcReport:
    """What :func:`collect_garbage` kept and deleted (or would delete, in a dry run)."""

    feed: str
    keep: int
    dry_run: bool
    retained: list[int]  # versions whose manifests and blobs stay
    roots: list[int]  # why: the newest ``keep``, the announced, the pinned and its latest
    deleted_versions: list[int]  # their manifests go first
    deleted_manifest_bytes: int
    deleted_blobs: list[DeletedBlob]

    @property
    def deleted_bytes(self) -> int:
        """Bytes freed, as far as known (manifests, and blobs a manifest names)."""
        return self.deleted_manifest_bytes + sum(b.size or 0 for b in self.deleted_blobs)

    def to_json(self) -> dict[str, Any]:
        return {"feed": self.feed, "keep": self.keep, "dry_run": self.dry_run,
                "retained": self.retained, "roots": self.roots,
                "deleted_versions": self.deleted_versions,
                "deleted_blobs": [{"key": b.key, "size": b.size} for b in self.deleted_blobs],
                "deleted_bytes": self.deleted_bytes}


def _referenced(announcement: Announcement | None) -> set[int]:
    if announcement is None:
        return set()
    out = {announcement.version}
    if announcement.pinned is not None:
        out.add(announcement.pinned.latest)
    return out


def collect_garbage(store: BlobStore, feed: str, *, keep: int,
                    dry_run: bool = False) -> GcReport:
    """Delete the manifests and blobs no retained version needs.

    Retained: the ``keep`` newest versions, the announced version, and the pin's
    ``latest`` (the announced version is the pinned one), each with its chain back to
    its nearest snapshot (every version a fresh consumer plans through). Every retained
    manifest keeps all its blobs, so whatever a consumer plans over the manifests left
    can be fetched; consumers stop walking back at the first missing manifest.
    Manifests are deleted before blobs, so no consumer starts planning on a version whose
    blobs are going. A blob no manifest names (a failed cycle's) goes only when it is
    older than the newest manifest: a newer one may belong to a cycle uploading now.

    Args:
        store: the store.
        feed: the feed.
        keep: how many of the newest versions to keep (at least 1).
        dry_run: report what would be deleted, delete nothing.

    Raises:
        ConfigurationError: ``keep`` below 1.
        VersionNotFoundError: a version the announcement names has no manifest.
        IntegrityError: a retained version has no reachable snapshot, or a manifest is
            unreadable: nothing is deleted.
        ProducerFencedError: the announcement moved to a version gc was about to delete
            (a pin meanwhile); nothing is deleted.
        StoreError: the store failed (part of the deletions may be done; run gc again).
    """
    names.validate_feed(feed)
    if type(keep) is not int or keep < 1:
        raise ConfigurationError(f"feed {feed!r}: keep must be at least 1, not {keep!r}")
    current = read_announcement(store, feed)
    announcement = current[0] if current else None
    listed = listed_versions(store, feed)
    manifests: dict[int, Manifest] = {}
    sizes: dict[int, int] = {}
    for version in listed:
        key = names.manifest_key(feed, version)
        data = store.get_bytes(key)
        manifests[version] = m = Manifest.from_bytes(data, key)
        if m.feed != feed or m.version != version:
            raise IntegrityError(f"manifest {key} names feed {m.feed!r} version {m.version}")
        sizes[version] = len(data)
    roots = set(listed[-keep:]) | _referenced(announcement)
    retained: set[int] = set()
    for root in sorted(roots):
        if root not in manifests:
            raise VersionNotFoundError(f"feed {feed!r}: the announcement names version {root}, "
                                       "which has no manifest; gc deletes nothing")
        m = manifests[root]
        while True:
            retained.add(m.version)
            if m.snapshot is not None:
                break
            if m.parent not in manifests:
                raise IntegrityError(f"feed {feed!r}: version {root} has no reachable snapshot "
                                     f"(no manifest for {m.parent}); gc deletes nothing")
            m = manifests[m.parent]  # type: ignore[index]
    doomed = [v for v in listed if v not in retained]
    kept_blobs = {b.key for v in retained for b in (manifests[v].snapshot, manifests[v].delta)
                  if b is not None}
    blob_sizes = {b.key: b.size for m in manifests.values() for b in (m.snapshot, m.delta)
                  if b is not None}
    newest = listed[-1] if listed else 0
    blobs = []
    for prefix in names.blobs_prefixes(feed):
        for key in store.list(prefix):
            of = names.parse_blob_key(key)
            if key in kept_blobs or of is None:
                continue  # needed, or not a blob name: never ours to delete
            if key in blob_sizes or of < newest:
                blobs.append(DeletedBlob(key, blob_sizes.get(key)))
    report = GcReport(feed, keep, dry_run, sorted(retained), sorted(roots), doomed,
                      sum(sizes[v] for v in doomed), blobs)
    if dry_run or not (doomed or blobs):
        return report
    now = read_announcement(store, feed)
    if now is not None and (now[1] != (current[1] if current else None)):
        moved = sorted(v for v in _referenced(now[0]) if v in doomed)
        if moved:
            raise ProducerFencedError(
                f"feed {feed!r}: the announcement moved to version {now[0].version} while gc "
                f"ran, and names version(s) {moved} it was deleting; nothing deleted, run gc again")
    for version in doomed:  # manifests first: nobody starts planning on what goes next
        store.delete(names.manifest_key(feed, version))
    for blob in blobs:
        store.delete(blob.key)
    return report
