"""Instructions per ``get()``, counted by valgrind's callgrind: a figure that does not move
with the machine's noise, for comparing two builds of feedkit (before and after a change).

Wall-clock lookups on these machines move by 20% between runs; callgrind counts
instructions, the same for the same binary and inputs. The count per lookup is the
difference between a run doing N lookups and one doing none, divided by N (the
interpreter's start, the imports and the open cancel out). PYTHONHASHSEED is fixed.

    python benchmarks/callgrind_get.py                       # this interpreter's feedkit
    python benchmarks/callgrind_get.py --python OTHER/bin/python   # another checkout's

Needs valgrind (Debian's package) and the producer extra (to build the feeds).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RECORDS = 100_000
LOOKUPS = 50_000

LOOKUP = r"""
import random, sys, tempfile, feedkit
kind, n, folder, records = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = feedkit.open_store(f"file://{folder}/store-{kind}")
feed = feedkit.Consumer(store, feed="bench", cache_dir=tempfile.mkdtemp(), watch=False).open()
ids = list(range(0, 7 * records, 7))
keys = ids if kind == "int" else [f"k{i}" for i in ids]
rng = random.Random(1)
asked = [rng.choice(keys) for _ in range(n)]
get = feed.get
for k in asked:
    get(k)
"""


def build(folder: Path) -> None:
    import pyarrow as pa

    import feedkit

    ids = list(range(0, 7 * RECORDS, 7))
    for kind in ("int", "str"):
        keys = ids if kind == "int" else [f"k{i}" for i in ids]
        table = pa.table({"id": keys, "title": [f"t{i}" for i in ids],
                          "year": pa.array([i % 70 for i in ids], pa.int32()),
                          "score": [i * 0.5 for i in ids],
                          "country": [("DE", "US", "FR")[i % 3] for i in ids]})
        store = feedkit.open_store(f"file://{folder}/store-{kind}")
        with feedkit.Producer(store, feed="bench", primary_key="id",
                              work_dir=folder / f"work-{kind}") as producer:
            producer.publish(table)


def instructions(python: str, kind: str, n: int, folder: Path) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.out",
                          python, "-c", LOOKUP, kind, str(n), str(folder), str(RECORDS)],
                         capture_output=True, text=True, env=env, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found[1].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose feedkit is measured")
    args = parser.parse_args()
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder)
        for kind in ("int", "str"):
            idle = instructions(args.python, kind, 0, folder)
            busy = instructions(args.python, kind, LOOKUPS, folder)
            print(f"{kind} keys: {(busy - idle) / LOOKUPS:,.0f} instructions per get() "
                  f"({RECORDS:,} records, {LOOKUPS:,} random lookups)")


if __name__ == "__main__":
    main()
