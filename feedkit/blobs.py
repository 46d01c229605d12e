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

from feedkit.errors import IntegrityError

__all__ = ["BlobInfo", "compress_file", "decompress_file"]

_CHUNK = 1 << 20


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
        return cls(str(doc["key"]), int(doc["size"]), str(doc["sha256"]), int(doc["raw_size"]))


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
    with open(src, "rb") as fin, open(dst, "wb") as fout:
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


def decompress_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], info: BlobInfo,
                    hash_after: int | None = None) -> bytes | None:
    """Verify the blob file ``src`` against ``info`` and decompress it into ``dst``, in one pass.

    With ``hash_after``, also return the xxh3-128 digest of the decompressed bytes past
    the first ``hash_after`` (a state file's body checksum), so the caller need not read
    the output again to check it.

    Raises:
        IntegrityError: wrong size or checksum, a corrupt zstd frame, or output longer
            or shorter than the declared size. ``dst`` may then hold garbage: callers
            write to a temporary name.
    """
    size = os.path.getsize(src)
    if size != info.size:
        raise IntegrityError(f"blob {info.key}: {size} bytes, the manifest says {info.size}")
    dctx = zstandard.ZstdDecompressor()
    written = 0
    failure: IntegrityError | None = None
    body = xxhash.xxh3_128() if hash_after is not None else None
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        source = _HashingReader(fin)
        try:
            with dctx.stream_reader(cast(BinaryIO, source), read_size=_CHUNK, closefd=False) as reader:
                while chunk := reader.read(_CHUNK):
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
