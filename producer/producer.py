"""Producer.publish / append / update: one cycle turning a table, appended rows or a change
into a new feed version.

The cycle is a numbered pipeline, a function per step, each timed by ``_Clock.run``
(the seconds per step are the report's and ``metrics()``'s); the files it makes belong
to one ``_CycleFiles``, which removes them when a step fails, and a failed step
announces nothing:

1. restore   the last published state (work dir, else fetched from the store)  _restore
2. encode    the table (or the appended rows, or the upserts), batch by batch,
             spilled to a work file                                             _encode
3. check     non-null, unique keys (an appended key must be new)                _check_unique
4. diff      against the last published state; nothing changed -> no version   _diffed,
             (an update's deletes are the keys it names)                        _appended
5. write     the new state: a base file, or the delta merged into a new overlay
             over the last base                                                 _write_new_state
6. validate  change ratio, record count, custom validators -> RefusedError      _validate
7. compress  the delta blob; the overlay compacted into a base when it outgrows
             it or a snapshot is due; the snapshot blob (when due)              _write_blobs
8. upload    blobs, then the manifest (create-only)                             _upload
9. announce  compare-and-swap of the announcement                               _announce

Where the records come from (an Iceberg plan and its read) is the daemon's
(``producer/iceberg.py``). A whole-table publish over a last version of the same shape,
and every update, run 2 to 4 batch by batch (``Producer._streamed``): each batch is
diffed as it is encoded and only its changed records are spilled, so the cycle costs
the read plus the change, not a copy of the table; the first version, a new shape, and
a version with a snapshot due by count keep every record, to write the new base from
them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pyarrow as pa

from feedkit import _native, codec, names
from feedkit.blobs import BlobInfo, compress_file
from feedkit.errors import (
    BlobExistsError,
    BlobNotFoundError,
    ClosedError,
    ConfigurationError,
    FeedPinnedError,
    IntegrityError,
    ProducerFencedError,
    RefusedError,
    ValidationError,
)
from feedkit.format import (
    FORMAT_COMPACT,
    RecordSet,
    StateFile,
    derived_header,
    write_delta_blob,
    write_snapshot_blob,
    write_state,
)
from feedkit.manifest import Announcement, Manifest
from feedkit.merge import (
    Diff,
    apply_delta,
    base_records,
    compact,
    delta_records,
    diff,
    present,
    record_digest,
)
from feedkit.signing import signer_from
from feedkit.store import BlobStore

from .encode import ColumnPlan, _contains, describe_schema, encode_batch, key_spec_for
from .settings import (
    MAX_COMPRESSION_LEVEL,
    MIN_COMPRESSION_LEVEL,
    ProducerSettings,
    compression_level_problem,
)
from .stats import CycleStats
from .validate import CycleSummary, MaxChangeRatio, MinRecords, Validator, run_validator

__all__ = ["MAX_COMPRESSION_LEVEL", "MIN_COMPRESSION_LEVEL", "CycleReport", "Producer",
           "compression_level_problem"]

log = logging.getLogger("feedkit.producer")

_M64 = (1 << 64) - 1
_COMPACT_RATIO = 0.25  # merge the overlay into a new base past this share of the base


# What a cycle writes in the work dir (see _cycle, _run, _fetch_state and the temp names
# of feedkit.format.write_state): a SIGKILLed cycle leaves these behind, and the next
# producer removes those the announced version does not need (_clean_work_dir).
_WORK_FILE = re.compile(r"""
      \d{20}\.(?:state|overlay)                                 # a version's state files
    | \.\d{20}\.(?:delta|delta\.zst|snapshot\.zst|snapshot)     # a cycle's delta and blobs
    | \.spill\.[0-9a-f]{8}                                      # a cycle's encoded rows
    | \.(?:\d{20}\.(?:state|overlay)|\.\d{20}\.(?:delta|snapshot))\.[0-9a-f]{12}\.tmp  # temps
