"""Blobs: a state file compressed with zstd, checksummed with SHA-256 over the compressed bytes.

A manifest names each blob with its size, its SHA-256 and its decompressed size;
decompression stops at that size, so a blob cannot expand past what its
manifest declared (no zstd bombs). Everything streams: a blob is never held whole
in memory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import xxhash
import zstandard

from feedkit.errors import ConfigurationError, IntegrityError
from feedkit.names import check_object_name

__all__ = ["BlobInfo", "compress_file", "decompress_file", "window_limit"]

_CHUNK = 1 << 20
# Decoding windows: libzstd's own default limit (2**27) at most, and no more than the
# declared output needs (rounded up to a power of two, at least 1 MiB), so a frame cannot
# make a consumer allocate a large window for a small blob.
_MAX_WINDOW = 1 << 27
_MIN_WINDOW = 1 << 20
_FRAME_HEADER_MAX = 18  # bytes: the longest zstd frame header


_MAX_SIZE = (1 << 63) - 1
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class BlobInfo:
    """What a manifest records about one blob."""

    key: str
    size: int
    sha256: str
    raw_size: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256, "raw_size": self.raw_size}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BlobInfo:
        """Read a manifest's blob object, refusing what feedkit never writes.

        Raises:
            ValueError: a key that is no plain object name (``..``, absolute, NUL, too
                long), a size that is not an integer in ``[0, 2**63)``, or a SHA-256 that
                is not 64 lower-case hex digits (``Manifest.from_bytes`` reports it as an
                IntegrityError naming the manifest).
            KeyError, TypeError: a field is missing, or ``doc`` is not an object.
        """
        key, sha = doc["key"], doc["sha256"]
        try:
            check_object_name(key, "of the manifest")
        except ConfigurationError as exc:  # it names the key; a ValueError to the caller
            raise ValueError(f"blob key: {exc}") from exc
        if not isinstance(sha, str) or len(sha) != 64 or not _HEX.issuperset(sha):
            raise ValueError(f"blob {key}: sha256 {sha!r} is not 64 lower-case hex digits")
        for name in ("size", "raw_size"):
            value = doc[name]
            if type(value) is not int or not 0 <= value <= _MAX_SIZE:
                raise ValueError(f"blob {key}: {name} {value!r} is not a size in bytes")
        return cls(key, doc["size"], sha, doc["raw_size"])


def owner_only(path: str, flags: int) -> int:
    """``open(..., opener=owner_only)``: files feedkit creates are readable by their owner only."""
    return os.open(path, flags, 0o600)


class _HashingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)


def compress_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: str,
                  level: int = 3) -> BlobInfo:
    """Compress the state file ``src`` into the blob file ``dst``."""
    raw_size = os.path.getsize(src)
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=-1)
    with open(src, "rb") as fin, open(dst, "wb", opener=owner_only) as fout:
        out = _HashingWriter(fout)
        cctx.copy_stream(fin, cast(BinaryIO, out), size=raw_size, read_size=_CHUNK, write_size=_CHUNK)
    return BlobInfo(key, out.size, out.sha.hexdigest(), raw_size)


class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data


def window_limit(raw_size: int) -> int:
    """The largest zstd window a blob of ``raw_size`` decompressed bytes may ask for."""
    return min(_MAX_WINDOW, max(_MIN_WINDOW, 1 << max(0, raw_size - 1).bit_length()))


def _declared_size(fin: BinaryIO, info: BlobInfo) -> IntegrityError | None:
    """Refuse a frame whose header declares another size than the manifest (a zstd bomb
    announces itself there), before decompressing anything; ``fin`` is left at 0."""
    head = fin.read(_FRAME_HEADER_MAX)
    fin.seek(0)
    try:
        declared = zstandard.get_frame_parameters(head).content_size
    except zstandard.ZstdError:
        return None  # not a frame header: decompression reports it
    if declared not in (zstandard.CONTENTSIZE_UNKNOWN, info.raw_size):
        return IntegrityError(f"blob {info.key}: its zstd frame declares {declared} bytes, "
                              f"the manifest says {info.raw_size}")
    return None


def decompress_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], info: BlobInfo,
                    hash_after: int | None = None) -> bytes | None:
    """Verify the blob file ``src`` against ``info`` and decompress it into ``dst``, in one pass.

    With ``hash_after``, also return the xxh3-128 digest of the decompressed bytes past
    the first ``hash_after`` (a state file's body checksum), so the caller need not read
    the output again to check it.

    Nothing is allocated or written in proportion to what the blob claims: a frame that
    declares more (or less) than ``info.raw_size`` is refused from its header, output
    stops before it would pass ``raw_size`` (``dst`` never holds more), memory holds one
    1 MiB chunk and a window of at most :func:`window_limit` bytes.

    Raises:
        IntegrityError: wrong size or checksum, a corrupt zstd frame, a frame asking
            for a larger window than the blob can need, or output longer or shorter
            than the declared size. ``dst`` may then hold garbage: callers write to a
            temporary name.
    """
    size = os.path.getsize(src)
    if size != info.size:
        raise IntegrityError(f"blob {info.key}: {size} bytes, the manifest says {info.size}")
    dctx = zstandard.ZstdDecompressor(max_window_size=window_limit(info.raw_size))
    written = 0
    body = xxhash.xxh3_128() if hash_after is not None else None
    with open(src, "rb") as fin, open(dst, "wb", opener=owner_only) as fout:
        failure = _declared_size(fin, info)
        source = _HashingReader(fin)
        try:
            with dctx.stream_reader(cast(BinaryIO, source), read_size=_CHUNK, closefd=False) as reader:
                while failure is None and (chunk := reader.read(_CHUNK)):
                    written += len(chunk)
                    if written > info.raw_size:
                        failure = IntegrityError(
                            f"blob {info.key}: expands past its declared {info.raw_size} bytes")
                        break
                    fout.write(chunk)
                    if body is not None and written > hash_after:  # type: ignore[operator]
                        skip = max(0, len(chunk) - (written - hash_after))  # type: ignore[operator]
                        body.update(memoryview(chunk)[skip:])
        except zstandard.ZstdError as exc:
            failure = IntegrityError(f"blob {info.key}: corrupt zstd data: {exc}")
        while source.read(_CHUNK):  # hash whatever the decompressor did not read
            pass
    if source.sha.hexdigest() != info.sha256:
        raise IntegrityError(f"blob {info.key}: SHA-256 mismatch (corrupt or replaced blob)")
    if failure is not None:
        raise failure
    if written != info.raw_size:
        raise IntegrityError(f"blob {info.key}: {written} bytes decompressed, "
                             f"the manifest says {info.raw_size}")
    return body.digest() if body is not None else None
