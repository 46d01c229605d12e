"""Blob stores: the contract, and ``open_store(url)`` choosing an implementation by URL scheme.

A store holds immutable blobs and manifests (written create-only) and one mutable
announcement per feed (replaced with compare-and-swap on its ETag). Object names
come from :mod:`feedkit.names`; stores never invent names.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from feedkit.errors import ConfigurationError

__all__ = ["BlobStore", "Watch", "open_store"]


class Watch(abc.ABC):
    """A running change notification; ``stop()`` ends it."""

    @abc.abstractmethod
    def stop(self) -> None: ...


class BlobStore(abc.ABC):
    """Where feeds live. Implementations: :class:`feedkit.store.local.LocalStore`,
    :class:`feedkit.store.s3.S3Store`.

    Every method raises :class:`feedkit.StoreError` subclasses, never the backend's
    own exceptions.
    """

    url: str

    @abc.abstractmethod
    def put_new(self, key: str, src: str | os.PathLike[str]) -> None:
        """Store the file ``src`` under ``key``, create-only.

        Raises:
            BlobExistsError: ``key`` exists already (a second writer never overwrites).
        """

    @abc.abstractmethod
    def put_new_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, create-only (see :meth:`put_new`)."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole.

        Raises:
            BlobNotFoundError: no object under ``key``.
        """

    @abc.abstractmethod
    def download(self, key: str, dest: str | os.PathLike[str]) -> int:
        """Stream the object ``key`` into the file ``dest``; return its size.

        Raises:
            BlobNotFoundError: no object under ``key``.
            OSError: writing ``dest`` failed (a full or read-only folder): the caller's
                file, so the caller names it.
        """

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (garbage collection only; missing keys are fine)."""

    @abc.abstractmethod
    def read_if_changed(self, key: str, etag: str | None = None) -> tuple[bytes, str] | None:
        """Read a mutable object with its ETag; None when its ETag is still ``etag``.

        Raises:
            BlobNotFoundError: no object under ``key``.
        """

    @abc.abstractmethod
    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        """Replace ``key`` only if its ETag is ``etag`` (None: only if it does not exist).

        Returns the new ETag.

        Raises:
            ProducerFencedError: the object changed since ``etag`` was read.
        """

    def watch(self, key: str, callback: Callable[[], None]) -> Watch | None:
        """Call ``callback`` soon after ``key`` changes; None when the store cannot watch
        (callers then poll)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and watchers."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def open_store(url: str | os.PathLike[str], **options: Any) -> BlobStore:
    """Open the store at ``url``.

    - ``file:///path`` (or a plain path): a local folder (no options). The URL must name
      a folder: ``""``, ``"file:"``, ``"file://"`` and ``"file://localhost"`` are errors,
      not the working directory (say ``"."`` for that). The folder need not exist; the
      first write creates it.
    - ``s3://bucket/prefix``: S3 or an S3-compatible server, with the ``s3`` extra;
      options are :class:`feedkit.store.s3.S3Store`'s (``endpoint_url``, ``region``,
      ``connect_timeout``, ``read_timeout``, ...). The endpoint also comes from
      ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; credentials from boto3's chain.

    Raises:
        ConfigurationError: an unknown scheme, a malformed URL (a ``file`` URL with a host,
            a query or a fragment, or with no path), an empty or blank path, or an unknown
            option.
        NotInstalledError: ``s3://`` without boto3 (``pip install 'feedkit[s3]'``).
    """
    try:
        text = os.fspath(url)
    except TypeError:
        text = url  # type: ignore[assignment]
    if not isinstance(text, str):
        raise ConfigurationError(f"store URL {url!r}: a str or os.PathLike expected")
    if not text.strip():
        raise ConfigurationError(f"store URL {text!r} is empty: name a folder (file:///path, "
                                 "or '.' for the working directory) or s3://bucket/prefix")
    try:
        parsed = urlparse(text)
    except ValueError as exc:  # an unbalanced '[' in the host part
        raise ConfigurationError(f"store URL {text!r}: {exc}") from None
    if parsed.scheme in ("file", ""):
        from feedkit.store.local import LocalStore

        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ConfigurationError(f"store URL {text!r}: file URLs take no host "
                                         "(file:///path)")
            if "?" in text or "#" in text:
                raise ConfigurationError(f"store URL {text!r}: file URLs take no query or "
                                         "fragment (write '?' as %3F and '#' as %23)")
            path = unquote(parsed.path)
            if not path.strip():
                raise ConfigurationError(f"store URL {text!r} names no folder: use "
                                         "file:///absolute/path")
        else:
            path = text
        if options:
            raise ConfigurationError(f"store URL {text!r}: unknown options {sorted(options)}")
        return LocalStore(Path(path))
    if parsed.scheme == "s3":
        from feedkit.store.s3 import S3Store

        if not parsed.netloc:
            raise ConfigurationError(f"store URL {text!r}: name a bucket (s3://bucket/prefix)")
        try:
            return S3Store(parsed.netloc, unquote(parsed.path).strip("/"), **options)
        except TypeError as exc:  # an unknown keyword
            raise ConfigurationError(f"store URL {text!r}: {exc}") from None
    raise ConfigurationError(f"store URL {text!r}: unsupported scheme {parsed.scheme!r} "
                             "(use file:// or s3://)")
