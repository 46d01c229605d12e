"""Soak (``make soak``; marked slow, not in ``make test``): the Iceberg cycle harness
(``tests/producer/cycle_harness.py``) over long seeded sequences, 2000 ops in all by default:
after every daemon cycle the feed a Consumer serves equals ``table.scan().to_arrow()``, and
a version is published iff the table's rows or columns changed.

``FEEDKIT_CYCLE_SOAK_OPS`` sets the ops per sequence (250), ``FEEDKIT_CYCLE_SOAK_SEEDS`` the
sequences per partitioning (2) and ``FEEDKIT_CYCLE_SEED`` the first seed; a failure's
message names the seed and the ops, so ``run_sequence`` replays it. About 10-15 minutes
(some 0.5 s an op at 250 ops on two cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.producer.cycle_harness import PARTITIONINGS, report, run_sequence

OPS = int(os.environ.get("FEEDKIT_CYCLE_SOAK_OPS", "250"))
SEEDS = int(os.environ.get("FEEDKIT_CYCLE_SOAK_SEEDS", "2"))
FIRST_SEED = int(os.environ.get("FEEDKIT_CYCLE_SEED", "20261203")) + 1000


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("partitioning", PARTITIONINGS)
def test_iceberg_cycles(tmp_path: Path, partitioning: str) -> None:
    for seed in range(FIRST_SEED, FIRST_SEED + SEEDS):
        summary = run_sequence(tmp_path / str(seed), seed, OPS, partitioning=partitioning)
        report(summary)
        assert summary.ops.total() == OPS + 1
