"""A consumer process for the fault suite: checks every answer (see harness.check_once),
writes its report as JSON every 50 ms, and exits 0 when the stop file appears.

Usage: reader_process.py STORE_URL CACHE_DIR OUT_JSON STOP_FILE [S3_ENDPOINT]
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import feedkit
from tests.faults.harness import FEED, ReaderReport, check_once


def main() -> int:
    store_url, cache_dir, out, stop = sys.argv[1:5]
    options = {"endpoint_url": sys.argv[5], "read_timeout": 2.0, "connect_timeout": 1.0,
               "max_attempts": 1} if len(sys.argv) > 5 else {}
    store = feedkit.open_store(store_url, **options)
    report = ReaderReport()
    rng = random.Random(os.getpid())
    tmp = Path(out + ".tmp")
    with feedkit.Consumer(store, feed=FEED, cache_dir=cache_dir, poll_interval=0.1,
                          max_backoff=0.4) as feed:
        written = 0.0
        while not os.path.exists(stop):
            check_once(feed, rng, report)
            if time.monotonic() - written > 0.05:
                tmp.write_text(json.dumps(report.to_json()))
                os.replace(tmp, out)
                written = time.monotonic()
            time.sleep(0.001)
    tmp.write_text(json.dumps(report.to_json()))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
