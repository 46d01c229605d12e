"""Version manifests and the announcement: the small JSON documents beside the blobs."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, replace
from typing import Any

from feedkit.blobs import BlobInfo
from feedkit.errors import IntegrityError
from feedkit.names import MAX_VERSION, announcement_key, validate_feed, validate_version

__all__ = ["Announcement", "Manifest", "Pin", "utc_now"]

MANIFEST_FORMAT = 1
# A manifest's format is its version's state format (docs/FORMAT.md, 2.2 and 10): 2 when
# the snapshot is a format-2 base. A feedkit that reads only format 1 refuses the
# manifest of a format-2 version (IntegrityError) before it downloads anything.
MANIFEST_FORMATS = (1, 2)


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
    signature: dict[str, str] | None = None  # see feedkit.signing; written only when signed
    state_format: int = MANIFEST_FORMAT  # the format of the version's snapshot (a base)

    def signed_payload(self) -> bytes:
        """The bytes a signature covers: the manifest as written, without ``signature``."""
        return replace(self, signature=None).to_bytes()

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": self.state_format,
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
        if self.signature is not None:
            doc["signature"] = self.signature
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest.

        Raises:
            IntegrityError: not a manifest this feedkit can read (names ``where``).
        """
        try:
            doc = json.loads(data)
            if type(doc["format"]) is not int or doc["format"] not in MANIFEST_FORMATS:
                raise ValueError(f"manifest format {doc['format']!r}, this feedkit reads "
                                 f"{', '.join(map(str, MANIFEST_FORMATS))}")
            # Exact types: int() would take 1.5, "12" or true, and int(x, 16) "-1" or "0x1".
            version, parent = validate_version(doc["version"]), doc["parent"]
            if parent is not None and validate_version(parent) >= version:
                raise ValueError(f"parent {parent} is not older than version {version}")
            if validate_version(doc["nearest_snapshot"]) > version:
                raise ValueError(f"nearest_snapshot {doc['nearest_snapshot']} is newer than "
                                 f"version {version}")
            count, digest = doc["record_count"], doc["state_digest"]
            if type(count) is not int or not 0 <= count <= MAX_VERSION:
                raise ValueError(f"bad record_count {count!r}")
            if not (isinstance(digest, str) and len(digest) == 16
                    and set(digest) <= set("0123456789abcdef")):
                raise ValueError(f"bad state_digest {digest!r}")
            for name, kind in (("key", dict), ("schema", list), ("index_fields", list),
                               ("source", dict | None)):
                if not isinstance(doc.get(name), kind):
                    raise ValueError(f"bad {name} {doc.get(name)!r}")
            manifest = cls(
                feed=validate_feed(doc["feed"]),
                version=version,
                parent=parent,
                nearest_snapshot=doc["nearest_snapshot"],
                record_count=count,
                state_digest=int(digest, 16),
                key=dict(doc["key"]),
                schema=list(doc["schema"]),
                index_fields=list(doc["index_fields"]),
                snapshot=BlobInfo.from_json(doc["snapshot"]) if doc["snapshot"] else None,
                delta=BlobInfo.from_json(doc["delta"]) if doc["delta"] else None,
                created_at=str(doc["created_at"]),
                source=doc.get("source"),
                signature=_signature(doc.get("signature")),
                state_format=doc["format"],
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # ValueError also covers bad JSON or UTF-8 and the ConfigurationError of a bad
            # feed name or blob key; RecursionError, JSON nested too deep.
            raise IntegrityError(f"unreadable manifest {where}: {exc}") from exc
        if manifest.snapshot is None and manifest.delta is None:
            raise IntegrityError(f"unreadable manifest {where}: it names no blob")
        if manifest.delta is not None and manifest.parent is None:
            raise IntegrityError(f"unreadable manifest {where}: a delta without a parent")
        return manifest


def _signature(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"bad signature {value!r}")
    return dict(value)


def _positive_int(value: object, what: str) -> int:
    if type(value) is not int or value <= 0:
        raise ValueError(f"bad {what} {value!r}")
    return value


def _optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"bad {what} {value!r}")
    return value


