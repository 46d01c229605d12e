"""Fuzzing the blob decoder, ``blobs.decompress_file``: damaged and random zstd frames,
manifests that lie about a blob's size, decompressed size or checksum, and zstd bombs.

The property: the call returns (and then wrote exactly ``raw_size`` bytes, the ones
compressed) or raises ``IntegrityError``; it never writes more than ``raw_size`` bytes,
never allocates in proportion to what the frame claims, and never hangs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from feedkit import IntegrityError
from feedkit.blobs import BlobInfo, compress_file, decompress_file, window_limit
from feedkit.format import PREFIX_SIZE, StateFile
from tests.fuzz.support import HUGE_INTS, TIMEOUT, byte_mutations, fuzz_settings, state_seeds

pytestmark = pytest.mark.timeout(TIMEOUT)

KEY = "fuzz.feed/snapshots/00000000000000000007.snapshot.zst"
ALLOCATION_BOUND = 8 << 20  # one 1 MiB chunk plus change; the window is libzstd's, not traced

Decompress = Callable[[bytes, BlobInfo], tuple[bytes | None, bytes]]


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, BlobInfo, bytes]:
    """A real blob written by ``compress_file`` from a real state file: (blob, info, raw)."""
    folder = tmp_path_factory.mktemp("blob-seed")
    state_seeds(folder)
    info = compress_file(folder / "ext", folder / "ext.zst", KEY)
    return (folder / "ext.zst").read_bytes(), info, (folder / "ext").read_bytes()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Decompress]:
    """``run(blob, info)``: decompress ``blob`` against ``info``; (returned digest or None on
    IntegrityError, bytes written). Checks the bounds on output and memory."""
    folder = tmp_path_factory.mktemp("blobs")
    counter = itertools.count()

    def decompress(blob: bytes, info: BlobInfo) -> tuple[bytes | None, bytes]:
        n = next(counter)
        src, dst = folder / f"{n}.zst", folder / f"{n}.out"
        src.write_bytes(blob)
        tracemalloc.start()
        try:
            digest = decompress_file(src, dst, info, hash_after=PREFIX_SIZE)
            assert digest is not None
        except IntegrityError as exc:
            assert info.key in str(exc)  # the message names the blob
            digest = None
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            src.unlink()
        written = dst.read_bytes() if dst.exists() else b""  # a wrong size is refused first
        dst.unlink(missing_ok=True)
        assert peak < ALLOCATION_BOUND, f"{peak} bytes allocated"
        assert len(written) <= info.raw_size  # never more than the manifest allows
        if digest is not None:
            assert len(written) == info.raw_size
        return digest, written

    yield decompress


def honest(blob: bytes, raw_size: int) -> BlobInfo:
    """What an honest manifest says about ``blob``."""
    return BlobInfo(KEY, len(blob), hashlib.sha256(blob).hexdigest(), raw_size)


def test_the_seed_decompresses_to_the_state_file(seed: tuple[bytes, BlobInfo, bytes],
                                                 run: Decompress, tmp_path: Path) -> None:
    blob, info, raw = seed
    digest, written = run(blob, info)
    assert written == raw
    (tmp_path / "state").write_bytes(written)
    StateFile(tmp_path / "state").verify(digest)


@fuzz_settings(300)
@given(st.data())
def test_damaged_blobs(seed: tuple[bytes, BlobInfo, bytes], run: Decompress,
                       data: st.DataObject) -> None:
    """Flipped, truncated, spliced blobs; the manifest's SHA-256 and size either the
    original ones (so the checksum refuses) or repaired (so the zstd decoder sees them)."""
    blob, info, raw = seed
    damaged = data.draw(byte_mutations())(blob)
    repaired = data.draw(st.booleans())
    digest, written = run(damaged, honest(damaged, info.raw_size) if repaired else info)
    if damaged != blob and not repaired:
        assert digest is None
    if digest is not None:
        # zstd's content checksum covers the output: what came out is what went in.
        assert written == raw


@fuzz_settings(200)
@given(st.data())
def test_lying_manifests(seed: tuple[bytes, BlobInfo, bytes], run: Decompress,
                         data: st.DataObject) -> None:
    """A manifest whose size, raw_size (up to 10 GB and beyond) or SHA-256 is wrong."""
    blob, info, raw = seed
    sizes = st.sampled_from([n for n in HUGE_INTS if 0 <= n < 2**63] + [10 * 2**30])
    lie = BlobInfo(
        KEY,
        data.draw(st.just(info.size) | sizes | st.integers(0, 2 * info.size)),
        data.draw(st.just(info.sha256) | st.text("0123456789abcdef", min_size=64, max_size=64)),
        data.draw(st.just(info.raw_size) | sizes | st.integers(0, 2 * info.raw_size)),
    )
    digest, written = run(blob, lie)
    assert (digest is not None) == (lie == info)


@fuzz_settings(200)
@given(payload=st.binary(max_size=5000), level=st.integers(-5, 19),
       content_size=st.booleans(), checksum=st.booleans(), declared=st.integers(0, 6000),
       honest_size=st.booleans())
def test_random_frames(run: Decompress, payload: bytes, level: int, content_size: bool,
                       checksum: bool, declared: int, honest_size: bool) -> None:
    """Frames feedkit did not write (any level, with or without content size and
    checksum): accepted exactly when they decompress to the declared size."""
    frame = zstandard.ZstdCompressor(level=level, write_content_size=content_size,
                                     write_checksum=checksum).compress(payload)
    raw_size = len(payload) if honest_size else declared
    digest, written = run(frame, honest(frame, raw_size))
    assert (digest is not None) == (raw_size == len(payload))
    if digest is not None:
        assert written == payload


@fuzz_settings(200)
@given(blob=st.binary(max_size=2000), raw_size=st.integers(0, 1 << 20))
def test_random_bytes(run: Decompress, blob: bytes, raw_size: int) -> None:
    """Bytes that are mostly not zstd at all, with a manifest that matches them."""
    digest, _ = run(blob, honest(blob, raw_size))
    assert digest is None or raw_size == 0


def streamed(data: bytes, window_log: int) -> bytes:
    """A frame written by a streaming compressor: no content size, the window it is told."""
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=window_log,
                                                            write_content_size=0)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return cobj.compress(data) + cobj.flush()


@pytest.mark.parametrize("content_size", [True, False])
def test_a_zstd_bomb_is_refused_without_writing_past_raw_size(
        run: Decompress, tmp_path: Path, content_size: bool) -> None:
    """64 MiB of zeros in a 2 KiB frame, declared as a 1000-byte blob: refused from the
    frame header when it states its size, else as soon as the output passes 1000 bytes;
    either way nothing past 1000 bytes reaches the disk and memory stays at one chunk."""
    zeros = bytes(64 << 20)
    bomb = (zstandard.ZstdCompressor(level=19).compress(zeros) if content_size
            else streamed(zeros, window_log=20))  # a 1 MiB window: the decoder accepts it
    assert len(bomb) < 4096
    info = honest(bomb, 1000)
    digest, written = run(bomb, info)
    assert digest is None and len(written) <= 1000
    (tmp_path / "b.zst").write_bytes(bomb)
    with pytest.raises(IntegrityError, match="declares 67108864 bytes" if content_size
                       else "expands past its declared 1000 bytes"):
        decompress_file(tmp_path / "b.zst", tmp_path / "out", info)
    assert os.path.getsize(tmp_path / "out") == 0


def test_a_frame_asking_for_a_huge_window_is_refused(run: Decompress, tmp_path: Path) -> None:
    """A streamed frame (no content size) that asks for a 128 MiB window, for a blob
    declared at 10 KiB: the decoder may allocate only what 10 KiB needs (1 MiB)."""
    frame = streamed(bytes(10_000), window_log=27)
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 27
    assert window_limit(10_000) == 1 << 20
    info = honest(frame, 10_000)
    digest, _ = run(frame, info)
    assert digest is None
    (tmp_path / "w.zst").write_bytes(frame)
    with pytest.raises(IntegrityError, match="too much memory"):
        decompress_file(tmp_path / "w.zst", tmp_path / "out", info)
    # The same bytes in a frame with an honest window decompress.
    assert run(streamed(bytes(10_000), window_log=14), honest(
        streamed(bytes(10_000), window_log=14), 10_000))[1] == bytes(10_000)
