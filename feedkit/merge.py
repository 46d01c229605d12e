"""Combining state files without decoding records: diff, delta-into-overlay, compaction.

Everything here works on slot keys and raw record bytes: vectorised with numpy, or
compiled (``native/core/src/merge.rs``: the consumer's per-record probes and digests,
the GIL released when the work is large). The state digest of a version is the sum,
modulo 2**64, of xxh3-64 over every record's bytes: a consumer that applies deltas
recomputes it from what changed and refuses the result unless it equals the manifest's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from feedkit import _native
from feedkit.errors import IntegrityError
from feedkit.format import TOMBSTONE, RecordSet, StateFile

__all__ = ["Diff", "apply_delta", "base_records", "compact", "diff", "present", "record_digest"]

_M64 = (1 << 64) - 1
_TOMBSTONE_SOURCE = np.array([TOMBSTONE], dtype=np.uint8)


def record_digest(heap: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int:
    """Sum (mod 2**64) of xxh3-64 over the records ``heap[starts[i]:starts[i] + lengths[i]]``
    (compiled, the GIL released).

    Raises:
        IntegrityError: a record lies outside ``heap``.
    """
    return int(_native.record_digest(np.ascontiguousarray(heap, dtype=np.uint8),
                                     np.ascontiguousarray(starts, dtype=np.int64),
                                     np.ascontiguousarray(lengths, dtype=np.int64)))


@dataclass
class Diff:
    """How a new state (a RecordSet) differs from the old one (state files [overlay,] base)."""

    upserts: np.ndarray  # indexes into the new RecordSet: added or changed records
    deleted: list[np.ndarray]  # per old file: slots of live records whose keys are gone
    changed_old: list[np.ndarray]  # per old file: slots of live records replaced by an upsert
    removed_digest: int  # record_digest of the old records that go (changed and deleted)
    added_digest: int  # record_digest of the upserts' records

    @property
    def empty(self) -> bool:
        return not len(self.upserts) and not self.removed

    @property
    def removed(self) -> int:
        return sum(len(s) for s in self.deleted)

    @property
    def changed(self) -> int:
        return sum(len(s) for s in self.changed_old)


def _live(sf: StateFile, slots: np.ndarray) -> np.ndarray:
    if sf.kind != "overlay":
        return np.ones(len(slots), dtype=bool)
    starts, _ = sf.record_ranges(slots)
    return sf.heap[starts] != TOMBSTONE


def _slot_bits(keys: np.ndarray) -> np.ndarray:
    """Slot keys (int64 keys or uint64 hashes) as the uint64 words a slot holds."""
    return np.ascontiguousarray(keys, dtype=np.uint64 if keys.dtype.kind == "u"
                                else np.int64).view(np.uint64)


def diff(files: list[StateFile], new: RecordSet) -> Diff:
    """Compare a new state with the old one ([overlay, base] or [base]), record by record
    (bytes, not values), and sum the digests of what goes and what comes.

    One compiled pass with the GIL released (``native/core/src/diff.rs``): a probe per
    new key, overlay first, a byte comparison per match, then a walk over each file's
    slots for the keys that are gone. The numpy and pyarrow diff it replaced is the
    tests' oracle (``tests/oracles/merge.py``).

    Raises:
        IntegrityError: a damaged state file, or a record outside its source.
    """
    upserts, deleted, changed_old, removed, added = _native.diff(
        [sf.table_args() for sf in files], _slot_bits(new.keys),
        np.ascontiguousarray(new.starts, dtype=np.int64),
        np.ascontiguousarray(new.lengths, dtype=np.int64),
        [np.ascontiguousarray(s, dtype=np.uint8)
         for s in (new.sources if new.source is not None else new.sources[:1])],
        None if new.source is None else np.ascontiguousarray(new.source, dtype=np.uint8))
    return Diff(upserts=np.frombuffer(upserts, dtype=np.int64),
                deleted=[np.frombuffer(b, dtype=np.int64) for b in deleted],
                changed_old=[np.frombuffer(b, dtype=np.int64) for b in changed_old],
                removed_digest=int(removed), added_digest=int(added))


def present(files: list[StateFile], keys: np.ndarray) -> np.ndarray:
    """Per slot key: is it a live record of the state ``files`` ([overlay, base] or [base])?

    Raises:
        IntegrityError: a damaged state file.
    """
    found = _native.present([sf.table_args() for sf in files], _slot_bits(keys))
    return np.frombuffer(found, dtype=bool)


def delta_records(files: list[StateFile], new: RecordSet, d: Diff,
                  index_fields: list[str]) -> RecordSet:
    """The delta's records: the upserts from ``new``, a tombstone per deleted key."""
    u = d.upserts
    gone = np.concatenate([sf.slot_keys(s).astype(new.keys.dtype)
                           for sf, s in zip(files, d.deleted, strict=True)])
    n_del = len(gone)
    return RecordSet(
        keys=np.concatenate([new.keys[u], gone]),
        starts=np.concatenate([new.starts[u], np.zeros(n_del, dtype=np.int64)]),
        lengths=np.concatenate([new.lengths[u], np.ones(n_del, dtype=np.int64)]),
        sources=[new.sources[0], _TOMBSTONE_SOURCE],
        source=np.concatenate([np.zeros(len(u), np.uint8), np.ones(n_del, np.uint8)]),
        tombstone=np.concatenate([np.zeros(len(u), bool), np.ones(n_del, bool)]),
        index_hashes={f: np.concatenate([new.index_hashes[f][u], np.zeros(n_del, np.uint64)])
                      for f in index_fields},
    )


