"""The soak producer: publishes generations 1..CYCLES of the seeded history, printing one
JSON line ``{"gen", "version"}`` per cycle.

Usage: producer_process.py STORE_DIR WORK_DIR SEED CYCLES
"""

from __future__ import annotations

import json
import sys

import pyarrow as pa

import feedkit
from tests.soak.history import History

SCHEMA = pa.schema([("k", pa.int64()), ("gen", pa.int64()), ("title", pa.string())])


def table(history: History, gen: int) -> pa.Table:
    rows = list(history.rows(gen))
    return pa.table([pa.array([r[i] for r in rows], SCHEMA.field(i).type) for i in range(3)],
                    schema=SCHEMA)


def main() -> int:
    store_dir, work_dir, seed, cycles = sys.argv[1:5]
    history = History(int(seed), int(cycles))
    store = feedkit.open_store(store_dir)
    with feedkit.Producer(store, feed="soak", primary_key="k", work_dir=work_dir,
                          snapshot_every=25) as producer:
        for gen in range(int(cycles) + 1):
            version = producer.publish(table(history, gen))
            print(json.dumps({"gen": gen, "version": version}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
