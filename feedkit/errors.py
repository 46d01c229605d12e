"""The feedkit error tree.

Every error feedkit raises on purpose is a :class:`FeedkitError`. Errors from the
OS, zstd, msgpack and (later) boto3 are translated where they enter feedkit
(``raise ... from exc``), so callers catch one family::

    FeedkitError
    ├── ConfigurationError        bad arguments: feed name, key column, store URL, extras
    │   └── NotInstalledError     an optional dependency is missing (says what to pip install)
    ├── ClosedError               the consumer or producer was closed
    ├── KeyTypeError              a lookup key of the wrong type for the feed (also a TypeError)
    ├── StoreError                the store failed to answer (I/O, permissions, unreachable)
    │   ├── AccessDeniedError     the store refused the credentials or the request (401/403)
    │   ├── BlobExistsError       a create-only write found the name taken
    │   ├── BlobNotFoundError     the store has no object under that name
    │   ├── StoreTimeoutError     the store did not answer in time (a timeout, or a deadline passed)
    │   └── ProducerFencedError   the announcement moved under a producer (compare-and-swap lost)
    │       └── FeedPinnedError   an operator pinned the feed (``feedkit pin``): nothing is published
    ├── IntegrityError            bytes that do not match what the manifest or header promises
    ├── ValidationError           a table the producer refuses to publish (keys, columns, types)
    │   └── RefusedError          a valid table whose change a validator refused (ratio, count, custom)
    └── VersionNotFoundError      no manifest for the asked version, or nothing announced yet
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDeniedError",
    "BlobExistsError",
    "BlobNotFoundError",
    "ClosedError",
    "ConfigurationError",
    "FeedPinnedError",
    "FeedkitError",
    "IntegrityError",
    "KeyTypeError",
    "NotInstalledError",
    "ProducerFencedError",
    "RefusedError",
    "StoreError",
    "StoreTimeoutError",
    "ValidationError",
    "VersionNotFoundError",
]


class FeedkitError(Exception):
    """Root of every error feedkit raises on purpose."""


class ConfigurationError(FeedkitError, ValueError):
    """Arguments that cannot work: a bad feed name, store URL or key column."""


class NotInstalledError(ConfigurationError, ImportError):
    """An optional dependency is missing; the message says which extra to install."""


class ClosedError(FeedkitError):
    """The object was closed and refuses further use."""


class KeyTypeError(FeedkitError, TypeError):
    """A lookup key whose type cannot be a key of this feed."""


class StoreError(FeedkitError):
    """The blob store failed (I/O error, permission, unreachable)."""


class AccessDeniedError(StoreError):
    """The store refused access (HTTP 401/403, no credentials); names the bucket and key."""


class BlobExistsError(StoreError):
    """A create-only write found an object under that name already."""


class BlobNotFoundError(StoreError):
    """The store holds no object under that name."""


class StoreTimeoutError(StoreError):
    """The store did not answer in time: a request timed out after its retries, or an
    operation's deadline passed (a refresh's ``refresh_timeout``, across its retries and
    downloads)."""


class ProducerFencedError(StoreError):
    """The announcement changed since this producer read it: another producer won."""


class FeedPinnedError(ProducerFencedError):
    """The announcement is pinned (``feedkit pin``): a producer publishes nothing until
    ``feedkit unpin``. The message says who pinned which version, when and why.

    ``version`` is the pinned version; ``pin`` the :class:`feedkit.manifest.Pin` read from
    the announcement.
    """

    def __init__(self, message: str, *, version: int | None = None, pin: Any = None) -> None:
        super().__init__(message)
        self.version = version
        self.pin = pin


class IntegrityError(FeedkitError):
    """Bytes that do not match their manifest or header: checksum, size, count or format."""


class ValidationError(FeedkitError):
    """The producer refuses a table: duplicate or null keys, a missing column, a bad type."""


class RefusedError(ValidationError):
    """A validator refused the new state (change ratio, record count, or a custom rule).

    ``results`` holds the failed :class:`feedkit.producer.ValidationResult` objects.
    """

    def __init__(self, message: str, results: list[Any] | None = None) -> None:
        super().__init__(message)
        self.results = list(results or [])


class VersionNotFoundError(FeedkitError):
    """No manifest exists for the requested version, or the feed was never announced."""
