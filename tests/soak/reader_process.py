"""A soak reader process: a consumer following the feed, checking every answer against the
seeded history; on the stop file it prints {lookups, wrong, versions} as JSON.

Usage: reader_process.py STORE_DIR CACHE_DIR SEED CYCLES STOP_FILE
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import feedkit
from tests.soak.history import History, check_view


def main() -> int:
    store_dir, cache_dir, seed, cycles, stop = sys.argv[1:6]
    history = History(int(seed), int(cycles))
    rng = random.Random(os.getpid())
    seen: dict[int, int] = {}
    wrong: list[str] = []
    lookups = 0
    store = feedkit.open_store(store_dir)
    with feedkit.Consumer(store, feed="soak", cache_dir=cache_dir, poll_interval=0.05) as feed:
        while not os.path.exists(stop):
            with feed.view() as view:
                lookups += check_view(view, history, rng, seen, wrong)
            time.sleep(0)
        final = feed.version
    print(json.dumps({"lookups": lookups, "wrong": wrong[:20], "wrong_count": len(wrong),
                      "seen": {str(v): g for v, g in seen.items()}, "final": final}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