""", re.VERBOSE)
_RESTORE_DIR = "restore"  # _fetch_state's cache folder

_T = TypeVar("_T")

TableLike: TypeAlias = pa.Table | pa.RecordBatchReader | pa.RecordBatch | Iterable[pa.RecordBatch]


@dataclass
class _Published:
    """What the producer last announced, and the state file that holds it."""

    manifest: Manifest
    files: list[StateFile]  # the state of manifest.version: [overlay, base] or [base]
    etag: str
    since_snapshot: int  # versions published since the nearest snapshot

    @property
    def base(self) -> StateFile:
        return self.files[-1]


@dataclass
class _Change:
    """A new state and how it differs from the last published one."""

    state: RecordSet | None  # every record of the new version; None: the last state + delta
    delta: RecordSet | None  # upserts and tombstones from the last version; None: no delta
    digest: int  # the new state digest
    record_count: int
    added: int
    changed: int
    removed: int


@dataclass
class CycleReport:
    """What one publish or append did: figures for logs, metrics and validators."""

    feed: str
    version: int | None  # None: nothing changed, nothing published
    previous_version: int | None
    rows_read: int = 0
    record_count: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    snapshot: bool = False
    bytes_written: int = 0
    source: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # encode, diff, write, upload, total

    def log_fields(self) -> str:
        """``key=value`` pairs for one log line."""
        src = self.source or {}
        parts = [f"feed={self.feed}", f"version={self.version}",
                 f"previous={self.previous_version}"]
        if "snapshot_id" in src:
            parts.append(f"iceberg_snapshot={src['snapshot_id']}")
        parts += [f"rows_read={self.rows_read}", f"records={self.record_count}",
                  f"added={self.added}", f"changed={self.changed}", f"removed={self.removed}",
                  f"snapshot={str(self.snapshot).lower()}", f"bytes_written={self.bytes_written}"]
        parts += [f"{k}_s={v:.3f}" for k, v in self.seconds.items()]
        return " ".join(parts)


class Producer:
    """Publish versions of one feed from whole-table states or appended rows.

    Args:
        store: where to publish.
        feed: the feed's name.
        primary_key: the key column, or a tuple of columns for a composite key.
        indexes: columns to build secondary indexes on (``Consumer.find``).
        snapshot_every: write a snapshot blob at least every N versions.
        max_delta_ratio: also write a snapshot when the delta holds more entries
            (upserts and deletes) than this share of the last version's records.
        max_change_ratio: refuse a version that adds, changes or removes more than this
            share of the previous version's records (None: no limit).
        min_records: refuse a version with fewer records.
        validators: more rules, each a callable taking a
            :class:`~feedkit.producer.CycleSummary` and returning a
            :class:`~feedkit.producer.ValidationResult` (or a bool).
        work_dir: where the last published state is kept between cycles; None uses
            a temporary folder (the state is then restored from the store on the
            first publish of each process).
        compression_level: zstd level for blobs, from zstd's fastest negative level
            (:data:`MIN_COMPRESSION_LEVEL`, -131072) to :data:`MAX_COMPRESSION_LEVEL` (22);
            0 is zstd's default (3).
        batch_rows: rows encoded per batch.
        signing_key: sign every manifest with HMAC-SHA256 under this key (bytes, a str
            taken as UTF-8, or a ``pathlib.Path`` to a key file); None takes
            ``FEEDKIT_SIGNING_KEY`` or ``FEEDKIT_SIGNING_KEY_FILE`` from the environment,
            else manifests are unsigned. With a key, the manifests read back on restore
            must carry its signature too. See :mod:`feedkit.signing`.
        allow_unsigned: without a signing key, publish on top of a signed version anyway.
            By default such a publish raises :class:`~feedkit.ConfigurationError`: an
            unsigned version breaks every consumer that verifies signatures.
        format: the state format of the feed's bases and snapshots: 2 (compact:
            dictionary-coded records, sorted entries; docs/FORMAT.md, 10) or 1. A feed
            published in the other format switches with the next version, which is a
            snapshot without a delta (deltas never cross formats). Consumers read both;
            a feedkit older than format 2 refuses a format-2 version's manifest.

    A producer is a context manager; :meth:`close` (or garbage collection) removes the
    temporary folder it made when ``work_dir`` is None. A given ``work_dir`` belongs to
    one producer at a time: the first restore removes what earlier producers left there
    that the announced version does not need (states of unannounced versions, spill,
    delta and temp files of killed cycles).

    Raises:
        ConfigurationError: invalid feed name, key (``primary_key=None`` included) or
            settings (``compression_level`` outside zstd's range, a negative
            ``max_change_ratio`` or ``min_records``); the message names the feed.
    """

    def __init__(self, store: BlobStore, *, feed: str, primary_key: str | Sequence[str],
                 indexes: Sequence[str] = (), snapshot_every: int = 10,
                 max_delta_ratio: float = 0.5, max_change_ratio: float | None = None,
                 min_records: int = 0, validators: Sequence[Validator] = (),
                 work_dir: str | os.PathLike[str] | None = None,
                 compression_level: int = 3, batch_rows: int = 65536,
                 signing_key: str | bytes | os.PathLike[str] | None = None,
                 allow_unsigned: bool = False, format: int = 2) -> None:
        self._init(store, ProducerSettings(
            feed=feed, primary_key=primary_key, indexes=tuple(indexes),  # type: ignore[arg-type]
            snapshot_every=snapshot_every, max_delta_ratio=max_delta_ratio,
            max_change_ratio=max_change_ratio, min_records=min_records,
            compression_level=compression_level, batch_rows=batch_rows,
            allow_unsigned=allow_unsigned, format=format), validators, work_dir, signing_key)

    @classmethod
    def from_settings(cls, store: BlobStore, settings: ProducerSettings, *,
                      validators: Sequence[Validator] = (),
                      work_dir: str | os.PathLike[str] | None = None,
                      signing_key: str | bytes | os.PathLike[str] | None = None) -> Producer:
        """A producer of ``settings`` (already validated: the daemon's ``FeedConfig``);
        the other arguments as for the constructor."""
        producer = cls.__new__(cls)
        producer._init(store, settings, validators, work_dir, signing_key)
        return producer

    def _init(self, store: BlobStore, settings: ProducerSettings,
              validators: Sequence[Validator], work_dir: str | os.PathLike[str] | None,
              signing_key: str | bytes | os.PathLike[str] | None) -> None:
        self.settings = settings
        self.feed = feed = settings.feed
        self.format = settings.format
        self._signer = signer_from(signing_key)
        self.allow_unsigned = settings.allow_unsigned
        self.store = store
        self.primary_key = settings.primary_key
        self.indexes = list(settings.indexes)
        self.snapshot_every = settings.snapshot_every
        self.max_delta_ratio = settings.max_delta_ratio
        self.validators: list[Any] = []
        if settings.max_change_ratio is not None:
            self.validators.append(MaxChangeRatio(settings.max_change_ratio))
        if settings.min_records:
            self.validators.append(MinRecords(settings.min_records))
        self.validators += list(validators)
        self.compression_level = settings.compression_level
        self.batch_rows = settings.batch_rows
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(
            tempfile.mkdtemp(prefix=f"feedkit-producer-{feed}-"))
        # Removes the temporary folder on close() or when the producer is collected (a
        # finalizer holds no reference to the producer); a given work_dir is the user's.
        self._remove_work_dir = weakref.finalize(
            self, shutil.rmtree, str(self.work_dir), True) if self._own_work_dir else None
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except ValueError as exc:  # "embedded null byte"
            raise ConfigurationError(f"feed {feed!r}: invalid work_dir {work_dir!r}: {exc}") from exc
        self.producer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.last_report: CycleReport | None = None
        self._last: _Published | None = None
        self._closed = False
        self._stats = CycleStats()  # the daemon hands one on to the next producer of a feed

    def __enter__(self) -> Producer:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Refuse further cycles and remove the temporary work dir (a given ``work_dir``
        keeps the last state, for the next producer). Idempotent."""
        self._closed = True
        self._last = None
        if self._remove_work_dir is not None:
            self._remove_work_dir()

    @property
    def version(self) -> int | None:
        """The version this producer last published or restored."""
        return self._last.manifest.version if self._last else None

    @property
    def manifest(self) -> Manifest | None:
        """The manifest of the version this producer last published or restored."""
        return self._last.manifest if self._last else None

    def metrics(self) -> dict[str, Any]:
        """What this producer's cycles did, as a plain dict (safe from any thread).

        Times are unix seconds, durations seconds; ``None`` means not known (yet).

        - ``feed``, ``version`` and ``record_count`` (last published or restored).
        - ``cycles``: ``published``, ``unchanged``, ``refused``, ``pinned`` (the feed
          is pinned: nothing published, by intent), ``failed`` counts (a call to
          :meth:`publish` or :meth:`append` is one cycle); ``last_outcome``,
          ``last_error`` (message of the last failed cycle).
        - ``step_seconds``: per step (``encode``, ``diff``, ``write``, ``validate``,
          ``compress``, ``upload``, ``total``) the ``count``, ``sum``, ``last`` and
          ``max`` over the cycles that ran it.
        - ``rows_read``: ``total`` and ``last`` rows read from input tables (every cycle
          that read); ``records_added``, ``records_changed``, ``records_removed`` and
          ``bytes_written`` (blobs and manifest): ``total`` and ``last`` over published
          cycles.
        - ``refusals``: refused cycles per rule (``max_change_ratio``, ``min_records``,
          a custom validator's name; ``table`` for null or duplicate keys and columns
          that cannot be published).
        - ``last_published_version``, ``last_published_time``.
        """
        m = self.manifest
        return self._stats.as_dict(self.feed, m.version if m else None,
                                   m.record_count if m else None)

    def restore(self) -> Manifest | None:
        """Restore the announced version now (the first publish does it otherwise).

        Returns its manifest, or None when the feed was never announced.

        Raises:
            ProducerFencedError: the announcement moved since this producer announced.
            FeedPinnedError: an operator pinned the feed (``feedkit pin``).
            FeedkitError: the store failed or holds a damaged version.
        """
        self._check_open()
        self._restore()
        return self.manifest

    def can_append(self, schema: pa.Schema) -> bool:
        """Whether rows of ``schema`` can be appended to the last version (same columns,
        types, key and indexes). Restores first."""
        self._check_open()
        self._restore()
        if self._last is None:
            return False
        try:
            describe = self._describe(schema)[0]
        except ValidationError:
            return False
        return self._same_shape(describe)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"producer of feed {self.feed!r} is closed")

    # -- the cycle ------------------------------------------------------------------------

    def publish(self, table: TableLike, *, source: dict[str, Any] | None = None,
                force: bool = False) -> int | None:
        """Publish ``table`` (the whole state) as a new version.

        Args:
            table: a pyarrow Table, RecordBatchReader, RecordBatch or iterable of batches.
            source: where the state comes from (recorded in the manifest), e.g.
                ``{"table": "db.t", "snapshot_id": 123}``.
            force: skip the threshold rules (``max_change_ratio``, ``min_records``);
                key rules and custom validators still apply.

        Returns the new version, or None when nothing changed.

        Raises:
            ValidationError: missing, null or duplicate keys, or an unsupported column;
                nothing is written.
            RefusedError: a validator refused the new state; nothing is announced.
            ProducerFencedError: another producer moved the announcement.
            FeedPinnedError: the feed is pinned (``feedkit pin``); nothing is written until
                ``feedkit unpin``, and the next cycle after it restores the announced version.
            ConfigurationError: the announced version is signed and this producer has no
                signing key (and not ``allow_unsigned``); nothing is written.
            FeedkitError: any other failure; nothing is announced.
        """
        return self._counted(table, source, force, "publish")

    def append(self, table: TableLike, *, source: dict[str, Any] | None = None,
               force: bool = False) -> int | None:
        """Publish the last version plus the rows of ``table`` (new keys only).

        Costs the size of the appended rows plus one pass over the state file, not a
        read of the whole table. Use :meth:`can_append` to check the schema first.

        Raises:
            ValidationError: an appended key is null, repeated, or already in the feed
                (an append cannot change a record), or the schema differs from the last
                version's; nothing is written.
            RefusedError, ProducerFencedError, FeedkitError: as for :meth:`publish`.
        """
        return self._counted(table, source, force, "append")

    def update(self, upserts: TableLike, *, deletes: TableLike | None = None,
               source: dict[str, Any] | None = None, force: bool = False) -> int | None:
        """Publish the last version with the records of ``upserts`` added or replaced and
        the keys of ``deletes`` removed: a change, not a whole state.

        Costs the size of the change plus a probe per key, not a read of the whole table
        (the daemon's file-diff cycles use it: the rows of the Iceberg data files a
        snapshot added are ``upserts``, the keys of the rows it removed ``deletes``). An
        upserted record equal to the one published is no change; a key both upserted and
        deleted is upserted; deleting a key that is not in the feed does nothing. No
        change at all publishes nothing.

        Args:
            upserts: rows in the last version's columns (a pyarrow Table,
                RecordBatchReader, RecordBatch or iterable of batches).
            deletes: rows holding (at least) the key columns, of the key's types; None
                deletes nothing.
            source, force: as for :meth:`publish`.

        Returns the new version, or None when nothing changed.

        Raises:
            ValidationError: nothing was published yet, the upserts' columns, key or
                indexes differ from the last version's, a key (upserted or deleted) is
                null or missing, or an upserted key repeats; nothing is written.
            RefusedError, ProducerFencedError, FeedkitError: as for :meth:`publish`.
        """
        return self._counted(upserts, source, force, "update", deletes)

    def _check_signed_parent(self) -> None:
        """Refuse to put an unsigned version on top of a signed one (unless allowed): every
        consumer holding the key would refuse it, and every version after it."""
        last = self._last
        if (last is None or self._signer is not None or self.allow_unsigned
                or not last.manifest.signature):
            return
        key_id = last.manifest.signature.get("key_id")
        raise ConfigurationError(
            f"feed {self.feed!r}: version {last.manifest.version} is signed (key {key_id}) and "
            "this producer has no signing key: an unsigned version would break every "
            "consumer that verifies signatures. Give the key (signing_key=, or "
            "FEEDKIT_SIGNING_KEY / FEEDKIT_SIGNING_KEY_FILE), or pass allow_unsigned=True "
            "(allow_unsigned = true in the daemon's [[feed]]) to publish unsigned anyway; "
            "nothing was written")

    def _describe(self, schema: pa.Schema) -> tuple[dict[str, Any], ColumnPlan]:
        columns = describe_schema(schema, self.feed)
        spec = key_spec_for(schema, self.primary_key, self.feed)
        for name in self.indexes:
            if name not in schema.names:
                raise ValidationError(f"feed {self.feed!r}: index column {name!r} is missing "
                                      "from the table")
            if columns[schema.names.index(name)]["kind"] in ("list", "map", "struct"):
                raise ValidationError(f"feed {self.feed!r}: index column {name!r} is not a "
                                      "scalar column")
        plan = ColumnPlan(self.feed, spec, list(schema.names), self.indexes)
        use_list = any(_contains(f.type, {"list"}) for f in schema)
        return ({"feed": self.feed, "key": spec.to_json(), "schema": columns,
                 "index_fields": self.indexes, "use_list": use_list}, plan)

    def _same_shape(self, describe: dict[str, Any], *, format: bool = True) -> bool:
        """Whether the last version has the new one's key, schema, indexes and (with
        ``format``) state format: then the new one may be a delta over it. A whole
        publish switches formats at once, with a snapshot; an append (only the new rows
        at hand) keeps the last format until a snapshot is due."""
        last = self._last
        return last is not None and (not format or last.manifest.state_format == self.format) \
            and all(last.base.header[k] == describe[k] for k in ("key", "schema", "index_fields"))

    def _counted(self, table: TableLike, source: dict[str, Any] | None, force: bool,
                 mode: str, deletes: TableLike | None = None) -> int | None:
        """:meth:`_run`, with its outcome and figures counted for :meth:`metrics`."""
        self._check_open()
        before, started = self.last_report, time.monotonic()
        try:
            version = self._run(table, source, force, mode, deletes)
        except Exception as exc:
            report = self.last_report if self.last_report is not before else None
            self._stats.record(report, time.monotonic() - started, exc)
            raise
        report = self.last_report if self.last_report is not before else None
        self._stats.record(report, time.monotonic() - started)
        return version

    def _run(self, table: TableLike, source: dict[str, Any] | None, force: bool,
             mode: str, deletes: TableLike | None) -> int | None:
        self._check_open()
        clock = _Clock()
        etag = clock.run("restore", self._restore)  # 1
        last = self._last
        self._check_signed_parent()
        report = CycleReport(self.feed, None, last.manifest.version if last else None,
                             source=source)
        self.last_report = report
        schema, batches = _batches(table, self.batch_rows)
        describe, plan = self._describe(schema)
        if mode == "update" and last is None:
            raise ValidationError(f"feed {self.feed!r}: nothing published yet to update; "
                                  "publish the whole table first")
        if mode != "publish" and not self._same_shape(describe, format=False):
            raise ValidationError(
                f"feed {self.feed!r}: cannot {mode} rows whose columns, key or indexes differ "
                f"from version {report.previous_version}'s; publish the whole table instead")
        spill = self.work_dir / f".spill.{uuid.uuid4().hex[:8]}"
        try:
            if mode == "update" or (mode == "publish" and self._streams(describe)):
                # 2 + 3 + 4, batch by batch: only the changed records are kept (spilled);
                # an update's deletes are the keys it names, a publish's the keys not seen
                gone = self._slot_keys(deletes, plan) if mode == "update" else None
                change, report.rows_read = self._streamed(batches, plan, spill, report, clock,
                                                          gone)
                report.seconds["diff"] = clock.lap()  # its last step: the keys that are gone
            else:
                rs, report.rows_read = clock.run("encode", self._encode, batches, plan,
                                                 spill)  # 2 + 3
                change = clock.run("diff", self._appended if mode == "append" else self._diffed,
                                   rs, plan if mode == "append" else describe)  # 4
                report.seconds.update(clock.seconds)
            if change is None:
                report.record_count = last.manifest.record_count  # type: ignore[union-attr]
                report.seconds["total"] = clock.total()
                log.info("event=unchanged %s", report.log_fields())
                return None
            return self._cycle(change, describe, etag, report, force, clock)
        finally:
            with contextlib.suppress(OSError):
                spill.unlink()

    def _encode(self, batches: Iterable[pa.RecordBatch], plan: ColumnPlan,
                spill: Path) -> tuple[RecordSet, int]:
        keys, starts, lengths, null_rows = [], [], [], []
        hashes: dict[str, list[np.ndarray]] = {f: [] for f in plan.index_fields}
        written = rows = 0
        with open(spill, "wb") as f:
            for batch in batches:
                enc = encode_batch(batch, plan)
                f.write(enc.data.data)
                keys.append(enc.slot_keys)
                starts.append(enc.offsets[:-1] + written)
                lengths.append(np.diff(enc.offsets))
                null_rows.append(enc.null_key_rows + rows)
                for name in plan.index_fields:
                    hashes[name].append(enc.index_hashes[name])
                written += len(enc.data)
                rows += batch.num_rows
        nulls = np.concatenate(null_rows) if null_rows else np.empty(0, np.int64)
        data = np.memmap(spill, dtype=np.uint8, mode="r") if written else np.empty(0, np.uint8)
        dtype = np.int64 if plan.spec.slot_kind == "int" else np.uint64
        rs = RecordSet(
            keys=np.concatenate(keys).astype(dtype, copy=False) if keys else np.empty(0, dtype),
            starts=np.concatenate(starts) if starts else np.empty(0, np.int64),
            lengths=np.concatenate(lengths) if lengths else np.empty(0, np.int64),
            sources=[data],
            index_hashes={k: np.concatenate(v) if v else np.empty(0, np.uint64)
                          for k, v in hashes.items()},
        )
        if len(nulls):
            raise self._null_keys(plan, len(nulls), self._keys_at(rs, plan, nulls[:5]))
        self._check_unique(rs.keys, plan, lambda rows: self._keys_at(rs, plan, rows))
        return rs, rows

    def _streams(self, describe: dict[str, Any]) -> bool:
        """Whether a whole publish diffs batch by batch (:meth:`_streamed`): over a last
        version of the same shape, unless a snapshot is due by count, when the cycle
        writes a base from every new record anyway."""
        last = self._last
        return (last is not None and self._same_shape(describe)
                and last.since_snapshot + 1 < self.snapshot_every)

    def _slot_keys(self, deletes: TableLike | None, plan: ColumnPlan) -> np.ndarray:
        """The slot keys (as uint64 words) of the key values in ``deletes``' key columns.

        Raises:
            ValidationError: a key column is missing, of another kind than the feed's key,
                or holds a null.
        """
        if deletes is None:
            return np.empty(0, np.uint64)
        schema, batches = _batches(deletes, self.batch_rows)
        columns = list(plan.spec.columns)
        spec = key_spec_for(schema, self.primary_key, self.feed)
        if spec.parts != plan.spec.parts:
            raise ValidationError(
                f"feed {self.feed!r}: the deleted keys' column(s) {', '.join(columns)} are of "
                f"kind {'/'.join(spec.parts)}, the feed's key is {'/'.join(plan.spec.parts)}")
        keys_plan = ColumnPlan(self.feed, plan.spec, columns, [])
        parts = []
        for batch in batches:
            enc = encode_batch(batch.select(columns), keys_plan)
            if len(enc.null_key_rows):
                raise ValidationError(
                    f"feed {self.feed!r}: null in the deleted keys' column(s) "
                    f"{', '.join(columns)} at {len(enc.null_key_rows)} row(s)")
            parts.append(enc.slot_keys.view(np.uint64))
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.empty(0, np.uint64)

    def _streamed(self, batches: Iterable[pa.RecordBatch], plan: ColumnPlan, spill: Path,
                  report: CycleReport, clock: _Clock,
                  deletes: np.ndarray | None = None) -> tuple[_Change | None, int]:
        """Encode and diff each batch against the last state as it comes; keep (spill) the
        upserts' records only, and every slot key (for the uniqueness check). With
        ``deletes`` (slot keys), the records of those keys go and the others stay (an
        update); without, the records of the keys not seen go (a whole new state).

        The change has no whole state: the cycle merges the delta into a new overlay,
        compacted when it outgrows the base or a snapshot is due after all.
        """
        last = self._last
        assert last is not None
        differ = _native.Differ([sf.table_args() for sf in last.files])
        slot_keys, null_rows, key_parts = [], [], []
        up_keys, up_starts, up_lengths = [], [], []
        up_hashes: dict[str, list[np.ndarray]] = {f: [] for f in plan.index_fields}
        written = rows = 0
        with open(spill, "wb") as f:
            for batch in batches:
                enc = encode_batch(batch, plan)
                starts = np.ascontiguousarray(enc.offsets[:-1])
                lengths = np.diff(enc.offsets)
                slot_keys.append(enc.slot_keys)
                null_rows.append(enc.null_key_rows + rows)
                key_parts.append(batch.select(list(plan.spec.columns)))  # for messages
                up = np.frombuffer(differ.batch(enc.slot_keys.view(np.uint64), enc.data, starts,
                                                lengths), dtype=np.int64)
                if len(up):
                    data = _gather(enc.data, starts[up], lengths[up])
                    f.write(data.data)
                    up_keys.append(enc.slot_keys[up])
                    up_lengths.append(lengths[up])
                    up_starts.append(np.cumsum(lengths[up]) - lengths[up] + written)
                    for name in plan.index_fields:
                        up_hashes[name].append(enc.index_hashes[name][up])
                    written += len(data)
                rows += batch.num_rows
        report_keys = _KeyValues(key_parts, plan)
        nulls = np.concatenate(null_rows) if null_rows else np.empty(0, np.int64)
        if len(nulls):
            raise self._null_keys(plan, len(nulls), report_keys(nulls[:5]))
        dtype = np.int64 if plan.spec.slot_kind == "int" else np.uint64
        self._check_unique(np.concatenate(slot_keys).astype(dtype, copy=False)
                           if slot_keys else np.empty(0, dtype), plan, report_keys)
        report.seconds["encode"] = clock.lap()
        if deletes is not None:
            differ.delete(deletes)
        deleted, changed_old, removed_digest, added_digest = differ.finish(
            named=deletes is not None)
        d = Diff(upserts=np.arange(sum(len(k) for k in up_keys), dtype=np.int64),
                 deleted=[np.frombuffer(b, dtype=np.int64) for b in deleted],
                 changed_old=[np.frombuffer(b, dtype=np.int64) for b in changed_old],
                 removed_digest=int(removed_digest), added_digest=int(added_digest))
        if d.empty:
            return None, rows
        heap = np.memmap(spill, dtype=np.uint8, mode="r") if written else np.empty(0, np.uint8)
        upserts = RecordSet(
            keys=np.concatenate(up_keys).astype(dtype, copy=False) if up_keys
            else np.empty(0, dtype),
            starts=np.concatenate(up_starts) if up_starts else np.empty(0, np.int64),
            lengths=np.concatenate(up_lengths) if up_lengths else np.empty(0, np.int64),
            sources=[heap],
            index_hashes={k: np.concatenate(v) if v else np.empty(0, np.uint64)
                          for k, v in up_hashes.items()},
        )
        digest = (last.manifest.state_digest - d.removed_digest + d.added_digest) & _M64
        added = len(d.upserts) - d.changed
        count = rows if deletes is None else last.manifest.record_count + added - d.removed
        return _Change(None, delta_records(last.files, upserts, d, self.indexes), digest, count,
                       added, d.changed, d.removed), rows

    def _null_keys(self, plan: ColumnPlan, count: int, first: list[Any]) -> ValidationError:
        return ValidationError(
            f"feed {self.feed!r}: null in key column(s) {', '.join(plan.spec.columns)} at "
            f"{count} row(s); first keys: {first}")

    def _keys_at(self, rs: RecordSet, plan: ColumnPlan, rows: np.ndarray) -> list[Any]:
        positions = [plan.names.index(c) for c in plan.spec.columns]
        out = []
        for r in rows.tolist():
            a, n = int(rs.starts[r]), int(rs.lengths[r])
            rec = codec.unpack_record(rs.sources[0][a:a + n].tobytes())
            parts = tuple(rec[p] for p in positions)
            out.append(parts[0] if len(parts) == 1 else parts)
        return out

    def _check_unique(self, slot_keys: np.ndarray, plan: ColumnPlan,
                      keys_at: Callable[[np.ndarray], list[Any]]) -> None:
        """Refuse a repeated slot key; ``keys_at(rows)`` gives the key values of rows."""
        slot_keys = np.ascontiguousarray(slot_keys)
        if not _native.has_duplicate_keys(slot_keys, slot_keys.dtype.kind == "i"):  # no GIL
            return
        # The failure path: which rows, and the keys they hold, for the message.
        order = np.argsort(slot_keys, kind="stable")
        sorted_keys = slot_keys[order]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if not len(dup):
            return
        rows = np.unique(np.concatenate([order[dup], order[dup + 1]]))
        keys = keys_at(rows)
        distinct = list(dict.fromkeys(repr(k) for k in keys))
        if plan.spec.slot_kind == "hash" and len(distinct) == len(keys):
            raise ValidationError(
                f"feed {self.feed!r}: keys {', '.join(distinct[:5])} share a 64-bit hash; "
                "feedkit cannot publish this table (please report it)")
        raise ValidationError(
            f"feed {self.feed!r}: duplicate keys in column(s) {', '.join(plan.spec.columns)}: "
            f"{len(dup)} duplicate row(s); first keys: {', '.join(distinct[:5])}")

    def _diffed(self, rs: RecordSet, describe: dict[str, Any]) -> _Change | None:
        """The change from the last version to the whole new state ``rs``."""
        last = self._last
        if last is None or not self._same_shape(describe):
            # First version, or a new schema/key/indexes: a snapshot without a delta.
            return _Change(rs, None, record_digest(rs.sources[0], rs.starts, rs.lengths),
                           len(rs), len(rs), 0, last.manifest.record_count if last else 0)
        files = last.files
        d = diff(files, rs)
        if d.empty:
            return None
        digest = last.manifest.state_digest - d.removed_digest + d.added_digest
        return _Change(rs, delta_records(files, rs, d, self.indexes), digest & _M64, len(rs),
                       len(d.upserts) - d.changed, d.changed, d.removed)

    def _appended(self, new: RecordSet, plan: ColumnPlan) -> _Change | None:
        """The last version plus the records of ``new``, whose keys must all be new."""
        last = self._last
        assert last is not None
        if not len(new):
            return None
        clash = np.flatnonzero(present(last.files, new.keys))
        if len(clash):
            raise ValidationError(
                f"feed {self.feed!r}: {len(clash)} appended row(s) repeat keys already in "
                f"version {last.manifest.version} (duplicate keys in column(s) "
                f"{', '.join(plan.spec.columns)}); first keys: "
                f"{', '.join(repr(k) for k in self._keys_at(new, plan, clash[:5]))}")
        digest = last.manifest.state_digest + record_digest(new.sources[0], new.starts,
                                                            new.lengths)
        return _Change(None, new, digest & _M64, last.manifest.record_count + len(new),
                       len(new), 0, 0)

    def _validate(self, change: _Change, version: int, files: list[StateFile],
                  report: CycleReport, force: bool) -> None:
        """Run every validator on the new state; raise RefusedError naming the failures."""
        if not self.validators:
            return
        from feedkit.state import State

        last = self._last
        summary = CycleSummary(
            feed=self.feed, version=version,
            previous_version=last.manifest.version if last else None,
            record_count=change.record_count,
            previous_record_count=last.manifest.record_count if last else None,
            added=change.added, changed=change.changed, removed=change.removed,
            source=report.source, state=State(files))
        failed = []
        for validator in self.validators:
            if force and getattr(validator, "overridable", False):
                continue
            result = run_validator(validator, summary)
            if not result.passed:
                failed.append(result)
        if failed:
            reasons = "; ".join(f"{r.rule}: {r.message}" for r in failed)
            log.warning("event=refused rule=%s %s reason=%r", ",".join(r.rule for r in failed),
                        report.log_fields(), reasons)
            report.version = None
            raise RefusedError(f"feed {self.feed!r}: version {version} refused by {reasons}",
                               failed)

    def _cycle(self, change: _Change, describe: dict[str, Any], etag: str | None,
               report: CycleReport, force: bool, clock: _Clock) -> int:
        """Steps 5 to 9 of a change: write the new state, validate it, write the blobs,
        publish them and the manifest, announce. A failed step removes every file the
        cycle made (``_CycleFiles``) and announces nothing."""
        last = self._last
        version = max(int(time.time() * 1000), (last.manifest.version + 1) if last else 1)
        report.version, report.record_count = version, change.record_count
        report.added, report.changed, report.removed = change.added, change.changed, change.removed
        header = dict(describe, version=version, record_count=change.record_count,
                      state_digest=f"{change.digest:016x}")
        since = last.since_snapshot + 1 if last else 0
        made = _CycleFiles(self.work_dir, version)
        try:
            delta_state, files, due = clock.run(  # 5
                "write", self._write_new_state, change, header, made, since)
            clock.run("validate", self._validate, change, version, files, report, force)  # 6
            blobs, files = clock.run(  # 7
                "compress", self._write_blobs, change, header, made, delta_state, files, due)
            manifest = self._new_manifest(change, describe, version, blobs, report)
            report.bytes_written = clock.run("upload", self._upload, manifest, blobs)  # 8
            new_etag = clock.run("announce", self._announce, version, etag)  # 9
        except BaseException:
            made.discard()
            raise
        finally:
            made.close()
            report.seconds.update(clock.seconds)
        made.settle(files, last.files if last else [])
        self._last = _Published(manifest, files, new_etag, 0 if blobs.snapshot else since)
        report.snapshot = blobs.snapshot is not None
        report.seconds["total"] = clock.total()
        log.info("event=published %s", report.log_fields())
        return version

    def _write_new_state(self, change: _Change, header: dict[str, Any], made: _CycleFiles,
                         since: int) -> tuple[Path | None, list[StateFile], bool]:
        """Step 5: the delta's state file (a temp) and the new state's files: a new base
        (the first version, a new shape, or a whole new state with a snapshot due) or the
        delta merged into a new overlay over the last base. Returns (the delta's file,
        the new state's files, whether a snapshot is due)."""
        last = self._last
        version = header["version"]
        delta_state = None
        if last is not None and change.delta is not None:
            delta_state = made.temp(f".{version:020d}.delta")
            write_state(delta_state, dict(header, kind="overlay",
                                          base_version=last.manifest.version), change.delta)
        due = self._snapshot_due(last, delta_state, since)
        if delta_state is None or (change.state is not None and (
                due or self._outgrows(last, change.delta))):  # type: ignore[arg-type]
            # written from the new records, not compacted
            assert change.state is not None
            path = made.state(self._base_path(version))
            write_state(path, dict(header, kind="base"), change.state)
            return delta_state, [StateFile(path)], due
        assert last is not None
        base = last.base
        path = made.state(self._overlay_path(version))
        write_state(path, derived_header(
            base.header, version=version, kind="overlay", base_version=base.version,
            record_count=change.record_count, state_digest=change.digest),
            apply_delta(last.files, StateFile(delta_state), change.record_count, change.digest))
        return delta_state, [StateFile(path), base], due

    def _write_blobs(self, change: _Change, header: dict[str, Any], made: _CycleFiles,
                     delta_state: Path | None, files: list[StateFile],
                     due: bool) -> tuple[_Blobs, list[StateFile]]:
        """Step 7: the delta blob (over the last version), the overlay compacted into a base
        when it outgrew it or a snapshot is due, and the snapshot blob when due. Returns
        the blobs and the new state's files (compacted)."""
        last = self._last
        version = header["version"]
        blobs = _Blobs()
        if last is not None and delta_state is not None:
            blobs.delta_path = made.temp(f".{version:020d}.delta.zst")
            delta_key = names.delta_key(self.feed, last.manifest.version, version)
            if last.manifest.state_format == FORMAT_COMPACT:
                # a format-2 chain's delta is columnar (FORMAT.md, 11.5), format 1's the
                # delta's state file compressed
                blobs.delta = write_delta_blob(blobs.delta_path, dict(
                    header, kind="overlay", base_version=last.manifest.version),
                    change.delta, delta_key, self.compression_level)  # type: ignore[arg-type]
            else:
                blobs.delta = compress_file(delta_state, blobs.delta_path, delta_key,
                                            self.compression_level)
        if len(files) == 2 and (due or files[0].count > _COMPACT_RATIO * files[1].count):
            path = made.state(self._base_path(version))
            write_state(path, dict(header, kind="base"), compact(files))
            files = [StateFile(path)]
        if due:
            # The producer's own state is format 1 (its diffs compare canonical bytes at
            # memcmp speed); the snapshot is the feed's format: format 2's is a columnar
            # blob of the records (FORMAT.md, 11), format 1's the state file compressed.
            blobs.snapshot_path = made.temp(f".{version:020d}.snapshot.zst")
            snap_key = names.snapshot_key(self.feed, version)
            if self.format == FORMAT_COMPACT:
                blobs.snapshot = write_snapshot_blob(
                    blobs.snapshot_path, dict(header, kind="base"), base_records(files[0]),
                    snap_key, self.compression_level)
            else:
                snap_state = files[0].path
                if files[0].format != self.format:
                    snap_state = made.temp(f".{version:020d}.snapshot")
                    write_state(snap_state, dict(header, kind="base"), base_records(files[0]),
                                format=self.format)
                blobs.snapshot = compress_file(snap_state, blobs.snapshot_path, snap_key,
                                               self.compression_level)
        return blobs, files

    def _new_manifest(self, change: _Change, describe: dict[str, Any], version: int,
                      blobs: _Blobs, report: CycleReport) -> Manifest:
        """The new version's manifest, signed when this producer has a key."""
        last = self._last
        manifest = Manifest(
            feed=self.feed, version=version,
            parent=last.manifest.version if last else None,
            nearest_snapshot=version if blobs.snapshot else last.manifest.nearest_snapshot,  # type: ignore[union-attr]
            record_count=change.record_count, state_digest=change.digest, key=describe["key"],
            schema=describe["schema"], index_fields=self.indexes,
            snapshot=blobs.snapshot, delta=blobs.delta, source=report.source,
            state_format=self.format if blobs.snapshot or last is None
            else last.manifest.state_format,
        )
        return self._signer.sign(manifest) if self._signer is not None else manifest

    def _announce(self, version: int, etag: str | None) -> str:
        """Step 9: move the announcement to ``version`` if it is still at ``etag``.

        Raises:
            ProducerFencedError: another producer moved it.
        """
        return self.store.replace_if_match(
            names.announcement_key(self.feed),
            Announcement(self.feed, version, producer=self.producer_id).to_bytes(), etag)

    def _snapshot_due(self, last: _Published | None, delta_state: Path | None,
                      since: int) -> bool:
        """Whether this version gets a snapshot blob: the first one, one without a delta
        (a new shape or format), ``snapshot_every`` versions after the last snapshot, or
        a delta of more entries (upserts and deletes) than ``max_delta_ratio`` of the
        last version's records. (Entries, not bytes: a format-1 overlay and a format-2
        base hold a record in very different sizes.)"""
        return (last is None or delta_state is None or since >= self.snapshot_every
                or StateFile(delta_state).count > self.max_delta_ratio * last.manifest.record_count)

    @staticmethod
    def _outgrows(last: _Published, delta: RecordSet) -> bool:
        """Whether an overlay of the last one's entries and ``delta``'s may pass
        _COMPACT_RATIO of the base: then a whole publish writes a base at once, rather
        than an overlay and its compaction."""
        overlay = last.files[0].count if len(last.files) == 2 else 0
        return overlay + len(delta) > _COMPACT_RATIO * last.base.count

    def _base_path(self, version: int) -> Path:
        return self.work_dir / f"{version:020d}.state"

    def _overlay_path(self, version: int) -> Path:
        return self.work_dir / f"{version:020d}.overlay"

    def _since_snapshot(self, m: Manifest) -> int:
        """Versions from the nearest snapshot to ``m`` (read once, at restore)."""
        count = 0
        while m.snapshot is None and m.parent is not None:
            count += 1
            m = self._manifest(m.parent)
        return count

    def _manifest(self, version: int) -> Manifest:
        key = names.manifest_key(self.feed, version)
        manifest = Manifest.from_bytes(self.store.get_bytes(key), key)
        if self._signer is not None and manifest.signature is not None:
            # A signed manifest must be ours; an unsigned one is history from before
            # signing was turned on, which a producer may build on.
            self._signer.verify(manifest, key)
        return manifest

    def _upload(self, manifest: Manifest, blobs: _Blobs) -> int:
        """Step 8: upload the blobs, then the manifest; return the bytes written.

        Raises:
            ProducerFencedError: an object of this version exists already: another
                producer minted the same version (names are create-only).
        """
        written = 0
        try:
            for path, info in ((blobs.delta_path, manifest.delta),
                               (blobs.snapshot_path, manifest.snapshot)):
                if path is not None and info is not None:
                    self.store.put_new(info.key, path)
                    written += info.size
            data = manifest.to_bytes()
            self.store.put_new_bytes(names.manifest_key(self.feed, manifest.version), data)
        except BlobExistsError as exc:
            raise ProducerFencedError(
                f"feed {self.feed!r}: version {manifest.version} is being written by another "
                f"producer ({exc})") from exc
        return written + len(data)

    # -- restore ----------------------------------------------------------------------

    def _restore(self) -> str | None:
        """Make sure the last announced state is at hand; return the announcement's ETag.

        Raises:
            ProducerFencedError: the announcement moved since this producer announced.
            FeedPinnedError: an operator pinned the feed (``feedkit pin``).
        """
        key = names.announcement_key(self.feed)
        try:
            data, etag = self.store.read_if_changed(key) or (b"", None)
        except BlobNotFoundError:
            if self._last is not None:
                raise ProducerFencedError(f"feed {self.feed!r}: the announcement vanished") from None
            self._clean_work_dir(())  # nothing announced: nothing left over is needed
            return None
        announcement = Announcement.from_bytes(data, key)
        if announcement.pinned is not None:
            # An operator rolled back (feedkit pin): publish nothing. Forget the last state,
            # so that after the unpin the next cycle restores what is announced then.
            self._last = None
            raise FeedPinnedError(
                f"{announcement.pinned.describe(self.feed, announcement.version)}; nothing "
                f"published (feedkit unpin resumes)",
                version=announcement.version, pin=announcement.pinned)
        if self._last is not None:
            if etag != self._last.etag:
                raise ProducerFencedError(
                    f"feed {self.feed!r}: announcement moved to version {announcement.version} "
                    f"since this producer announced {self._last.manifest.version}; "
                    "another producer is publishing (start a fresh one to take over)")
            return etag
        manifest = self._manifest(announcement.version)
        files = self._local_state(manifest)
        self._restored_from = "work_dir"
        if files is None:
            files, self._restored_from = [self._fetch_state(manifest)], "store"
        self._last = _Published(manifest, files, etag,  # type: ignore[arg-type]
                                self._since_snapshot(manifest))
        self._clean_work_dir(sf.path for sf in files)  # type: ignore[union-attr]
        log.info("event=restored feed=%s version=%s records=%s from=%s", self.feed,
                 manifest.version, manifest.record_count, self._restored_from)
        return etag

    def _clean_work_dir(self, keep: Iterable[Path]) -> None:
        """Remove what killed cycles left in the work dir and ``keep`` does not name.

        Only names a cycle writes are touched (states of unannounced or older versions,
        spill, delta, blob and temp files, the restore folder), never other files.
        """
        kept = {p.name for p in keep}
        files = size = 0
        try:
            entries = list(os.scandir(self.work_dir))
        except OSError:
            return
        for entry in entries:
            if entry.name in kept:
                continue
            try:
                if entry.name == _RESTORE_DIR and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                elif _WORK_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    size += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                else:
                    continue
            except OSError as exc:  # the next restore tries again
                log.warning("event=clean_failed feed=%s path=%s reason=%r", self.feed,
                            entry.path, str(exc))
                continue
            files += 1
        if files:
            log.info("event=cleaned feed=%s work_dir=%s removed=%d bytes=%d (left by "
                     "earlier cycles, not needed by the announced version)", self.feed,
                     self.work_dir, files, size)

    def _local_state(self, manifest: Manifest) -> list[StateFile] | None:
        """The announced version's files in the work dir, if they are there and whole."""
        digest = f"{manifest.state_digest:016x}"
        for path in (self._base_path(manifest.version), self._overlay_path(manifest.version)):
            try:
                sf = StateFile(path)
                if sf.header.get("state_digest") != digest or sf.version != manifest.version:
                    continue
                if sf.kind == "base":
                    return [sf]
                base = StateFile(self._base_path(int(sf.header["base_version"])))
                if base.kind == "base":
                    return [sf, base]
            except (IntegrityError, OSError):
                continue
        return None

    _restored_from = ""

    def _fetch_state(self, manifest: Manifest) -> StateFile:
        from feedkit.cache import FeedCache
        from feedkit.loader import Loader

        cache_dir = self.work_dir / _RESTORE_DIR
        shutil.rmtree(cache_dir, ignore_errors=True)  # a killed restore's partial files
        # No signer: the announced manifest was checked by _manifest; the history below it
        # may predate signing (see _manifest).
        loader = Loader(self.store, self.feed, FeedCache(cache_dir, self.feed))
        files = loader.load(manifest.version, None)
        path = self._base_path(manifest.version)
        if len(files) == 1 and files[0].format == 1:
            shutil.copyfile(files[0].path, path)
        else:  # one format-1 base: what the producer diffs against
            header = derived_header(files[0].header, version=manifest.version, kind="base",
                                    record_count=manifest.record_count,
                                    state_digest=manifest.state_digest)
            write_state(path, header, compact(files) if len(files) == 2 else base_records(files[0]))
        shutil.rmtree(cache_dir, ignore_errors=True)
        return StateFile(path)


