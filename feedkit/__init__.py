"""feedkit: in-process, memory-mapped, read-only key/value feeds published from Iceberg tables.

>>> import feedkit
>>> store = feedkit.open_store("file:///var/lib/feeds")
>>> with feedkit.Consumer(store, feed="muse.dimensions", cache_dir="/var/cache/feedkit") as feed:
...     feed.get((80000123, "country"))

``Consumer`` needs only msgpack, zstandard, numpy and xxhash; ``Producer`` needs the
``producer`` extra (pyarrow, pyiceberg). Both are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from feedkit.errors import (
    AccessDeniedError,
    BlobExistsError,
    BlobNotFoundError,
    ClosedError,
    ConfigurationError,
    FeedkitError,
    FeedPinnedError,
    IntegrityError,
    KeyTypeError,
    NotInstalledError,
    ProducerFencedError,
    RefusedError,
    StoreError,
    StoreTimeoutError,
    ValidationError,
    VersionNotFoundError,
)
from feedkit.store import BlobStore, open_store

if TYPE_CHECKING:
    from feedkit.consumer import Consumer
    from feedkit.producer import Producer

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "BlobExistsError",
    "BlobNotFoundError",
    "BlobStore",
    "ClosedError",
    "ConfigurationError",
    "Consumer",
    "FeedPinnedError",
    "FeedkitError",
    "IntegrityError",
    "KeyTypeError",
    "NotInstalledError",
    "Producer",
    "ProducerFencedError",
    "RefusedError",
    "StoreError",
    "StoreTimeoutError",
    "ValidationError",
    "VersionNotFoundError",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import feedkit` never pulls pyarrow in for a consumer.
    if name == "Consumer":
        from feedkit.consumer import Consumer

        return Consumer
    if name == "Producer":
        try:
            from feedkit.producer import Producer
        except ImportError as exc:
            raise NotInstalledError(
                f"feedkit.Producer needs the producer extra ({exc.name} is missing): "
                "pip install 'feedkit[producer]'"
            ) from exc
        return Producer
    raise AttributeError(f"module 'feedkit' has no attribute {name!r}")
