"""Version manifests and the announcement: the small JSON documents beside the blobs."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

from feedkit.blobs import BlobInfo
from feedkit.errors import IntegrityError
from feedkit.names import validate_feed

__all__ = ["Announcement", "Manifest", "utc_now"]

MANIFEST_FORMAT = 1


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Manifest:
    """Everything a consumer needs to know about one version before fetching it.

    ``snapshot`` is the version's whole state, when the producer wrote one;
    ``delta`` takes ``parent`` to this version. ``nearest_snapshot`` is the newest
    version at or below this one that has a snapshot blob.
    """

    feed: str
    version: int
    parent: int | None
    nearest_snapshot: int
    record_count: int
    state_digest: int
    key: dict[str, Any]
    schema: list[dict[str, Any]]
    index_fields: list[str]
    snapshot: BlobInfo | None = None
    delta: BlobInfo | None = None
    created_at: str = field(default_factory=utc_now)
    source: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "feed": self.feed,
            "version": self.version,
            "parent": self.parent,
            "nearest_snapshot": self.nearest_snapshot,
            "record_count": self.record_count,
            "state_digest": f"{self.state_digest:016x}",
            "key": self.key,
            "schema": self.schema,
            "index_fields": self.index_fields,
            "snapshot": self.snapshot.to_json() if self.snapshot else None,
            "delta": self.delta.to_json() if self.delta else None,
            "created_at": self.created_at,
            "source": self.source,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest.

        Raises:
            IntegrityError: not a manifest this feedkit can read (names ``where``).
        """
        try:
            doc = json.loads(data)
            if doc["format"] != MANIFEST_FORMAT:
                raise ValueError(f"manifest format {doc['format']}")
            manifest = cls(
                feed=validate_feed(doc["feed"]),
                version=int(doc["version"]),
                parent=None if doc["parent"] is None else int(doc["parent"]),
                nearest_snapshot=int(doc["nearest_snapshot"]),
                record_count=int(doc["record_count"]),
                state_digest=int(doc["state_digest"], 16),
                key=dict(doc["key"]),
                schema=list(doc["schema"]),
                index_fields=list(doc["index_fields"]),
                snapshot=BlobInfo.from_json(doc["snapshot"]) if doc["snapshot"] else None,
                delta=BlobInfo.from_json(doc["delta"]) if doc["delta"] else None,
                created_at=str(doc["created_at"]),
                source=doc.get("source"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"unreadable manifest {where}: {exc}") from exc
        if manifest.snapshot is None and manifest.delta is None:
            raise IntegrityError(f"unreadable manifest {where}: it names no blob")
        if manifest.delta is not None and manifest.parent is None:
            raise IntegrityError(f"unreadable manifest {where}: a delta without a parent")
        return manifest


@dataclass(frozen=True)
class Announcement:
    """The one mutable object per feed: which version consumers should serve."""

    feed: str
    version: int
    announced_at: str = field(default_factory=utc_now)
    producer: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({"format": MANIFEST_FORMAT, "feed": self.feed, "version": self.version,
                           "announced_at": self.announced_at, "producer": self.producer},
                          sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Announcement:
        try:
            doc = json.loads(data)
            version = doc["version"]
            if type(version) is not int or version <= 0:
                raise ValueError(f"bad version {version!r}")
            return cls(validate_feed(doc["feed"]), version, str(doc.get("announced_at", "")),
                       doc.get("producer"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"unreadable announcement {where}: {exc}") from exc
