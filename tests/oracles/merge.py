"""The numpy diff, presence test, record digest, delta effect and shadow rule the
compiled ones replaced (``merge.diff_py`` and friends once)."""

from __future__ import annotations

import numpy as np

from feedkit.format import TOMBSTONE, RecordSet, StateFile
from feedkit.keys import xxh3
from feedkit.merge import _M64, Diff, _live, record_digest

from .write import arrow_records

__all__ = ["delta_effect_py", "diff_py", "present_py", "record_digest_py", "unshadowed_py"]


def record_digest_py(heap: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int:
    """:func:`record_digest` in Python: the tests' oracle."""
    view = heap.data
    total = 0
    for a, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        total += xxh3(view[a:a + n])
    return total & _M64

def present_py(files: list[StateFile], keys: np.ndarray) -> np.ndarray:
    """:func:`present` in numpy: the tests' oracle."""
    present = np.zeros(len(keys), dtype=bool)
    pending = np.ones(len(keys), dtype=bool)
    for sf in files:
        slots = sf.probe_many(keys[pending])
        where = np.flatnonzero(pending)[slots >= 0]
        found = slots[slots >= 0]
        live = _live(sf, found)
        present[where[live]] = True
        pending[where] = False
    return present

def diff_py(files: list[StateFile], new: RecordSet) -> Diff:
    """:func:`diff` in numpy and pyarrow (imported here; consumers, which never diff,
    never import it): the tests' oracle."""
    import pyarrow as pa
    import pyarrow.compute as pc

    assert new.source is None or len(new.sources) == 1
    n = len(new)
    match_file = np.full(n, -1, dtype=np.int64)
    match_slot = np.full(n, -1, dtype=np.int64)
    pending = np.ones(n, dtype=bool)
    for i, sf in enumerate(files):  # the overlay first: it hides the base's records
        slots = sf.probe_many(new.keys[pending])
        where = np.flatnonzero(pending)[slots >= 0]
        found = slots[slots >= 0]
        live = _live(sf, found)
        match_file[where[live]] = i
        match_slot[where[live]] = found[live]
        pending[where] = False

    same = np.zeros(n, dtype=bool)
    new_records = new_elem = None
    for i, sf in enumerate(files):
        candidates = np.flatnonzero(match_file == i)
        _, old_lengths = sf.record_ranges(match_slot[candidates])
        check = candidates[old_lengths == new.lengths[candidates]]
        if not len(check):
            continue
        if new_records is None or new_elem is None:
            new_records, new_elem = arrow_records(pa, new.sources[0], new.starts, new.lengths)
        # Every record of the file (back to back in slot order) and the new ones, as
        # arrays of bytes; compare the pairs with equal keys and lengths.
        occupied = sf.occupied()
        old_records, _ = arrow_records(pa, sf.heap, *sf.record_ranges(occupied))
        equal = pc.equal(pc.take(old_records, np.searchsorted(occupied, match_slot[check])),
                         pc.take(new_records, new_elem[check]))
        same[check] = equal.to_numpy(zero_copy_only=False)

    upserts = np.flatnonzero(~same)
    deleted, changed_old = [], []
    for i, sf in enumerate(files):
        occupied = sf.occupied()
        keep = np.zeros(sf.slot_count, dtype=bool)
        keep[match_slot[match_file == i]] = True
        gone = occupied[~keep[occupied]]
        gone = gone[_live(sf, gone)]
        if i > 0:  # base records shadowed by the overlay (replaced or deleted there) are not live
            gone = gone[files[0].probe_many(sf.slot_keys(gone)) < 0]
        deleted.append(gone)
        changed_old.append(match_slot[upserts][match_file[upserts] == i])
    removed = sum(record_digest_py(sf.heap, *sf.record_ranges(slots))
                  for old in (changed_old, deleted)
                  for sf, slots in zip(files, old, strict=True))
    return Diff(upserts=upserts, deleted=deleted, changed_old=changed_old,
                removed_digest=removed & _M64,
                added_digest=record_digest_py(new.sources[0], new.starts[upserts],
                                               new.lengths[upserts]))

def delta_effect_py(files: list[StateFile], delta: StateFile) -> tuple[int, int, int, int]:
    """What ``delta`` does to the state ``files``, in numpy: the oracle of the native
    ``delta_effect`` (``tests/test_native_verify.py``). Returns (upserts of keys that
    were not live, tombstones of keys that were, digest of the live records the delta's
    keys replace or delete, digest of the delta's upserts)."""
    d_slots = delta.occupied()
    d_keys = delta.slot_keys(d_slots)
    d_starts, d_lengths = delta.record_ranges(d_slots)
    d_tomb = delta.heap[d_starts] == TOMBSTONE
    present = np.zeros(len(d_slots), bool)
    old_digest = 0
    pending = np.ones(len(d_slots), bool)
    for sf in files:  # the overlay first: a hit there, record or tombstone, decides
        slots = sf.probe_many(d_keys[pending])
        where = np.flatnonzero(pending)[slots >= 0]
        found = slots[slots >= 0]
        starts, lengths = sf.record_ranges(found)
        live = sf.heap[starts] != TOMBSTONE if sf.kind == "overlay" else np.ones(len(found), bool)
        present[where[live]] = True
        old_digest += record_digest(sf.heap, starts[live], lengths[live])
        pending[where] = False
    return (int((~d_tomb & ~present).sum()), int((d_tomb & present).sum()), old_digest & _M64,
            record_digest(delta.heap, d_starts[~d_tomb], d_lengths[~d_tomb]))

def unshadowed_py(over: StateFile, under: StateFile) -> np.ndarray:
    """:func:`_unshadowed` in numpy (the oracle)."""
    slots = under.occupied()
    return slots[over.probe_many(under.slot_keys(slots)) < 0]
