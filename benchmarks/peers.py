"""The key-value stores a user would pick instead of feedkit, as ``bench_core.py``'s peers.

- rocksdict (RocksDB in-process, the ``rocksdict`` package), opened read-only;
- Redis on 127.0.0.1: Debian's ``redis-server``, started here on a free port without
  persistence and stopped at the end, read with the ``redis`` client (hiredis's parser
  when it is installed).

Both hold the records exactly as the lmdb peer does: the key is the big-endian id (8
bytes), the value the msgpack-packed record as an array; a lookup unpacks it into the
same namedtuple the dict peer holds. The timing windows follow ``bench_core.py``'s: one
function per library with the lookup inlined in the loop, the garbage collector off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack
from common import window
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    SstFileWriter,
)

BE64 = struct.Struct(">q")  # the lmdb peer's keys: ascending ids are sorted keys
REDIS_ENV = "FEEDKIT_BENCH_REDIS_SERVER"  # the redis-server to start (name or path)
REDIS_PIPELINE = 10_000  # SETs per pipeline round trip while filling
REDIS_START_S = 15.0  # seconds for redis-server to answer PING


# -- rocksdict --------------------------------------------------------------------------


def rocksdict_options(data_bytes: int) -> Options:
    """Raw mode (bytes keys and values, as lmdb's), no compression, a block cache that holds
    every block: the read-mostly setup a user would pick, so that a warm lookup never
    decompresses or reads a file."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_compression_type(DBCompressionType.none())
    table = BlockBasedOptions()
    table.set_block_cache(Cache(max(64 << 20, 2 * data_bytes)))
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def build_rocksdict(path: Path, items: Iterable[tuple[bytes, bytes]], data_bytes: int) -> None:
    """(key, value) pairs in ascending key order, bulk-loaded: one SST file written with
    ``SstFileWriter`` and ingested (RocksDB's bulk-load path; the result is one fully
    compacted file, the best layout for reads)."""
    opts = rocksdict_options(data_bytes)
    sst = path.with_name(path.name + ".sst")
    writer = SstFileWriter(options=opts)
    writer.open(str(sst))
    for k, v in items:
        writer[k] = v
    writer.finish()
    db = Rdict(str(path), opts)
    try:
        db.ingest_external_file([str(sst)])
    finally:
        db.close()
    sst.unlink(missing_ok=True)


def open_rocksdict(path: Path, data_bytes: int) -> Rdict:
    return Rdict(str(path), rocksdict_options(data_bytes), access_type=AccessType.read_only())


def time_rocksdict_get(db: Rdict, rec: type, chunks: list[list[int]]) -> list[int]:
    dget, pack, unpackb, tn = db.get, BE64.pack, msgpack.unpackb, tuple.__new__

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            for k in chunk:
                tn(rec, unpackb(dget(pack(k))))
            out.append(clock() - t)
        return out
    return window(body)


def each_rocksdict(db: Rdict, rec: type, keys: list[int]) -> list[int]:
    dget, pack, unpackb, tn = db.get, BE64.pack, msgpack.unpackb, tuple.__new__

    def body() -> list[int]:
        out, clock = [0] * len(keys), time.perf_counter_ns
        for i, k in enumerate(keys):
            t = clock()
            tn(rec, unpackb(dget(pack(k))))
            out[i] = clock() - t
        return out
    return window(body)


def time_rocksdict_get_many(db: Rdict, rec: type, chunks: list[list[int]]) -> list[int]:
    """``Rdict.get`` given a list of keys: RocksDB's MultiGet, one call per chunk."""
    dget, pack, unpackb, tn = db.get, BE64.pack, msgpack.unpackb, tuple.__new__

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            [tn(rec, unpackb(v)) for v in dget([pack(k) for k in chunk])]
            out.append(clock() - t)
        return out
    return window(body)


# -- Redis ------------------------------------------------------------------------------


def redis_server_binary() -> tuple[str | None, str]:
    """(the redis-server to start, or None; why not, when None).

    ``FEEDKIT_BENCH_REDIS_SERVER`` names it (default ``redis-server`` on PATH); the redis
    client must import too.
    """
    name = os.environ.get(REDIS_ENV) or "redis-server"
    binary = shutil.which(name)
    if binary is None:
        return None, (f"no {name} found (make bench installs Debian's redis-server when "
                      "apt-get is usable; or set FEEDKIT_BENCH_REDIS_SERVER)")
    try:
        import redis  # noqa: F401
    except ImportError:
        return None, "the redis client is not installed: pip install 'feedkit[bench]'"
    return binary, ""


def hiredis_parser() -> bool:
    """Whether the redis client parses replies with hiredis (it does when hiredis imports)."""
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return False
    return bool(HIREDIS_AVAILABLE)


def server_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip() or "?")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the benchmark dies (no orphan server).

    Linux's PR_SET_PDEATHSIG; elsewhere nothing (``stop()`` still ends the server).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class RedisServer:
    """A redis-server on 127.0.0.1 and a free port, in ``folder``, no persistence.

    ``start()`` returns a connected ``redis.Redis`` client; ``stop()`` (also on exit
    from ``with``) ends the server. A port taken between choosing it and binding it is
    retried with another.
    """

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.log = folder / "redis-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Any:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.port = _free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                     "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                     "--daemonize", "no", "--protected-mode", "yes", "--databases", "1",
                     "--logfile", "", "--loglevel", "warning"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent)
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60)
            deadline = time.monotonic() + REDIS_START_S
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    client.ping()
                    return client
                except redis.ConnectionError:
                    time.sleep(0.02)
            client.close()
            self.stop()
        raise RuntimeError(f"redis-server did not start; its log ({self.log}) ends: "
                           + " | ".join(self.log.read_text(errors="replace").splitlines()[-5:]))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # redis-server shuts down on SIGTERM; with --save '' it saves nothing
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def fill_redis(client: Any, items: Iterable[tuple[bytes, bytes]]) -> int:
    """Pipelined SETs, ``REDIS_PIPELINE`` per round trip; returns the server's key count."""
    pipe = client.pipeline(transaction=False)
    pending = 0
    for k, v in items:
        pipe.set(k, v)
        pending += 1
        if pending == REDIS_PIPELINE:
            pipe.execute()
            pending = 0
    if pending:
        pipe.execute()
    return int(client.dbsize())


def time_redis_get(client: Any, rec: type, chunks: list[list[int]]) -> list[int]:
    rget, pack, unpackb, tn = client.get, BE64.pack, msgpack.unpackb, tuple.__new__

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            for k in chunk:
                tn(rec, unpackb(rget(pack(k))))
            out.append(clock() - t)
        return out
    return window(body)


def each_redis(client: Any, rec: type, keys: list[int]) -> list[int]:
    rget, pack, unpackb, tn = client.get, BE64.pack, msgpack.unpackb, tuple.__new__

    def body() -> list[int]:
        out, clock = [0] * len(keys), time.perf_counter_ns
        for i, k in enumerate(keys):
            t = clock()
            tn(rec, unpackb(rget(pack(k))))
            out[i] = clock() - t
        return out
    return window(body)


def time_redis_mget(client: Any, rec: type, chunks: list[list[int]]) -> list[int]:
    """One ``MGET`` per chunk (one round trip), each value unpacked into a record."""
    mget, pack, unpackb, tn = client.mget, BE64.pack, msgpack.unpackb, tuple.__new__

    def body() -> list[int]:
        out, clock = [], time.perf_counter_ns
        for chunk in chunks:
            t = clock()
            [tn(rec, unpackb(v)) for v in mget([pack(k) for k in chunk])]
            out.append(clock() - t)
        return out
    return window(body)

