"""Feed names and the naming of every object in a store: the one place that owns it.

Layout inside a store (relative to its root or prefix)::

    {feed}/announced.json
    {feed}/versions/{version:020d}.json
    {feed}/snapshots/{version:020d}.snapshot.zst
    {feed}/deltas/{from:020d}-{to:020d}.delta.zst

Zero-padded versions make a lexical listing a numeric one.
"""

from __future__ import annotations

import re

from feedkit.errors import ConfigurationError

__all__ = [
    "MAX_OBJECT_NAME",
    "MAX_VERSION",
    "announcement_key",
    "check_object_name",
    "blobs_prefixes",
    "delta_key",
    "manifest_key",
    "manifests_prefix",
    "parse_blob_key",
    "parse_manifest_key",
    "snapshot_key",
    "validate_feed",
    "validate_version",
]

_FEED_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_VERSION = 2**63 - 1
MAX_OBJECT_NAME = 1024  # bytes of UTF-8: the longest S3 key
_MAX_PART = 255  # bytes: the longest file name on common file systems


def validate_feed(feed: object) -> str:
    """Return ``feed`` if it is a valid feed name.

    Raises:
        ConfigurationError: the name is not ``[a-z0-9][a-z0-9._-]*`` (at most 128
            characters), or contains ``..``; names become path and key parts.
    """
    if not isinstance(feed, str) or not _FEED_RE.fullmatch(feed) or ".." in feed:
        raise ConfigurationError(
            f"invalid feed name {feed!r}: use lower-case letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters, no '..')"
        )
    return feed


def validate_version(version: object) -> int:
    """Return ``version`` if it is a valid version number (0 < v < 2**63)."""
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        raise ConfigurationError(f"invalid version {version!r}: a positive 64-bit integer")
    return version


def announcement_key(feed: str) -> str:
    return f"{feed}/announced.json"


def check_object_name(key: str, store: str) -> list[str]:
    """The ``/``-separated parts of an object name, refusing any name that could reach
    outside a store's root or prefix (empty, absolute, ``.``, ``..``, ``//``), or that a
    store could not hold: control characters (NUL among them), unencodable text, more
    than 1024 bytes (S3's limit) or a part longer than 255 bytes (a file name's).

    Raises:
        ConfigurationError: the name is not a plain relative path (names the store and
            the name).
    """
    if not isinstance(key, str):
        raise ConfigurationError(f"store {store}: invalid object name {key!r} (not a string)")
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or _CONTROL.search(key):
        raise ConfigurationError(f"store {store}: invalid object name {key!r}")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate
        raise ConfigurationError(f"store {store}: invalid object name {key!r}") from None
    if size > MAX_OBJECT_NAME or any(len(p.encode()) > _MAX_PART for p in parts):
        raise ConfigurationError(f"store {store}: object name {key[:80]!r}... is too long "
                                 f"({size} bytes; at most {MAX_OBJECT_NAME}, "
                                 f"{_MAX_PART} per part)")
    return parts


def manifests_prefix(feed: str) -> str:
    return f"{feed}/versions/"


def manifest_key(feed: str, version: int) -> str:
    return f"{feed}/versions/{version:020d}.json"


def snapshot_key(feed: str, version: int) -> str:
    return f"{feed}/snapshots/{version:020d}.snapshot.zst"


def delta_key(feed: str, from_version: int, to_version: int) -> str:
    return f"{feed}/deltas/{from_version:020d}-{to_version:020d}.delta.zst"


def blobs_prefixes(feed: str) -> tuple[str, str]:
    """The prefixes under which a feed's snapshot and delta blobs are listed."""
    return f"{feed}/snapshots/", f"{feed}/deltas/"


def parse_blob_key(key: str) -> int | None:
    """The version a blob key belongs to (a snapshot's version, a delta's ``to``), or None
    when ``key`` is not a blob name."""
    name = key.rsplit("/", 1)[-1]
    if len(name) == 33 and name.endswith(".snapshot.zst") and name[:20].isdigit():
        return int(name[:20])
    if (len(name) == 51 and name.endswith(".delta.zst") and name[20] == "-"
            and name[:20].isdigit() and name[21:41].isdigit()):
        return int(name[21:41])
    return None


def parse_manifest_key(key: str) -> int | None:
    """The version a manifest key names, or None when ``key`` is not one."""
    name = key.rsplit("/", 1)[-1]
    if len(name) == 25 and name.endswith(".json") and name[:20].isdigit():
        return int(name[:20])
    return None
