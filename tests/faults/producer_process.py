"""A producer process for the fault suite: publishes generations of the harness's table to
a local store and prints one JSON line per publish.

Usage: producer_process.py STORE_DIR WORK_DIR KILL_AT START_AT GEN [GEN ...]

``KILL_AT`` is where the process SIGKILLs itself during the first publish: ``none``,
``mid-encode`` (the first half of the rows is encoded into the spill file),
``before-blobs`` (the state is read, encoded and written to the work dir, nothing is in
the store yet), ``after-blobs`` (the blobs are stored, the manifest is not),
``after-manifest`` (the manifest is stored, the announcement not moved) or
``after-announcement`` (the announcement moved; the producer dies before it returns);
or during the restore before it: ``mid-restore`` (a blob of the announced version is
downloaded into the work dir's restore folder). The process gets there through the
store it is given: a local store whose writes pass through :class:`KillingStore` first
(and, for ``mid-encode``, through the rows it publishes). ``START_AT`` is a UNIX time to
wait for (0: now), so that two producers can race.

Exit codes: 0 published, 3 fenced (another producer moved the announcement).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

import feedkit
from feedkit.store.local import LocalStore
from tests.faults.harness import FEED, table


class KillingStore(LocalStore):
    """The real local store; the process dies at ``kill_at`` on its way through."""

    kill_at = "none"

    def _die(self, point: str) -> None:
        if self.kill_at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    def put_new(self, key: str, src: Any) -> None:
        self._die("before-blobs")
        super().put_new(key, src)

    def put_new_bytes(self, key: str, data: bytes) -> None:
        self._die("before-blobs")
        self._die("after-blobs")
        super().put_new_bytes(key, data)

    def download(self, key: str, dest: Any) -> int:
        size = super().download(key, dest)
        self._die("mid-restore")
        return size

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        self._die("after-manifest")
        new = super().replace_if_match(key, data, etag)
        self._die("after-announcement")
        return new


def rows(gen: int, kill_at: str) -> pa.Table | pa.RecordBatchReader:
    """Generation ``gen``; for ``mid-encode``, two batches, and death before the second."""
    if kill_at != "mid-encode":
        return table(gen)
    batches = table(gen).to_batches(max_chunksize=150)

    def killing() -> Iterator[pa.RecordBatch]:
        yield batches[0]
        os.kill(os.getpid(), signal.SIGKILL)
        yield from batches[1:]

    return pa.RecordBatchReader.from_batches(batches[0].schema, killing())


def main() -> int:
    store_dir, work_dir, kill_at, start_at = sys.argv[1:5]
    gens = [int(g) for g in sys.argv[5:]]
    store = KillingStore(Path(store_dir))
    store.kill_at = kill_at
    producer = feedkit.Producer(store, feed=FEED, primary_key="k", work_dir=work_dir,
                                snapshot_every=100)
    producer.restore()  # before the start line: racing producers hold the same announcement
    while time.time() < float(start_at):
        time.sleep(0.0005)
    for gen in gens:
        try:
            version = producer.publish(rows(gen, kill_at))
        except feedkit.ProducerFencedError as exc:
            print(json.dumps({"gen": gen, "fenced": str(exc)}), flush=True)
            return 3
        print(json.dumps({"gen": gen, "version": version}), flush=True)
    producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