def _columns(sf: StateFile, slots: np.ndarray, index_fields: list[str]) -> dict[str, np.ndarray]:
    """The RecordSet columns of ``sf``'s entries at ``slots``: keys, record starts and
    lengths, tombstones (numpy gathers), and per index field (``#field``) the value
    hashes the index posts them under (compiled: numpy needed an array per slot of the
    file and several passes).

    Raises:
        IntegrityError: a slot outside the table, or a file without one of the indexes.
    """
    columns = _numpy_columns(sf, slots, [])
    try:
        hashes = _native.posted_hashes(
            sf.table_args(), np.ascontiguousarray(slots, dtype=np.int64),
            [sf.index_args(f) for f in index_fields])
    except IntegrityError as exc:
        raise IntegrityError(f"{sf.path}: {exc}") from None
    columns.update({f"#{f}": np.frombuffer(h, np.uint64)
                    for f, h in zip(index_fields, hashes, strict=True)})
    return columns


def _numpy_columns(sf: StateFile, slots: np.ndarray, index_fields: list[str]) -> dict[str, np.ndarray]:
    """The columns of :func:`_columns` gathered in numpy; with ``index_fields``, their
    hashes too, through ``StateFile.index_hashes`` (the tests' oracle of the compiled
    ``posted_hashes``)."""
    if sf.compact:  # coded records: their canonical bytes, rebuilt (a base: no tombstones)
        heap, starts, lengths = sf.canonical(slots)
        tombstone = np.zeros(len(slots), bool)
    else:
        heap = sf.heap
        starts, lengths = sf.record_ranges(slots)
        tombstone = (heap[starts] == TOMBSTONE if sf.kind == "overlay"
                     else np.zeros(len(slots), bool))
    columns = {"keys": sf.slot_keys(slots), "starts": starts, "lengths": lengths,
               "tombstone": tombstone, "heap": heap}
    columns.update({f"#{f}": sf.index_hashes(f)[slots] for f in index_fields})
    return columns


def _record_set(parts: list[tuple[StateFile, np.ndarray]], index_fields: list[str],
                drop_tombstones: bool, columns: Callable[..., dict[str, np.ndarray]] = _columns
                ) -> RecordSet:
    pieces = [columns(sf, slots, index_fields) for sf, slots in parts]
    heaps = [p.pop("heap") for p in pieces]
    cat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    source = np.concatenate([np.full(len(slots), i, np.uint8) for i, (_, slots) in enumerate(parts)])
    keep = ~cat["tombstone"] if drop_tombstones else np.ones(len(cat["keys"]), bool)
    return RecordSet(
        keys=cat["keys"][keep], starts=cat["starts"][keep], lengths=cat["lengths"][keep],
        sources=heaps, source=source[keep],
        tombstone=None if drop_tombstones else cat["tombstone"][keep],
        index_hashes={f: cat[f"#{f}"][keep] for f in index_fields},
    )