class _Clock:
    """Seconds per step of a cycle: :meth:`run` times a step function, :meth:`lap` the
    time since the last mark."""

    def __init__(self) -> None:
        self.start = self.mark = time.monotonic()
        self.seconds: dict[str, float] = {}

    def run(self, step: str, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, its seconds recorded as ``step``'s."""
        began = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.mark = time.monotonic()
            self.seconds[step] = self.seconds.get(step, 0.0) + self.mark - began

    def lap(self) -> float:
        now = time.monotonic()
        seconds, self.mark = now - self.mark, now
        return seconds

    def total(self) -> float:
        return time.monotonic() - self.start


@dataclass
class _Blobs:
    """The blobs a cycle wrote (temp files) and what the manifest says of them."""

    delta: BlobInfo | None = None
    delta_path: Path | None = None
    snapshot: BlobInfo | None = None
    snapshot_path: Path | None = None


class _CycleFiles:
    """The files one cycle makes in the work dir: the new state's files (kept when the
    cycle announces, removed when it fails) and temps (the delta's state file, the blobs:
    always removed)."""

    def __init__(self, work_dir: Path, version: int) -> None:
        self.work_dir, self.version = work_dir, version
        self.states: list[Path] = []
        self.temps: list[Path] = []

    def state(self, path: Path) -> Path:
        self.states.append(path)
        return path

    def temp(self, name: str) -> Path:
        path = self.work_dir / name
        self.temps.append(path)
        return path

    def discard(self) -> None:
        """The cycle failed: remove the new state's files."""
        _remove(self.states)

    def close(self) -> None:
        _remove(self.temps)

    def settle(self, files: list[StateFile], last: list[StateFile]) -> None:
        """The cycle announced ``files``: remove this cycle's states they do not use (an
        overlay compacted away) and the last version's that they no longer need."""
        kept = {sf.path for sf in files}
        _remove([p for p in [*self.states, *(sf.path for sf in last)] if p not in kept])


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _gather(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The byte ranges ``data[starts[i]:starts[i] + lengths[i]]``, back to back."""
    ends = np.cumsum(lengths)
    return data[np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]))]


class _KeyValues:
    """The key values of rows of a streamed table (from its batches' key columns, kept
    for messages): what ``Producer._keys_at`` gives from records."""

    def __init__(self, parts: list[pa.RecordBatch], plan: ColumnPlan) -> None:
        self.parts, self.columns = parts, list(plan.spec.columns)

    def __call__(self, rows: np.ndarray) -> list[Any]:
        table = pa.Table.from_batches(self.parts).combine_chunks()
        picked = table.take(pa.array(rows, pa.int64())).to_pylist()
        return [r[self.columns[0]] if len(self.columns) == 1
                else tuple(r[c] for c in self.columns) for r in picked]


def _batches(table: TableLike, batch_rows: int) -> tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    if isinstance(table, pa.Table):
        return table.schema, table.to_batches(max_chunksize=batch_rows)
    if isinstance(table, pa.RecordBatch):
        return table.schema, [table]
    if isinstance(table, pa.RecordBatchReader):
        return table.schema, iter(table)
    try:
        reader = pa.RecordBatchReader.from_batches(None, table)  # type: ignore[arg-type]
    except (TypeError, pa.ArrowInvalid) as exc:
        raise ValidationError(f"cannot publish a {type(table).__name__}: pass a pyarrow "
                              "Table, RecordBatch or RecordBatchReader") from exc
    return reader.schema, iter(reader)

