"""Producer.publish: one cycle turning a whole table state into a new feed version.

The cycle is a numbered pipeline; a failed step announces nothing:

1. restore   the last published state (work dir, else fetched from the store)
2. encode    the table, batch by batch, into records spilled to a work file
3. validate  non-null, unique keys
4. diff      against the last published state; nothing changed -> no version
5. write     the new state file, the delta blob, the snapshot blob (when due)
6. publish   blobs, then the manifest (create-only)
7. announce  compare-and-swap of the announcement
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from feedkit import codec, names
from feedkit.blobs import compress_file
from feedkit.errors import (
    BlobNotFoundError,
    ClosedError,
    ConfigurationError,
    IntegrityError,
    ProducerFencedError,
    ValidationError,
)
from feedkit.format import RecordSet, StateFile, write_state
from feedkit.manifest import Announcement, Manifest
from feedkit.merge import Diff, delta_records, diff, record_digest
from feedkit.store import BlobStore

from .encode import ColumnPlan, _contains, describe_schema, encode_batch, key_spec_for

__all__ = ["Producer"]

log = logging.getLogger("feedkit.producer")

TableLike = pa.Table | pa.RecordBatchReader | pa.RecordBatch | Iterable[pa.RecordBatch]


@dataclass
class _Published:
    """What the producer last announced, and the state file that holds it."""

    manifest: Manifest
    state: StateFile
    etag: str
    since_snapshot: int  # versions published since the nearest snapshot


class Producer:
    """Publish versions of one feed from whole-table states.

    Args:
        store: where to publish.
        feed: the feed's name.
        primary_key: the key column, or a tuple of columns for a composite key.
        indexes: columns to build secondary indexes on (``Consumer.find``).
        snapshot_every: write a snapshot blob at least every N versions.
        max_delta_ratio: also write a snapshot when the delta is larger than this
            share of the state.
        work_dir: where the last published state is kept between cycles; None uses
            a temporary folder (the state is then restored from the store on the
            first publish of each process).
        compression_level: zstd level for blobs.
        batch_rows: rows encoded per batch.

    Raises:
        ConfigurationError: invalid feed name, key or settings.
    """

    def __init__(self, store: BlobStore, *, feed: str, primary_key: str | Sequence[str],
                 indexes: Sequence[str] = (), snapshot_every: int = 10,
                 max_delta_ratio: float = 0.5, work_dir: str | os.PathLike[str] | None = None,
                 compression_level: int = 3, batch_rows: int = 65536) -> None:
        self.feed = names.validate_feed(feed)
        key = (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)
        if not key or not all(isinstance(c, str) and c for c in key):
            raise ConfigurationError(f"feed {feed!r}: primary_key must name one or more columns")
        if len(set(key)) != len(key):
            raise ConfigurationError(f"feed {feed!r}: primary_key repeats a column: {key}")
        if snapshot_every < 1 or batch_rows < 1:
            raise ConfigurationError(f"feed {feed!r}: snapshot_every and batch_rows must be >= 1")
        self.store = store
        self.primary_key = key
        self.indexes = list(dict.fromkeys(indexes))
        self.snapshot_every = snapshot_every
        self.max_delta_ratio = max_delta_ratio
        self.compression_level = compression_level
        self.batch_rows = batch_rows
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(
            tempfile.mkdtemp(prefix=f"feedkit-producer-{feed}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.producer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._last: _Published | None = None
        self._restored = False
        self._closed = False

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._last = None
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @property
    def version(self) -> int | None:
        """The version this producer last published or restored."""
        return self._last.manifest.version if self._last else None

    # -- the cycle ------------------------------------------------------------------------

    def publish(self, table: TableLike, *, source: dict[str, Any] | None = None) -> int | None:
        """Publish ``table`` (the whole state) as a new version.

        Returns the new version, or None when nothing changed.

        Raises:
            ValidationError: missing, null or duplicate keys, or an unsupported column;
                nothing is written.
            ProducerFencedError: another producer moved the announcement.
            FeedkitError: any other failure; nothing is announced.
        """
        if self._closed:
            raise ClosedError(f"producer of feed {self.feed!r} is closed")
        started = time.monotonic()
        etag = self._restore()  # 1
        schema, batches = _batches(table, self.batch_rows)
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
        describe = {"feed": self.feed, "key": spec.to_json(), "schema": columns,
                    "index_fields": self.indexes, "use_list": use_list}

        spill = self.work_dir / f".spill.{uuid.uuid4().hex[:8]}"
        try:
            records = self._encode(batches, plan, spill)  # 2 + 3
            return self._cycle(records, describe, etag, source, started)
        finally:
            with contextlib.suppress(OSError):
                spill.unlink()

    def _encode(self, batches: Iterable[pa.RecordBatch], plan: ColumnPlan, spill: Path) -> RecordSet:
        keys, starts, lengths, null_rows = [], [], [], []
        hashes: dict[str, list[np.ndarray]] = {f: [] for f in plan.index_fields}
        written = rows = 0
        with open(spill, "wb") as f:
            for batch in batches:
                enc = encode_batch(batch, plan)
                f.write(memoryview(enc.data))
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
            keys=np.concatenate(keys).astype(dtype) if keys else np.empty(0, dtype),
            starts=np.concatenate(starts) if starts else np.empty(0, np.int64),
            lengths=np.concatenate(lengths) if lengths else np.empty(0, np.int64),
            sources=[data],
            index_hashes={k: np.concatenate(v) if v else np.empty(0, np.uint64)
                          for k, v in hashes.items()},
        )
        if len(nulls):
            raise ValidationError(
                f"feed {self.feed!r}: null in key column(s) {', '.join(plan.spec.columns)} at "
                f"{len(nulls)} row(s); first keys: {self._keys_at(rs, plan, nulls[:5])}")
        self._check_unique(rs, plan)
        return rs

    def _keys_at(self, rs: RecordSet, plan: ColumnPlan, rows: np.ndarray) -> list[Any]:
        positions = [plan.names.index(c) for c in plan.spec.columns]
        out = []
        for r in rows.tolist():
            a, n = int(rs.starts[r]), int(rs.lengths[r])
            rec = codec.unpack_record(rs.sources[0][a:a + n].tobytes())
            parts = tuple(rec[p] for p in positions)
            out.append(parts[0] if len(parts) == 1 else parts)
        return out

    def _check_unique(self, rs: RecordSet, plan: ColumnPlan) -> None:
        order = np.argsort(rs.keys, kind="stable")
        sorted_keys = rs.keys[order]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if not len(dup):
            return
        rows = np.unique(np.concatenate([order[dup], order[dup + 1]]))
        keys = self._keys_at(rs, plan, rows)
        distinct = list(dict.fromkeys(repr(k) for k in keys))
        if plan.spec.slot_kind == "hash" and len(distinct) == len(keys):
            raise ValidationError(
                f"feed {self.feed!r}: keys {', '.join(distinct[:5])} share a 64-bit hash; "
                "feedkit cannot publish this table (please report it)")
        raise ValidationError(
            f"feed {self.feed!r}: duplicate keys in column(s) {', '.join(plan.spec.columns)}: "
            f"{len(dup)} duplicate row(s); first keys: {', '.join(distinct[:5])}")

    def _cycle(self, rs: RecordSet, describe: dict[str, Any], etag: str | None,
               source: dict[str, Any] | None, started: float) -> int | None:
        last = self._last
        same_shape = last is not None and all(
            last.state.header[k] == describe[k] for k in ("key", "schema", "index_fields"))
        d: Diff | None = diff(last.state, rs) if last is not None and same_shape else None  # 4
        if d is not None and d.empty:
            log.info("feed %s: no change since version %s", self.feed, last.manifest.version)  # type: ignore[union-attr]
            return None

        version = max(int(time.time() * 1000), (last.manifest.version + 1) if last else 1)
        if last is not None and d is not None:
            old = last.state
            removed = np.concatenate([d.changed_old, d.deleted])
            o_starts, o_lengths = old.record_ranges(removed)
            digest = (last.manifest.state_digest - record_digest(old.heap, o_starts, o_lengths)
                      + record_digest(rs.sources[0], rs.starts[d.upserts], rs.lengths[d.upserts]))
            digest &= (1 << 64) - 1
        else:
            digest = record_digest(rs.sources[0], rs.starts, rs.lengths)
        header = dict(describe, version=version, record_count=len(rs),
                      state_digest=f"{digest:016x}")

        state_path = self.work_dir / f"{version:020d}.state"  # 5
        tmp_blobs: list[Path] = []
        try:
            write_state(state_path, dict(header, kind="base"), rs)
            delta_info = snapshot_info = None
            if last is not None and d is not None:
                delta_state = self.work_dir / f".{version:020d}.delta"
                tmp_blobs.append(delta_state)
                write_state(delta_state, dict(header, kind="overlay",
                                              base_version=last.manifest.version),
                            delta_records(last.state, rs, d, self.indexes))
                delta_blob = self.work_dir / f".{version:020d}.delta.zst"
                tmp_blobs.append(delta_blob)
                delta_info = compress_file(delta_state, delta_blob, names.delta_key(
                    self.feed, last.manifest.version, version), self.compression_level)
            since = last.since_snapshot + 1 if last else 0
            due = (last is None or d is None or since >= self.snapshot_every
                   or (delta_info is not None and delta_info.raw_size
                       > self.max_delta_ratio * os.path.getsize(state_path)))
            if due:
                snap_blob = self.work_dir / f".{version:020d}.snapshot.zst"
                tmp_blobs.append(snap_blob)
                snapshot_info = compress_file(state_path, snap_blob, names.snapshot_key(
                    self.feed, version), self.compression_level)
            manifest = Manifest(
                feed=self.feed, version=version,
                parent=last.manifest.version if last else None,
                nearest_snapshot=version if snapshot_info else last.manifest.nearest_snapshot,  # type: ignore[union-attr]
                record_count=len(rs), state_digest=digest, key=describe["key"],
                schema=describe["schema"], index_fields=self.indexes,
                snapshot=snapshot_info, delta=delta_info, source=source,
            )
            self._upload(manifest, delta_blob if delta_info else None,  # 6
                         snap_blob if snapshot_info else None)
            new_etag = self.store.replace_if_match(  # 7
                names.announcement_key(self.feed),
                Announcement(self.feed, version, producer=self.producer_id).to_bytes(), etag)
        except BaseException:
            with contextlib.suppress(OSError):
                state_path.unlink()
            raise
        finally:
            for p in tmp_blobs:
                with contextlib.suppress(OSError):
                    p.unlink()
        if last is not None:
            with contextlib.suppress(OSError):
                last.state.path.unlink()
        self._last = _Published(manifest, StateFile(state_path), new_etag,
                                0 if snapshot_info else since)
        log.info("feed %s: announced version %s (%d records, %d upserts, %d deletes, "
                 "snapshot=%s, %.3fs)", self.feed, version, len(rs),
                 len(d.upserts) if d else len(rs), len(d.deleted) if d else 0,
                 snapshot_info is not None, time.monotonic() - started)
        return version

    def _since_snapshot(self, m: Manifest) -> int:
        """Versions from the nearest snapshot to ``m`` (read once, at restore)."""
        count = 0
        while m.snapshot is None and m.parent is not None:
            count += 1
            m = self._manifest(m.parent)
        return count

    def _manifest(self, version: int) -> Manifest:
        key = names.manifest_key(self.feed, version)
        return Manifest.from_bytes(self.store.get_bytes(key), key)

    def _upload(self, manifest: Manifest, delta: Path | None, snapshot: Path | None) -> None:
        for path, info in ((delta, manifest.delta), (snapshot, manifest.snapshot)):
            if path is not None and info is not None:
                self.store.put_new(info.key, path)
        self.store.put_new_bytes(names.manifest_key(self.feed, manifest.version),
                                 manifest.to_bytes())

    # -- restore ----------------------------------------------------------------------

    def _restore(self) -> str | None:
        """Make sure the last announced state is at hand; return the announcement's ETag.

        Raises:
            ProducerFencedError: the announcement moved since this producer announced.
        """
        key = names.announcement_key(self.feed)
        try:
            data, etag = self.store.read_if_changed(key) or (b"", None)
        except BlobNotFoundError:
            if self._last is not None:
                raise ProducerFencedError(f"feed {self.feed!r}: the announcement vanished") from None
            return None
        announcement = Announcement.from_bytes(data, key)
        if self._last is not None:
            if etag != self._last.etag:
                raise ProducerFencedError(
                    f"feed {self.feed!r}: announcement moved to version {announcement.version} "
                    f"since this producer announced {self._last.manifest.version}; "
                    "another producer is publishing (start a fresh one to take over)")
            return etag
        manifest = self._manifest(announcement.version)
        state = self._local_state(manifest) or self._fetch_state(manifest)
        self._last = _Published(manifest, state, etag,  # type: ignore[arg-type]
                                self._since_snapshot(manifest))
        log.info("feed %s: restored version %s", self.feed, manifest.version)
        return etag

    def _local_state(self, manifest: Manifest) -> StateFile | None:
        path = self.work_dir / f"{manifest.version:020d}.state"
        if not path.exists():
            return None
        try:
            sf = StateFile(path)
            if sf.header.get("state_digest") == f"{manifest.state_digest:016x}":
                return sf
        except IntegrityError:
            pass
        return None

    def _fetch_state(self, manifest: Manifest) -> StateFile:
        from feedkit.consumer.cache import FeedCache
        from feedkit.consumer.loader import Loader
        from feedkit.format import derived_header
        from feedkit.merge import compact

        cache_dir = self.work_dir / "restore"
        loader = Loader(self.store, self.feed, FeedCache(cache_dir, self.feed))
        files = loader.load(manifest.version, None)
        path = self.work_dir / f"{manifest.version:020d}.state"
        if len(files) == 1:
            shutil.copyfile(files[0].path, path)
        else:
            header = derived_header(files[0].header, version=manifest.version, kind="base",
                                    record_count=manifest.record_count,
                                    state_digest=manifest.state_digest)
            write_state(path, header, compact(files))
        shutil.rmtree(cache_dir, ignore_errors=True)
        return StateFile(path)


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