@dataclass(frozen=True)
class Pin:
    """An operator's rollback, recorded in the announcement by ``feedkit pin``.

    While an announcement carries a pin, producers publish nothing
    (:class:`feedkit.FeedPinnedError`); consumers simply serve the announced version.
    ``latest`` is the version announced before the pin (the last one a producer
    announced; kept when re-pinning): ``feedkit unpin`` announces it again, and never a
    newer manifest, which may belong to a version nobody announced (a producer killed or
    fenced after writing it).
    """

    at: str  # UTC time of the pin, ISO 8601 with milliseconds
    latest: int
    by: str | None = None  # user@host, best effort
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "by": self.by, "latest": self.latest, "reason": self.reason}

    @classmethod
    def from_json(cls, doc: object) -> Pin:
        """Parse the ``pinned`` object of an announcement.

        Raises:
            ValueError: not a pin object (the caller turns it into an IntegrityError).
        """
        if not isinstance(doc, dict):
            raise ValueError(f"bad pin {doc!r}")
        return cls(at=str(doc.get("at", "")), latest=_positive_int(doc.get("latest"), "pin latest"),
                   by=_optional_str(doc.get("by"), "pin by"),
                   reason=_optional_str(doc.get("reason"), "pin reason"))

    def describe(self, feed: str, version: int) -> str:
        """One line for errors and logs: who pinned which version, when and why."""
        reason = f"reason: {self.reason!r}" if self.reason else "no reason given"
        return (f"feed {feed!r} is pinned to version {version} by {self.by or 'an unknown user'} "
                f"at {self.at or 'an unknown time'} ({reason}); the latest version is "
                f"{self.latest}")


@dataclass(frozen=True)
class Announcement:
    """The one mutable object per feed: which version consumers should serve.

    ``pinned`` is set while an operator holds the feed at ``version`` (``feedkit pin``);
    the field is written only then, and announcements without it read as unpinned.
    ``feed`` must be the feed the announcement is stored under (``{feed}/announced.json``):
    one naming another feed is refused when read.
    """

    feed: str
    version: int
    announced_at: str = field(default_factory=utc_now)
    producer: str | None = None
    pinned: Pin | None = None

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"format": MANIFEST_FORMAT, "feed": self.feed,
                               "version": self.version, "announced_at": self.announced_at,
                               "producer": self.producer}
        if self.pinned is not None:
            doc["pinned"] = self.pinned.to_json()
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str, *, feed: str | None = None) -> Announcement:
        """Parse an announcement, and check that it is the announcement of ``feed``.

        Args:
            data: the announcement's bytes.
            where: where it was read, for messages: its object name or path.
            feed: the feed it must announce. None: the feed named by ``where`` when that
                is an announcement's name (``.../{feed}/announced.json``, as
                :func:`feedkit.names.announcement_key` makes it), else no check.

        Raises:
            IntegrityError: not an announcement this feedkit can read, or the announcement
                of another feed (names ``where`` and both feeds).
        """
        try:
            doc = json.loads(data)
            version = validate_version(doc["version"])  # an int in (0, 2**63), not a bool
            pinned = doc.get("pinned")
            announcement = cls(validate_feed(doc["feed"]), version,
                               str(doc.get("announced_at", "")),
                               _optional_str(doc.get("producer"), "producer"),
                               None if pinned is None else Pin.from_json(pinned))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise IntegrityError(f"unreadable announcement {where}: {exc}") from exc
        expected = feed if feed is not None else _announced_feed(where)
        if expected is not None and announcement.feed != expected:
            # A copied or misplaced file: serving it would serve another feed's versions
            # (or fail later on manifests that are not there).
            raise IntegrityError(
                f"announcement {where} names feed {announcement.feed!r}, but it is the "
                f"announcement of feed {expected!r}: refused")
        return announcement


def _announced_feed(where: str) -> str | None:
    """The feed whose announcement ``where`` names (``[.../]{feed}/announced.json``, as
    :func:`feedkit.names.announcement_key` makes it), or None when it names none."""
    candidate = where.rpartition("/")[0].rpartition("/")[2]
    key = announcement_key(candidate)
    if candidate and (where == key or where.endswith("/" + key)):
        return candidate
    return None
