"""The S3 store (AWS S3, MinIO, any S3-compatible server), with boto3 (the ``s3`` extra).

- Blobs and manifests are written create-only: ``PutObject`` (or, past
  ``multipart_threshold``, ``CompleteMultipartUpload``) with ``If-None-Match: *``.
- The announcement is replaced with ``If-Match: <ETag read>`` (created with
  ``If-None-Match: *``); a lost race is :class:`ProducerFencedError`.
- Polling reads the announcement with ``If-None-Match: <ETag>``: an unchanged feed
  costs one conditional GET answered 304, no body.
- Downloads stream to a file in 1 MiB chunks: a blob is never held whole in memory.
- Errors are translated here: 401/403 -> :class:`AccessDeniedError` naming the bucket
  and key, 404 -> :class:`BlobNotFoundError`, 412 -> exists/fenced, timeouts ->
  :class:`StoreTimeoutError`, other failures -> :class:`StoreError`.
- Retries run here, not in botocore: throttling, 5xx and connection errors and timeouts
  as botocore's ``standard`` mode would (``max_attempts`` retries, exponential backoff
  with jitter), and 409 ``ConditionalRequestConflict`` (another conditional write to the
  same key in flight), which botocore does not retry.
- Every operation honours the calling thread's deadline
  (:func:`feedkit.store.deadline.deadline`, which a consumer's refresh sets): no attempt
  starts after it, each attempt's connect and read timeouts are capped by the time left,
  retries and their backoff stop at it, and a streamed body checks it between chunks
  (and tightens its socket's read timeout). Running out of time is
  :class:`StoreTimeoutError` naming the bucket and key. botocore fixes timeouts per
  client, so a capped attempt uses a client built for that cap; caps are rounded down to
  a half-octave ladder, so a store keeps at most a dozen such clients, built on demand.
- Credentials come only from boto3's own chain (environment, profile, instance role);
  they are never passed through feedkit, logged, or written to a manifest.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from feedkit import names
from feedkit.errors import (
    AccessDeniedError,
    BlobExistsError,
    BlobNotFoundError,
    ConfigurationError,
    NotInstalledError,
    ProducerFencedError,
    StoreError,
    StoreTimeoutError,
)
from feedkit.forks import on_fork_in_child
from feedkit.store import BlobStore
from feedkit.store.deadline import current as current_deadline

__all__ = ["S3Store"]

MiB = 1 << 20
_CHUNK = MiB
_ACCESS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled", "AccountProblem", "Forbidden", "401", "403"}
_MISSING = {"NoSuchKey", "NotFound", "404"}
_CONFLICT_ATTEMPTS = 4
# What botocore's standard retry mode retries (botocore/retries/standard.py), besides
# connection errors and timeouts: these error codes and HTTP statuses.
_TRANSIENT_CODES = {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
_THROTTLING_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException"}
_TRANSIENT_STATUS = {500, 502, 503, 504}
_MAX_BACKOFF = 20.0  # seconds, as botocore's
_MIN_CAP = 0.125  # the shortest timeout an attempt gets under a deadline
T = TypeVar("T")


def _cap(left: float) -> float:
    """The timeout cap for an attempt with ``left`` seconds before the deadline: the
    largest step of a half-octave ladder (0.125, 0.18, 0.25, ..., 16, 22.6, ...) not past
    it, so that few distinct capped clients ever exist."""
    if left <= _MIN_CAP:
        return _MIN_CAP
    return float(2 ** (math.floor(2 * math.log2(left)) / 2))


def _tighten(body: Any, seconds: float) -> None:
    """Best effort: set the read timeout of the socket a streamed body is read from
    (botocore's StreamingBody over a urllib3 response), so that a stall in mid-body ends
    by the deadline, not after a whole read timeout. The connection may go back to its
    pool with this timeout: urllib3 (2.x) sets a pooled socket's timeout afresh before
    its next request is sent and again before its response is read."""
    connection = getattr(getattr(body, "_raw_stream", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(seconds)


_session: Any = None
_session_lock = threading.Lock()
# Clients of a parent process, kept alive in a forked child and never used there: their
# pooled connections are the parent's sockets, and finalising them (an SSL close_notify)
# would break the parent's connections.
_inherited: list[Any] = []


class _SessionReset:
    """Resets the process's boto3 session in a forked child (its lock may be held)."""

    def after_fork(self) -> None:
        global _session, _session_lock
        if _session_lock.locked() and _session is not None:
            # Forked while a parent thread was making a client: the session may be
            # half-way through it. Otherwise it is reused (building one costs 0.1 s).
            _inherited.append(_session)
            _session = None
        _session_lock = threading.Lock()


_session_reset = _SessionReset()
on_fork_in_child(_session_reset, _SessionReset.after_fork)


def _client(boto3: Any, **kwargs: Any) -> Any:
    """A client from one boto3 session per process: a session costs ~10 MiB and 0.1 s
    to build, a client from a shared one ~22 ms. Sessions are not thread-safe, so client
    creation holds a lock; the clients themselves are."""
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client("s3", **kwargs)


def _boto() -> tuple[Any, Any, Any]:
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise NotInstalledError("the S3 store needs boto3: pip install 'feedkit[s3]'") from exc
    return boto3, botocore.config, botocore.exceptions


class S3Store(BlobStore):
    """Blobs under ``s3://bucket/prefix``.

    Args:
        bucket: the bucket (it must exist).
        prefix: a key prefix, without leading or trailing ``/``; may be empty.
        endpoint_url: an S3-compatible endpoint (MinIO, a local server). None: boto3's own
            choice, which honours ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL``.
        region: the region; None: boto3's own choice.
        connect_timeout, read_timeout: seconds, so a stalled endpoint cannot hang a call;
            under a deadline (:mod:`feedkit.store.deadline`) each attempt gets at most
            the time left.
        max_attempts: retries of a request after its first attempt failed with a
            throttling, 5xx, connection or timeout error (botocore's ``max_attempts``:
            4 means up to 5 attempts); a deadline stops them earlier.
        multipart_threshold, part_size: bytes; blobs larger than the threshold are
            uploaded in parts.

    Raises:
        ConfigurationError: a part size under 5 MiB, a timeout that is not positive or a
            negative ``max_attempts``.
        NotInstalledError: boto3 is missing.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 20.0, max_attempts: int = 4,
                 multipart_threshold: int = 64 * MiB, part_size: int = 16 * MiB) -> None:
        self._boto3, self._config, self._exc = _boto()
        if part_size < 5 * MiB:
            raise ConfigurationError(f"s3://{bucket}: part_size must be at least 5 MiB "
                                     "(the S3 minimum)")
        if not (connect_timeout > 0 and read_timeout > 0):
            raise ConfigurationError(f"s3://{bucket}: connect_timeout and read_timeout must "
                                     "be > 0 seconds")
        if max_attempts < 0:
            raise ConfigurationError(f"s3://{bucket}: max_attempts must be >= 0 (retries)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:  # every key is prefix/key: the prefix obeys the same rules as keys
            names.check_object_name(self.prefix, f"s3://{bucket}")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.part_size = part_size
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.max_attempts = max_attempts
        endpoint = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        self.endpoint_url = endpoint
        self._region = region
        self._client: Any = self._new_client(self.connect_timeout, self.read_timeout)
        # (connect, read) -> a client with those timeouts, for attempts a deadline caps.
        self._capped: dict[tuple[float, float], Any] = {}
        self._capped_lock = threading.Lock()
        on_fork_in_child(self, S3Store._after_fork)

    @property
    def client(self) -> Any:
        """The boto3 client with the store's own timeouts (made anew in a forked child, on
        first use)."""
        client = self._client
        if client is None:
            with self._capped_lock:
                if self._client is None:
                    self._client = self._new_client(self.connect_timeout, self.read_timeout)
                client = self._client
        return client

    def _after_fork(self) -> None:
        """In a forked child: clients of its own. A parent's client would share the
        parent's pooled connections (one socket, two processes reading answers from it)."""
        _inherited.extend([c for c in (self._client, *self._capped.values()) if c is not None])
        self._capped, self._capped_lock, self._client = {}, threading.Lock(), None

    def _new_client(self, connect_timeout: float, read_timeout: float) -> Any:
        return _client(
            self._boto3, endpoint_url=self.endpoint_url, region_name=self._region,
            config=self._config.Config(
                connect_timeout=connect_timeout, read_timeout=read_timeout,
                # One attempt per call: _call retries, so that retries stop at a deadline
                # and each attempt's timeouts can be capped by the time left.
                retries={"mode": "standard", "total_max_attempts": 1},
                # Custom endpoints (MinIO, a local server) rarely resolve bucket.host names.
                s3={"addressing_style": "path"} if self.endpoint_url else {},
                max_pool_connections=32, tcp_keepalive=True,
            ),
        )

    # -- naming and errors -------------------------------------------------------------------

    def _key(self, key: str) -> str:
        names.check_object_name(key, self.url)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        """``s3://bucket/prefix/key`` for messages. Not checked again: a request checks its
        key (:meth:`_key`) before it is sent, and a listing's prefix ends in ``/``."""
        return f"s3://{self.bucket}/{self.prefix}/{key}" if self.prefix else \
            f"s3://{self.bucket}/{key}"

    def _doing(self, action: str, key: str) -> str:
        return f"store {self.url}: {action} {self._where(key)}"

    def _translate(self, exc: Exception, key: str, action: str) -> Exception:
        """A FeedkitError for a boto3/botocore exception (status and code kept, no secrets)."""
        where = self._where(key)
        if isinstance(exc, self._exc.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _ACCESS or status in (401, 403):
                return AccessDeniedError(f"store {self.url}: access denied to {where} while "
                                         f"{action} ({code or status}): check the credentials "
                                         "and the bucket policy")
            if code in _MISSING or status == 404:
                return BlobNotFoundError(f"store {self.url}: no object {where}")
            if code == "NoSuchBucket":
                return StoreError(f"store {self.url}: no bucket {self.bucket!r}")
            return StoreError(f"store {self.url}: {action} {where} failed: {code or status} "
                              f"{error.get('Message', '')}".rstrip())
        if isinstance(exc, self._exc.NoCredentialsError | self._exc.PartialCredentialsError):
            return AccessDeniedError(f"store {self.url}: no AWS credentials found while "
                                     f"{action} {where} (boto3's credential chain came up empty)")
        if isinstance(exc, self._exc.ConnectTimeoutError | self._exc.ReadTimeoutError):
            return StoreTimeoutError(f"store {self.url}: timed out {action} {where}: {exc}")
        if isinstance(exc, self._exc.EndpointConnectionError | self._exc.ConnectionClosedError):
            return StoreError(f"store {self.url}: cannot reach the endpoint while {action} "
                              f"{where}: {exc}")
        return StoreError(f"store {self.url}: {action} {where} failed: {type(exc).__name__}: "
                          f"{exc}")

    @staticmethod
    def _status(exc: Exception) -> int | None:
        response = getattr(exc, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        if status is None and isinstance(code, str) and code.isdigit():
            return int(code)
        return status  # type: ignore[no-any-return]

    def _backoff(self, exc: Exception, status: int | None, retries: int) -> float | None:
        """Seconds to wait before retry number ``retries`` (1-based) after ``exc``, as
        botocore's standard mode would; None when ``exc`` is not worth a retry."""
        if retries > self.max_attempts:
            return None
        code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
        if code in _THROTTLING_CODES or status == 429:
            base = 1.0
        elif (code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
              or isinstance(exc, self._exc.ConnectionError | self._exc.HTTPClientError)):
            base = 0.05
        else:
            return None
        return random.random() * min(base * 2 ** (retries - 1), _MAX_BACKOFF)

    # -- attempts under a deadline -----------------------------------------------------------

    def _client_now(self, action: str, key: str) -> Any:
        """The client for an attempt starting now: ``self.client``, or one whose timeouts
        fit in the time this thread's deadline leaves.

        Raises:
            StoreTimeoutError: the deadline has passed: no attempt starts.
        """
        active = current_deadline()
        if active is None:
            return self.client
        left = active.remaining()
        if left <= 0:
            raise active.error(self._doing(action, key))
        return self._capped_client(_cap(left))

    def _capped_client(self, cap: float) -> Any:
        """A client whose connect and read timeouts are at most ``cap`` seconds (built once
        per cap, on first use: caps come from a short ladder)."""
        timeouts = (min(self.connect_timeout, cap), min(self.read_timeout, cap))
        if timeouts == (self.connect_timeout, self.read_timeout):
            return self.client
        with self._capped_lock:
            client = self._capped.get(timeouts)
            if client is None:
                client = self._capped[timeouts] = self._new_client(*timeouts)
            return client

    def _call(self, action: str, key: str, fn: Callable[[Any], T],
              on_status: dict[int, Callable[[Exception], Exception]] | None = None) -> T:
        """Run one S3 call, ``fn(client)``; translate its errors; retry throttling, 5xx,
        connection errors and timeouts (``max_attempts`` times) and 409 conflicts (a few
        times), all within this thread's deadline."""
        retries = conflicts = 0
        while True:
            client = self._client_now(action, key)
            try:
                return fn(client)
            except (self._exc.BotoCoreError, self._exc.ClientError) as exc:
                status = self._status(exc)
                if on_status and status in on_status:
                    raise on_status[status](exc) from exc
                if status == 409:
                    conflicts += 1
                    delay = (0.05 * 2 ** (conflicts - 1) * random.uniform(0.5, 1.5)
                             if conflicts < _CONFLICT_ATTEMPTS else None)
                else:
                    retries += 1
                    delay = self._backoff(exc, status, retries)
                if delay is None:
                    raise self._translate(exc, key, action) from exc
                active = current_deadline()
                if active is not None and active.remaining() <= delay:
                    # Not enough time for the backoff, let alone another attempt.
                    raise active.error(self._doing(action, key),
                                       f"last attempt: {self._translate(exc, key, action)}"
                                       ) from exc
                time.sleep(delay)

    def _drain(self, body: Any, sink: Callable[[bytes], object], action: str, key: str) -> int:
        """Stream ``body`` into ``sink`` in chunks; return the byte count. Between chunks,
        check this thread's deadline and cap the socket's read timeout by the time left.

        Raises:
            StoreTimeoutError: the deadline passed in mid-body.
        """
        total = 0
        try:
            while True:
                active = current_deadline()
                if active is not None:
                    left = active.remaining()
                    if left <= 0:
                        raise active.error(self._doing(action, key),
                                           f"after {total} bytes")
                    _tighten(body, min(self.read_timeout, max(left, _MIN_CAP)))
                chunk = body.read(_CHUNK)
                if not chunk:
                    return total
                sink(chunk)
                total += len(chunk)
        except BaseException:
            # A body read in part leaves its connection unusable: drop it, not pool it.
            with contextlib.suppress(Exception):
                body.close()
            raise

    def _read_all(self, body: Any, action: str, key: str) -> bytes:
        parts: list[bytes] = []
        self._drain(body, parts.append, action, key)
        return b"".join(parts)

    # -- writes ------------------------------------------------------------------------------

    def _exists_error(self, key: str) -> Callable[[Exception], Exception]:
        return lambda exc: BlobExistsError(
            f"store {self.url}: {self._where(key)} exists already (create-only)")

    def put_new(self, key: str, src: str | os.PathLike[str]) -> None:
        size = os.path.getsize(src)
        if size > self.multipart_threshold:
            self._put_multipart(key, src, size)
            return
        with open(src, "rb") as body:
            def put(client: Any) -> Any:
                body.seek(0)
                return client.put_object(Bucket=self.bucket, Key=self._key(key),
                                         Body=body, IfNoneMatch="*")
            self._call("writing", key, put, {412: self._exists_error(key)})

    def put_new_bytes(self, key: str, data: bytes) -> None:
        self._call("writing", key, lambda client: client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"),
            {412: self._exists_error(key)})

    def _put_multipart(self, key: str, src: str | os.PathLike[str], size: int) -> None:
        full = self._key(key)
        upload = self._call("starting an upload of", key,
                            lambda client: client.create_multipart_upload(
                                Bucket=self.bucket, Key=full))
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(src, "rb") as f:
                for number in range(1, (size + self.part_size - 1) // self.part_size + 1):
                    chunk = f.read(self.part_size)

                    def part(client: Any, body: bytes = chunk, n: int = number) -> Any:
                        return client.upload_part(Bucket=self.bucket, Key=full,
                                                  UploadId=upload_id, PartNumber=n, Body=body)
                    done = self._call("uploading a part of", key, part)
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
            self._call("completing the upload of", key,
                       lambda client: client.complete_multipart_upload(
                           Bucket=self.bucket, Key=full, UploadId=upload_id,
                           MultipartUpload={"Parts": parts}, IfNoneMatch="*"),
                       {412: self._exists_error(key)})
        except BaseException:
            # Past a deadline, the abort still gets a short try of its own: parts left
            # behind cost storage until a lifecycle rule removes them.
            client = self.client if current_deadline() is None else self._capped_client(1.0)
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=self.bucket, Key=full,
                                              UploadId=upload_id)
            raise

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        def fenced(exc: Exception) -> Exception:
            return ProducerFencedError(
                f"store {self.url}: {self._where(key)} changed since it was read (expected "
                f"ETag {etag}): another writer moved it")

        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        response = self._call("replacing", key, lambda client: client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **condition),
            # 404: If-Match on an object that is gone; 412: the ETag moved.
            {412: fenced, 404: fenced})
        return str(response["ETag"])

    def delete(self, key: str) -> None:
        self._call("deleting", key, lambda client: client.delete_object(
            Bucket=self.bucket, Key=self._key(key)))

    # -- reads -------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        def read(client: Any) -> bytes:
            response = client.get_object(Bucket=self.bucket, Key=self._key(key))
            return self._read_all(response["Body"], "reading", key)
        return self._call("reading", key, read)

    def download(self, key: str, dest: str | os.PathLike[str]) -> int:
        def fetch(client: Any) -> int:
            response = client.get_object(Bucket=self.bucket, Key=self._key(key))
            with open(dest, "wb") as f:
                return self._drain(response["Body"], f.write, "downloading", key)
        return self._call("downloading", key, fetch)

    def exists(self, key: str) -> bool:
        try:
            self._call("checking", key, lambda client: client.head_object(
                Bucket=self.bucket, Key=self._key(key)))
        except BlobNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        folder = prefix.rpartition("/")[0]
        if folder:
            names.check_object_name(folder, self.url)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        token: dict[str, str] = {}
        def page(client: Any, more: dict[str, str]) -> Any:
            return client.list_objects_v2(Bucket=self.bucket, Prefix=full, **more)

        while True:  # page by page, each page one call (its own retries, the same deadline)
            got = self._call("listing", prefix, functools.partial(page, more=token))
            out.extend(item["Key"][cut:] for item in got.get("Contents", []))
            if not got.get("IsTruncated") or not got.get("NextContinuationToken"):
                return sorted(out)
            token = {"ContinuationToken": got["NextContinuationToken"]}

    def read_if_changed(self, key: str, etag: str | None = None) -> tuple[bytes, str] | None:
        condition = {"IfNoneMatch": etag} if etag is not None else {}

        def read(client: Any) -> tuple[bytes, str] | None:
            try:
                response = client.get_object(Bucket=self.bucket, Key=self._key(key),
                                             **condition)
            except self._exc.ClientError as exc:
                if self._status(exc) == 304:
                    return None
                raise
            return self._read_all(response["Body"], "reading", key), str(response["ETag"])
        return self._call("reading", key, read)

    def close(self) -> None:
        with self._capped_lock:
            clients = [c for c in (self._client, *self._capped.values()) if c is not None]
            self._capped.clear()
            self._client = None  # a later use makes a new one
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
