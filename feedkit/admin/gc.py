"""``feedkit gc``: delete the manifests and blobs no retained version needs, and the
temporary files failed writes left in a local store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
from feedkit.store.local import LocalStore

from .versions import listed_versions, read_announcement

__all__ = ["TEMP_AGE", "DeletedBlob", "GcReport", "collect_garbage"]

TEMP_AGE = 3600.0
"""Seconds since its last write after which gc takes a local store's temporary file for a
leftover. A write in progress writes its file all along (and then renames or removes it
at once), so only a writer stopped for that long could still own one; if it does, its
write fails (nothing is announced) and it can retry."""


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
    # a local store's temporary files left by failed writes (``.{name}.{12 hex}.tmp``)
    deleted_temporaries: list[DeletedBlob] = field(default_factory=list)

    @property
    def deleted_bytes(self) -> int:
        """Bytes freed, as far as known (manifests, blobs a manifest names, temporaries)."""
        return (self.deleted_manifest_bytes + sum(b.size or 0 for b in self.deleted_blobs)
                + sum(t.size or 0 for t in self.deleted_temporaries))

    def to_json(self) -> dict[str, Any]:
        return {"feed": self.feed, "keep": self.keep, "dry_run": self.dry_run,
                "retained": self.retained, "roots": self.roots,
                "deleted_versions": self.deleted_versions,
                "deleted_blobs": [{"key": b.key, "size": b.size} for b in self.deleted_blobs],
                "deleted_temporaries": [{"key": t.key, "size": t.size}
                                        for t in self.deleted_temporaries],
                "deleted_bytes": self.deleted_bytes}


def _referenced(announcement: Announcement | None) -> set[int]:
    if announcement is None:
        return set()
    out = {announcement.version}
    if announcement.pinned is not None:
        out.add(announcement.pinned.latest)
    return out


def _leftover_temporaries(store: BlobStore, feed: str, temp_age: float) -> list[DeletedBlob]:
    """The temporary files in a local store's folders of ``feed`` not written for
    ``temp_age`` seconds. Other stores have none: an S3 upload is whole or absent."""
    if not isinstance(store, LocalStore):
        return []
    prefixes = (names.announcement_key(feed), names.manifests_prefix(feed),
                *names.blobs_prefixes(feed))
    return [DeletedBlob(t.key, t.size) for prefix in prefixes
            for t in store.temporaries(prefix) if t.age >= temp_age]


def collect_garbage(store: BlobStore, feed: str, *, keep: int, dry_run: bool = False,
                    temp_age: float = TEMP_AGE) -> GcReport:
    """Delete the manifests and blobs no retained version needs, and the temporary files
    failed writes left in a local store.

    Retained: the ``keep`` newest versions, the announced version, and the pin's
    ``latest`` (the announced version is the pinned one), each with its chain back to
    its nearest snapshot (every version a fresh consumer plans through). Every retained
    manifest keeps all its blobs, so whatever a consumer plans over the manifests left
    can be fetched; consumers stop walking back at the first missing manifest.
    Manifests are deleted before blobs, so no consumer starts planning on a version whose
    blobs are going. A blob no manifest names (a failed cycle's) goes only when it is
    older than the newest manifest: a newer one may belong to a cycle uploading now.

    In a local store (:class:`~feedkit.store.local.LocalStore`), the feed's temporary
    files (``.{name}.{12 hex}.tmp``: a write whose process was killed, or that failed and
    could not remove its file) go too, once not written for ``temp_age`` seconds: a write
    in progress writes its file all along, so an old one is a leftover (see
    :data:`TEMP_AGE`). The test is the file's modification time, not its writer's pid,
    which names no process across containers (pid namespaces) sharing the folder.

    Args:
        store: the store.
        feed: the feed.
        keep: how many of the newest versions to keep (at least 1).
        dry_run: report what would be deleted, delete nothing.
        temp_age: seconds since its last write after which a temporary file is a
            leftover (default :data:`TEMP_AGE`, an hour). 0 takes every one: only when
            no producer or ``feedkit`` command writes to the store meanwhile.

    Raises:
        ConfigurationError: ``keep`` below 1, or ``temp_age`` negative or not a number.
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
    if (not isinstance(temp_age, int | float) or isinstance(temp_age, bool)
            or math.isnan(temp_age) or temp_age < 0):
        raise ConfigurationError(f"feed {feed!r}: temp_age must be a number of seconds >= 0, "
                                 f"not {temp_age!r}")
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
    temporaries = _leftover_temporaries(store, feed, temp_age)
    report = GcReport(feed, keep, dry_run, sorted(retained), sorted(roots), doomed,
                      sum(sizes[v] for v in doomed), blobs, temporaries)
    if dry_run:
        return report
    if doomed or blobs:
        now = read_announcement(store, feed)
        if now is not None and (now[1] != (current[1] if current else None)):
            moved = sorted(v for v in _referenced(now[0]) if v in doomed)
            if moved:
                raise ProducerFencedError(
                    f"feed {feed!r}: the announcement moved to version {now[0].version} while "
                    f"gc ran, and names version(s) {moved} it was deleting; nothing deleted, "
                    "run gc again")
    for version in doomed:  # manifests first: nobody starts planning on what goes next
        store.delete(names.manifest_key(feed, version))
    for blob in blobs:
        store.delete(blob.key)
    for temp in temporaries:
        store.delete(temp.key)
    return report
