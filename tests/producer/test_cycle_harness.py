"""The daemon's feed equals a full read of its Iceberg table after every cycle: one seeded
random sequence of pyiceberg operations per partitioning (see ``cycle_harness``).

``FEEDKIT_CYCLE_OPS`` (50 by default) sets the ops per sequence and ``FEEDKIT_CYCLE_SEED``
the seed; a failure's message names both and the ops, so it replays with the same values.
The long run is ``tests/soak/test_iceberg_cycles.py`` (``make soak``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .cycle_harness import PARTITIONINGS, WEIGHTS, report, run_sequence

OPS = int(os.environ.get("FEEDKIT_CYCLE_OPS", "50"))
SEED = int(os.environ.get("FEEDKIT_CYCLE_SEED", "20261203"))


@pytest.mark.timeout(max(300, OPS * 4))
@pytest.mark.parametrize("partitioning", PARTITIONINGS)
def test_feed_equals_the_table_after_every_cycle(tmp_path: Path, partitioning: str) -> None:
    log: list[str] = []
    summary = run_sequence(tmp_path, SEED, OPS, partitioning=partitioning, log=log)
    report(summary)
    assert summary.ops.total() == OPS + 1  # the ops, and the first append
    assert summary.outcomes["published"] >= 1
    # the sequence exercised the file diff, not only full reads
    assert summary.plans["files"] >= 1, dict(summary.plans)
    if len(WEIGHTS) <= OPS:
        # every kind that applies ran (or was drawn and did not apply at the time)
        kinds = {k for k in WEIGHTS if k != "dynamic_overwrite" or partitioning == "identity"}
        assert not kinds - set(summary.ops) - set(summary.skipped), "\n".join(log)
