"""Quickstart: publish a generated table to a local store, look keys up, publish a change.

Run with `make demo`. Until the producer daemon lands, this drives the library
directly: feedkit.Producer publishes, feedkit.Consumer serves.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import feedkit

TITLES = 200_000
DIMENSIONS = ("country", "language", "maturity")
VALUES = {
    "country": ["BR", "DE", "FR", "GB", "IN", "JP", "KR", "MX", "US"],
    "language": ["de", "en", "es", "fr", "ja", "ko", "pt"],
    "maturity": ["7+", "13+", "16+", "18+", "all"],
}


def title_dimensions(seed: int) -> pa.Table:
    """One row per (title, dimension): the distinct filter values, sorted by name."""
    rng = random.Random(seed)
    movie_ids, dims, vals = [], [], []
    for movie in range(80_000_000, 80_000_000 + TITLES):
        for dim in DIMENSIONS:
            movie_ids.append(movie)
            dims.append(dim)
            vals.append(sorted(rng.sample(VALUES[dim], rng.randint(1, 4))))
    return pa.table({"movie_id": pa.array(movie_ids, pa.int64()), "dimension_id": dims,
                     "vals": pa.array(vals, pa.list_(pa.string()))})


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="feedkit-demo-"))
    store = feedkit.open_store(root / "store")
    print(f"store: {store.url}")

    table = title_dimensions(seed=1)
    producer = feedkit.Producer(store, feed="muse.dimensions",
                                primary_key=("movie_id", "dimension_id"), indexes=["dimension_id"])
    t0 = time.perf_counter()
    version = producer.publish(table)
    print(f"published version {version}: {table.num_rows:,} records in {time.perf_counter() - t0:.2f}s")

    with feedkit.Consumer(store, feed="muse.dimensions", cache_dir=root / "cache") as feed:
        print(f"consumer serving version {feed.version}, {len(feed):,} records")
        key = (80_000_123, "country")
        print(f"feed.get({key}) -> {feed.get(key)}")

        rng = random.Random(2)
        keys = [(rng.randrange(80_000_000, 80_000_000 + TITLES), rng.choice(DIMENSIONS))
                for _ in range(100_000)]
        get = feed.get
        samples = []
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            t = time.perf_counter_ns()
            for k in chunk:
                get(k)
            samples.append((time.perf_counter_ns() - t) / len(chunk))
        print(f"get(): median {statistics.median(samples):.0f} ns per lookup over {len(keys):,} "
              "random keys")

        # A change: title 80000123 becomes available in Japan too.
        rows = table.to_pylist()
        for row in rows:
            if row["movie_id"] == 80_000_123 and row["dimension_id"] == "country":
                row["vals"] = sorted(set(row["vals"]) | {"JP"})
        changed = pa.Table.from_pylist(rows, schema=table.schema)
        committed = time.perf_counter()
        new_version = producer.publish(changed)
        while feed.version != new_version:
            time.sleep(0.001)
        delay = time.perf_counter() - committed
        print(f"published version {new_version}; the consumer served it "
              f"{delay * 1000:.0f} ms after publish() started")
        print(f"feed.get({key}) -> {feed.get(key)}")
        print(f"feed.find('dimension_id', 'maturity') -> {len(feed.find('dimension_id', 'maturity')):,} records")
    producer.close()


if __name__ == "__main__":
    main()