def _unshadowed(over: StateFile, under: StateFile) -> np.ndarray:
    """Slots of ``under``'s entries (records and tombstones) whose keys ``over`` does not
    hold, ascending: what survives of ``under`` beneath ``over``.

    Raises:
        IntegrityError: a probe met a damaged table.
    """
    return np.frombuffer(_native.unshadowed(over.table_args(), under.table_args()),
                         dtype=np.int64)


def apply_delta(files: list[StateFile], delta: StateFile, record_count: int,
                state_digest: int) -> RecordSet:
    """Merge ``delta`` into the state ``files`` ([overlay,] base) as a new overlay's records.

    The new state's record count and digest are recomputed from what the delta
    changes (FORMAT.md, 7: every delta key probed in the current files, xxh3-64 summed
    over the old and new records, in compiled code with the GIL released) and compared
    with the manifest's.

    Raises:
        IntegrityError: the merged state is not the one the producer published, or a
            file's tables are damaged.
    """
    base = files[-1]
    overlay = files[0] if len(files) == 2 else None
    index_fields = list(base.header["index_fields"])
    what = (f"feed {base.feed!r}: applying delta {delta.header.get('base_version')}->"
            f"{delta.version}")
    try:
        added, removed, old_digest, new_digest = _native.delta_effect(
            [sf.table_args() for sf in files], delta.table_args())
        kept = _unshadowed(delta, overlay) if overlay is not None else None
    except IntegrityError as exc:
        where = " over ".join(str(sf.path) for sf in [delta, *files])
        raise IntegrityError(f"{what} ({where}): {exc}") from None
    count = int(files[0].header["record_count"]) + added - removed
    digest = (int(files[0].header["state_digest"], 16) - old_digest + new_digest) & _M64
    if count != record_count or digest != state_digest:
        raise IntegrityError(
            f"{what} gives {count} records (digest {digest:016x}), the manifest says "
            f"{record_count} ({state_digest:016x})")
    parts: list[tuple[StateFile, np.ndarray]] = [(delta, delta.occupied())]
    if overlay is not None and kept is not None:
        parts.append((overlay, kept))
    return _record_set(parts, index_fields, drop_tombstones=False)


def base_records(base: StateFile) -> RecordSet:
    """Every record of the base file ``base``, canonical, with its index hashes: to write
    the same state in another format.

    Raises:
        IntegrityError: a damaged table or record.
    """
    try:
        return _record_set([(base, base.occupied())], list(base.header["index_fields"]),
                           drop_tombstones=True)
    except IntegrityError as exc:
        raise IntegrityError(f"{base.path}: {exc}") from None


def compact(files: list[StateFile]) -> RecordSet:
    """The records of ``[overlay, base]`` as one base: overlay entries win, tombstones go.

    The records' count and digest are checked against the state's (the overlay's
    header), so a damaged cached file is refused rather than rewritten as a base that
    would pass ``verify``.

    Raises:
        IntegrityError: a file's tables are damaged, or the records are not the state's.
    """
    overlay, base = files
    index_fields = list(base.header["index_fields"])
    where = f"feed {base.feed!r}: compacting {overlay.path} over {base.path}"
    try:
        kept = _unshadowed(overlay, base)
        rs = _record_set([(overlay, overlay.occupied()), (base, kept)], index_fields,
                         drop_tombstones=True)
        source = rs.source if rs.source is not None else np.zeros(len(rs), np.uint8)
        digest = sum(record_digest(heap, rs.starts[source == i], rs.lengths[source == i])
                     for i, heap in enumerate(rs.sources)) & _M64
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: {exc}") from None
    count, want = int(overlay.header["record_count"]), int(overlay.header["state_digest"], 16)
    if len(rs) != count or digest != want:
        raise IntegrityError(f"{where} gives {len(rs)} records (digest {digest:016x}), the "
                             f"state has {count} ({want:016x})")
    return rs
