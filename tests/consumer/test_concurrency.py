"""Readers in threads while versions swap underneath them."""

from __future__ import annotations

import random
import threading
import time

import pyarrow as pa

import feedkit

KEYS = 1000


def state(step: int) -> pa.Table:
    """Version ``step``: every tenth key (shifting with the step) is absent."""
    ids = [k for k in range(KEYS) if (k + step) % 10]
    return pa.table({"k": pa.array(ids, pa.int64()), "step": [step] * len(ids),
                     "title": [f"s{step}-k{k}" for k in ids]})


def expected(step: int, key: int) -> str | None:
    return None if (key + step) % 10 == 0 else f"s{step}-k{key}"


def test_readers_never_see_a_mixed_or_wrong_answer(store, cache_dir) -> None:
    producer = feedkit.Producer(store, feed="swaps", primary_key="k", snapshot_every=7)
    step_of: dict[int, int] = {producer.publish(state(0)): 0}
    errors: list[str] = []
    lookups = [0] * 8
    stop = threading.Event()

    def reader(n: int, feed: feedkit.Consumer) -> None:
        rng = random.Random(n)
        while not stop.is_set():
            with feed.view() as view:  # one version for the whole "request"
                step = step_of[view.version]
                keys = [rng.randrange(KEYS) for _ in range(20)]
                for key in keys:
                    rec = view.get(key)
                    if (rec.title if rec else None) != expected(step, key):
                        errors.append(f"view {step}: {key} -> {rec}")
                many = view.get_many(keys)
                if [r.title if r else None for r in many] != [expected(step, k) for k in keys]:
                    errors.append(f"view {step}: get_many mismatch")
            key = rng.randrange(KEYS)
            rec = feed.get(key)  # outside a view: any version, but a consistent one
            if rec is not None and rec.title != expected(rec.step, key):
                errors.append(f"get: {key} -> {rec}")
            lookups[n] += 42
            time.sleep(0)  # let the refreshing thread take the GIL now and then

    # Publish first: the producer's work is not what this test is about, and 8 busy
    # reader threads would starve it of the GIL.
    versions = [producer.publish(state(step)) for step in range(1, 101)]
    step_of.update({v: step for step, v in enumerate(versions, start=1)})
    producer.close()
    first = min(step_of)
    with feedkit.Consumer(store, feed="swaps", cache_dir=cache_dir, watch=False) as feed:
        feed.pin(first)
        threads = [threading.Thread(target=reader, args=(n, feed)) for n in range(8)]
        for t in threads:
            t.start()
        moved = 0
        try:
            for version in versions:  # 100 refreshes, each applying one delta
                feed.pin(version)
                moved += feed.version == version
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert moved == 100
        assert step_of[feed.version] == 100
    assert errors == []
    assert all(n > 0 for n in lookups), lookups
