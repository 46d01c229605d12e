"""Publish the demo feed the service example serves (``demo.titles``): a stand-in for the
producer daemon, so that the example runs on its own. Needs the producer extra.

    python examples/service/publish.py STORE [--records N] [--revision R]
    python examples/service/publish.py STORE --every 10     # a new revision every 10 s

STORE is a folder or a store URL. Revision R changes the first 1% of the titles (their
``revision`` becomes R); every run publishes on top of what the store announces.
"""

from __future__ import annotations

import argparse
import time

import pyarrow as pa

import feedkit

FEED = "demo.titles"


def titles(records: int, revision: int) -> pa.Table:
    ids = range(1, records + 1)
    changed = max(1, records // 100)
    return pa.table({
        "movie_id": pa.array(ids, pa.int64()),
        "title": [f"Title {i}" for i in ids],
        "year": pa.array([1950 + i % 75 for i in ids], pa.int32()),
        "revision": pa.array([revision if i <= changed else 1 for i in ids], pa.int64()),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="a folder or a store URL (file:///..., s3://...)")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--revision", type=int, default=1)
    parser.add_argument("--every", type=float, default=None,
                        help="publish revision, revision + 1, ... every EVERY seconds until ^C")
    args = parser.parse_args()
    with feedkit.Producer(feedkit.open_store(args.store), feed=FEED, primary_key="movie_id") as producer:
        revision = args.revision
        while True:
            version = producer.publish(titles(args.records, revision))
            print(f"{FEED}: revision {revision} -> version {version}", flush=True)
            if args.every is None:
                return
            revision += 1
            try:
                time.sleep(args.every)
            except KeyboardInterrupt:
                return


if __name__ == "__main__":
    main()
