"""Fetching a version into the cache folder: snapshot and deltas, verified, then renamed.

The core's: used by the consumer, the producer's restore and the ``feedkit`` command. Nothing reaches a final
name in the cache until it was verified: the blob's size and SHA-256, the state
file's checksum and header, and, for deltas, the merged state's record count and
digest against the manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from feedkit import _native, names
from feedkit.blobs import BlobInfo, decompress_file
from feedkit.cache import FeedCache
from feedkit.errors import (
    BlobNotFoundError,
    FeedkitError,
    IntegrityError,
    StoreError,
    VersionNotFoundError,
)
from feedkit.format import (
    FORMAT_COMPACT,
    PREFIX_SIZE,
    StateFile,
    build_snapshot,
    derived_header,
    write_state,
)
from feedkit.manifest import Manifest
from feedkit.merge import apply_delta, compact
from feedkit.planner import Plan, plan
from feedkit.signing import Signer
from feedkit.store import BlobStore

__all__ = ["Loader"]

log = logging.getLogger("feedkit.loader")

_MANIFESTS_KEPT = 256  # manifests remembered per loader (they are immutable; re-reading is cheap)


class Loader:
    def __init__(self, store: BlobStore, feed: str, cache: FeedCache,
                 signer: Signer | None = None) -> None:
        self.store, self.feed, self.cache, self.signer = store, feed, cache, signer
        self._manifests: dict[int, Manifest] = {}

    def manifest(self, version: int) -> Manifest:
        """The manifest of ``version`` (immutable, so remembered once read).

        Raises:
            VersionNotFoundError: the store has no manifest for ``version``.
            IntegrityError: the manifest is unreadable, belongs to another feed/version,
                or (with a signer) is unsigned or wrongly signed.
        """
        if version in self._manifests:
            return self._manifests[version]
        key = names.manifest_key(self.feed, version)
        try:
            data = self.store.get_bytes(key)
        except BlobNotFoundError as exc:
            raise VersionNotFoundError(f"feed {self.feed!r}: no version {version} ({key})") from exc
        m = self._parse(data, key, version)
        if self.signer is not None:  # only a keyed start without the store reads the copy
            self.cache.remember_manifest(version, data)
        return m

    def _parse(self, data: bytes, key: str, version: int) -> Manifest:
        m = Manifest.from_bytes(data, key)
        if self.signer is not None:
            self.signer.verify(m, key)
        if m.feed != self.feed or m.version != version:
            raise IntegrityError(f"manifest {key} names feed {m.feed!r} version {m.version}")
        self._manifests[version] = m
        if len(self._manifests) > _MANIFESTS_KEPT:  # a long-lived consumer: forget the oldest read
            del self._manifests[next(iter(self._manifests))]
        return m

    def manifest_offline(self, version: int) -> Manifest:
        """The manifest of ``version`` for a start without the store: the cache folder's
        copy (checked as strictly as the store's, signature included), else the store's.

        Raises:
            FeedkitError: neither gives a usable manifest.
        """
        data = self.cache.manifest(version)
        if data is not None:
            try:
                return self._parse(data, f"{self.cache.dir}/.manifests/{version:020d}.json",
                                   version)
            except IntegrityError as exc:
                log.warning("feed %s: ignoring the cache folder's manifest: %s", self.feed, exc)
        return self.manifest(version)

    def mismatch(self, sf: StateFile, m: Manifest) -> dict[str, object]:
        """The header fields of ``sf`` that disagree with the manifest ``m`` of its version."""
        h = sf.header
        expected = {"feed": self.feed, "version": m.version, "record_count": m.record_count,
                    "state_digest": f"{m.state_digest:016x}"}
        return {k: h.get(k) for k, v in expected.items() if h.get(k) != v}

    def trusted_cached(self, version: int, *, offline: bool = False) -> list[StateFile] | None:
        """Cached files of ``version``; with a signer, only once each file agrees with the
        signed manifest of its own version (``offline``: from the cache folder's copy
        when the store cannot be read).

        Files built by another consumer sharing the folder (perhaps one without a key,
        which trusted an unsigned manifest) are otherwise served unchecked. A file that
        disagrees is deleted, so the version is built again from verified blobs; a file
        whose manifest cannot be had (garbage-collected) is not used.
        """
        files = self.open_cached(version)
        if files is None or self.signer is None:
            return files
        for sf in files:
            try:
                m = (self.manifest_offline if offline else self.manifest)(sf.version)
                wrong = self.mismatch(sf, m)
            except (VersionNotFoundError, IntegrityError) as exc:
                log.warning("feed %s: not serving cached %s: %s", self.feed, sf.path, exc)
                return None
            if wrong:
                log.warning("feed %s: discarding cached %s: it does not match the signed "
                            "manifest of version %s: %s", self.feed, sf.path, sf.version, wrong)
                with contextlib.suppress(OSError):
                    sf.path.unlink()
                return None
        return files

    def open_cached(self, version: int) -> list[StateFile] | None:
        paths = self.cache.find(version)
        if paths is None:
            return None
        try:
            files = [StateFile(p) for p in paths]
        except IntegrityError as exc:  # a damaged cache file: drop it and fetch again
            log.warning("feed %s: discarding damaged cache file: %s", self.feed, exc)
            for p in paths:
                with contextlib.suppress(OSError):
                    p.unlink()
            return None
        return files if files[0].version == version else None

    def load(self, version: int, current: list[StateFile] | None) -> list[StateFile]:
        """The files of ``version``: from the cache, else fetched and built.

        Raises:
            FeedkitError: the version cannot be fetched or fails verification; the
                cache then holds nothing new under a final name.
        """
        files = self.trusted_cached(version)
        if files is not None:
            return files
        with self.cache.lock():
            files = self.trusted_cached(version)  # another process may have built it meanwhile
            if files is not None:
                return files
            try:
                return self._load(version, current)
            except FeedkitError:
                # A manifest that parsed may still be the damaged one (a checksum that lies):
                # read them again next time, so a repaired store is seen.
                self._manifests.clear()
                raise

    def _load(self, version: int, current: list[StateFile] | None) -> list[StateFile]:
        """Plan and execute the fetches of ``version`` (under the cache lock)."""
        target = self.manifest(version)
        held = current[0].version if current else None
        p = plan(target, held, self.manifest)
        try:
            return self._execute(p, current)
        except (IntegrityError, BlobNotFoundError, VersionNotFoundError) as exc:
            if p.snapshot is not None and not p.deltas:
                raise
            try:
                fallback = plan(target, held, self.manifest, use_deltas_from_current=False)
            except IntegrityError:
                raise exc from None  # no other path: the delta's failure is the cause
            log.warning("feed %s: delta path to %s failed (%s); trying the nearest snapshot",
                        self.feed, version, exc)
            return self._execute(fallback, current)

    def _download(self, info: BlobInfo, name: str, *, native: bool = True) -> tuple[Path, bytes | None]:
        """Fetch, check and decompress a blob; return the state file and its body digest.

        ``native``: decompress in compiled code with the GIL released once
        (``_native.decompress_blob``, the checks and messages of
        ``blobs.decompress_file``, which ``native=False`` uses: the oracle's path)."""
        blob = self.cache.scratch_path(name + ".zst")
        try:
            self.store.download(info.key, blob)
        except BaseException as exc:
            with contextlib.suppress(OSError):  # a partial download (a full cache folder)
                blob.unlink()
            if isinstance(exc, BlobNotFoundError):
                raise IntegrityError(f"feed {self.feed!r}: blob {info.key} named by a manifest "
                                     "is missing from the store") from exc
            raise
        out = self.cache.scratch_path(name)
        try:
            digest: bytes | None
            if native:
                digest = bytes(_native.decompress_blob(
                    (blob, info.key, info.size, info.sha256, info.raw_size), out))
            else:
                digest = decompress_file(blob, out, info, hash_after=PREFIX_SIZE)
        except BaseException:
            with contextlib.suppress(OSError):
                out.unlink()
            raise
        finally:
            with contextlib.suppress(OSError):
                blob.unlink()
        return out, digest

    def _checked(self, path: Path, m: Manifest, kind: str, digest: bytes | None) -> StateFile:
        try:
            sf = StateFile(path)
            sf.verify(digest, records=True)  # untrusted bytes: every record must decode
            h = sf.header
            expected = {"feed": self.feed, "version": m.version, "kind": kind,
                        "record_count": m.record_count}
            if kind == "overlay":
                expected["base_version"] = m.parent
            else:
                expected["state_digest"] = f"{m.state_digest:016x}"
            wrong = {k: h.get(k) for k, v in expected.items() if h.get(k) != v}
            if wrong:
                raise IntegrityError(f"feed {self.feed!r}: {kind} blob of version {m.version} "
                                     f"does not match its manifest: {wrong}")
            return sf
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise

    def _execute(self, p: Plan, current: list[StateFile] | None) -> list[StateFile]:
        try:
            files = current
            if p.snapshot is not None:
                files = self._fetch_snapshot(p.snapshot)
            for m in p.deltas:
                assert files is not None
                files = self._apply(files, m)
            assert files is not None
            return files
        except OSError as exc:  # the cache folder: full, read-only, gone
            raise StoreError(f"feed {self.feed!r}: cache folder {self.cache.dir}: {exc}") from exc

    def _fetch_snapshot(self, m: Manifest) -> list[StateFile]:
        cached = self.trusted_cached(m.version)
        if cached is not None and len(cached) == 1:
            return cached
        assert m.snapshot is not None
        name = f"{m.version:020d}.base"
        if m.state_format == FORMAT_COMPACT:
            scratch, digest = self._rebuild(m, name), None
        else:
            scratch, digest = self._download(m.snapshot, name)
        self._checked(scratch, m, "base", digest)
        final = self.cache.base_path(m.version)
        os.replace(scratch, final)
        return [StateFile.from_mapping(final, _native.map_file(final))]

    def _rebuild(self, m: Manifest, name: str) -> Path:
        """Fetch a format-2 version's columnar snapshot blob and rebuild its state file
        from it under a scratch name (``format.build_snapshot``: the blob's size,
        SHA-256, header, records' bytes, count and digest checked against ``m``)."""
        assert m.snapshot is not None
        blob = self._fetch_blob(m.snapshot, name)
        out = self.cache.scratch_path(name)
        try:
            build_snapshot(blob, m.snapshot, {
                "feed": self.feed, "version": m.version, "key": m.key, "schema": m.schema,
                "index_fields": m.index_fields, "record_count": m.record_count,
                "state_digest": m.state_digest}, out)
        except IntegrityError as exc:
            raise IntegrityError(f"feed {self.feed!r}: {exc}") from None
        finally:
            _native.remove_file(blob)
        return out

    def _fetch_blob(self, info: BlobInfo, name: str) -> Path:
        """Download a blob into a scratch file of the cache folder (nothing checked yet)."""
        blob = self.cache.scratch_path(name + ".zst")
        try:
            self.store.download(info.key, blob)
        except BaseException as exc:
            _native.remove_file(blob)  # a partial download (a full cache folder)
            if isinstance(exc, BlobNotFoundError):
                raise IntegrityError(f"feed {self.feed!r}: blob {info.key} named by a manifest "
                                     "is missing from the store") from exc
            raise
        return blob

    def _apply(self, files: list[StateFile], m: Manifest) -> list[StateFile]:
        """Apply the delta of ``m`` to the state ``files``: a new overlay over their base.

        One compiled call (``native/core/src/apply.rs``) with the GIL released once makes
        every check of the Python path (:meth:`_apply_py`, kept as the tests' oracle): the
        blob's size and SHA-256, its zstd frame, the state file it holds (checksum,
        tables, every record) and its header against the manifest, the merged count and
        digest against the manifest; it writes the new overlay under a scratch name,
        verifies it there and only then gives it its final name. A refresh beside a
        thread busy with lookups waits up to the switch interval each time it gives the
        GIL up, so the number of releases, not the work, sets its cost there.
        """
        assert m.delta is not None
        if files[0].version != m.parent:
            raise IntegrityError(f"feed {self.feed!r}: delta to {m.version} starts at {m.parent}, "
                                 f"the state held is {files[0].version}")
        info = m.delta
        stem = f"{m.parent:020d}-{m.version:020d}.delta"
        blob = self._fetch_blob(info, stem)
        base = files[-1]
        overlay = files[0] if len(files) == 2 else None
        index_fields = list(base.header["index_fields"])
        metas = [overlay._index_meta(f) for f in index_fields] if overlay is not None else []
        header = derived_header(base.header, version=m.version, kind="overlay",
                                base_version=base.version, record_count=m.record_count,
                                state_digest=m.state_digest)
        final = self.cache.overlay_path(base.version, m.version)
        try:
            mapped = _native.apply_delta_blob(
                (blob, info.key, info.size, info.sha256, info.raw_size),
                ([sf.table_args() for sf in files],
                 [(overlay.body_offset + meta["table"], meta["slots"], meta["empty"],  # type: ignore[union-attr]
                   meta["values"], overlay.body_offset + meta["postings"],  # type: ignore[union-attr]
                   meta["count"]) for meta in metas],
                 int(files[0].header["record_count"]), int(files[0].header["state_digest"], 16)),
                (base.spec.slot_kind == "int", len(base.header["schema"]),
                 json.dumps(base.header["key"]), index_fields),
                (self.feed, m.version, m.parent, m.record_count, m.state_digest),
                [(k, json.dumps(v, separators=(",", ":"), sort_keys=True))
                 for k, v in header.items()],
                self.cache.scratch_path(stem + ".w"), self.cache.scratch_path(stem), final)
        except IntegrityError as exc:
            message = str(exc)  # named the feed and the blob
            if not message.startswith("feed "):
                message = f"feed {self.feed!r}: {message}"
            if info.key not in message:
                message += f" (delta blob {info.key})"
            raise IntegrityError(message) from None
        return [StateFile.from_mapping(final, mapped), base]

    def _apply_py(self, files: list[StateFile], m: Manifest) -> list[StateFile]:
        """:meth:`_apply` in Python and numpy: the oracle of its differential test."""
        assert m.delta is not None
        if files[0].version != m.parent:
            raise IntegrityError(f"feed {self.feed!r}: delta to {m.version} starts at {m.parent}, "
                                 f"the state held is {files[0].version}")
        stem = f"{m.parent:020d}-{m.version:020d}.delta"
        scratch, digest = self._columnar_delta(files, m, stem) or self._download(
            m.delta, stem, native=False)
        try:
            delta = self._checked(scratch, m, "overlay", digest)
            records = apply_delta(files, delta, m.record_count, m.state_digest)
            base = files[-1]
            header = derived_header(base.header, version=m.version, kind="overlay",
                                    base_version=base.version, record_count=m.record_count,
                                    state_digest=m.state_digest)
            final = self.cache.overlay_path(base.version, m.version)
            write_state(final, header, records)
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink()
        sf = StateFile(final)
        sf.verify()
        return [sf, base]

    def _columnar_delta(self, files: list[StateFile], m: Manifest,
                        stem: str) -> tuple[Path, bytes | None] | None:
        """The oracle's columnar delta (FORMAT.md, 11.5): the overlay file it stands
        for, written by the compiled decoder (the oracle checks the merge, not the
        columnar body, which its own fuzz and differential tests cover); ``None`` when
        the manifest's delta is a compressed state file."""
        assert m.delta is not None
        info, base = m.delta, files[-1]
        blob = self._fetch_blob(info, stem + ".c")
        out = self.cache.scratch_path(stem)
        try:
            made = _native.columnar_delta_state(
                (blob, info.key, info.size, info.sha256, info.raw_size),
                (base.spec.slot_kind == "int", len(base.header["schema"]),
                 json.dumps(base.header["key"]), list(base.header["index_fields"])),
                int(files[0].header["record_count"]),
                self.cache.scratch_path(stem + ".w"), self.cache.scratch_path(stem + ".p"))
            if made is None:
                return None
            out.write_bytes(made)
        except IntegrityError as exc:
            raise IntegrityError(f"feed {self.feed!r}: {exc}") from None
        finally:
            _native.remove_file(blob)
        return out, None

    def compact(self, files: list[StateFile]) -> list[StateFile]:
        """Write ``[overlay, base]`` as one base file of the same version."""
        overlay = files[0]
        with self.cache.lock():
            final = self.cache.base_path(overlay.version)
            if not final.exists():
                header = derived_header(overlay.header, version=overlay.version, kind="base",
                                        record_count=overlay.header["record_count"],
                                        state_digest=int(overlay.header["state_digest"], 16))
                try:
                    write_state(final, header, compact(files), format=files[-1].format)
                except OSError as exc:
                    raise StoreError(f"feed {self.feed!r}: cache folder {self.cache.dir}: {exc}") from exc
        sf = StateFile(final)
        sf.verify()
        return [sf]
