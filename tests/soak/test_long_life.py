"""Long life (``make soak``; marked slow): 2,000 publish/refresh cycles followed by a
watching consumer. Its file descriptors, mappings, RSS and cache folder must stay flat:
a long-lived service holds what the current version needs, not its history.

``FEEDKIT_LONG_LIFE_CYCLES`` changes the count (2,000 by default).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pyarrow as pa
import pytest

import feedkit


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _mappings(folder: Path) -> int:
    prefix = str(folder)
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if prefix in line)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _table(rng: random.Random, n: int) -> pa.Table:
    ids = rng.sample(range(4 * n), n)
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "value": [f"v{rng.random():.6f}" for _ in ids]})


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_thousand_cycles_stay_flat(tmp_path: Path) -> None:
    cycles = int(os.environ.get("FEEDKIT_LONG_LIFE_CYCLES", "2000"))
    rng = random.Random(20261201)
    store = feedkit.open_store(f"file://{tmp_path}/store")
    cache = tmp_path / "cache"
    samples: list[tuple[int, int, int, int]] = []
    with feedkit.Producer(store, feed="life", primary_key="id", work_dir=tmp_path / "work") as p:
        p.publish(_table(rng, 200))
        feed = feedkit.Consumer(store, feed="life", cache_dir=cache, poll_interval=0.05).open()
        for i in range(cycles):
            version = p.publish(_table(rng, 200))
            end = time.monotonic() + 10
            while feed.version != version and time.monotonic() < end:
                time.sleep(0.002)
            assert feed.version == version, f"cycle {i}: the consumer did not follow"
            if i % 50 == 0:
                samples.append((_fds(), _mappings(cache), _rss_kib(), _folder_bytes(cache)))
        assert feed.metrics()["refresh_failures"] == 0
        feed.close()
    warm = samples[len(samples) // 10:]  # past warm-up (imports, first allocations)
    first, last = warm[0], warm[-1]
    print(f"\nlong life: {cycles} cycles; fds {first[0]}->{last[0]}, mappings "
          f"{first[1]}->{last[1]}, RSS {first[2]}->{last[2]} KiB, cache {first[3]}->{last[3]} B")
    assert max(s[0] for s in warm) <= first[0] + 4, "file descriptors grow"
    assert max(s[1] for s in warm) <= max(first[1], 2) + 2, "mappings grow"
    assert last[2] <= first[2] + 20 * 1024, "RSS grows by more than 20 MiB"
    assert max(s[3] for s in warm) <= 3 * max(s[3] for s in warm[:5]), "the cache folder grows"
