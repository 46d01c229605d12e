"""The S3 store (AWS S3, MinIO, any S3-compatible server), with boto3 (the ``s3`` extra).

- Blobs and manifests are written create-only: ``PutObject`` (or, past
  ``multipart_threshold``, ``CompleteMultipartUpload``) with ``If-None-Match: *``.
- The announcement is replaced with ``If-Match: <ETag read>`` (created with
  ``If-None-Match: *``); a lost race is :class:`ProducerFencedError`.
- Polling reads the announcement with ``If-None-Match: <ETag>``: an unchanged feed
  costs one conditional GET answered 304, no body.
- Downloads stream to a file in 1 MiB chunks: a blob is never held whole in memory.
- Errors are translated here: 401/403 -> :class:`AccessDeniedError` naming the bucket
  and key, 404 -> :class:`BlobNotFoundError`, 412 -> exists/fenced, timeouts and other
  failures -> :class:`StoreError`. Throttling and 5xx are retried by botocore's
  ``standard`` retry mode first; 409 ``ConditionalRequestConflict`` (another conditional
  write to the same key in flight) is retried here, since botocore does not retry it.
- Credentials come only from boto3's own chain (environment, profile, instance role);
  they are never passed through feedkit, logged, or written to a manifest.
"""

from __future__ import annotations

import contextlib
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
)
from feedkit.store import BlobStore

__all__ = ["S3Store"]

MiB = 1 << 20
_CHUNK = MiB
_ACCESS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled", "AccountProblem", "Forbidden", "401", "403"}
_MISSING = {"NoSuchKey", "NotFound", "404"}
_CONFLICT_ATTEMPTS = 4
T = TypeVar("T")


_session: Any = None
_session_lock = threading.Lock()


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
        connect_timeout, read_timeout: seconds, so a stalled endpoint cannot hang a call.
        max_attempts: attempts per request under botocore's standard retry mode.
        multipart_threshold, part_size: bytes; blobs larger than the threshold are
            uploaded in parts.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 20.0, max_attempts: int = 4,
                 multipart_threshold: int = 64 * MiB, part_size: int = 16 * MiB) -> None:
        boto3, config, self._exc = _boto()
        if part_size < 5 * MiB:
            raise ConfigurationError(f"s3://{bucket}: part_size must be at least 5 MiB "
                                     "(the S3 minimum)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:  # every key is prefix/key: the prefix obeys the same rules as keys
            names.check_object_name(self.prefix, f"s3://{bucket}")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.part_size = part_size
        endpoint = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        self.endpoint_url = endpoint
        self.client = _client(
            boto3, endpoint_url=endpoint, region_name=region,
            config=config.Config(
                connect_timeout=connect_timeout, read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": max_attempts},
                # Custom endpoints (MinIO, a local server) rarely resolve bucket.host names.
                s3={"addressing_style": "path"} if endpoint else {},
                max_pool_connections=32, tcp_keepalive=True,
            ),
        )

    # -- naming and errors -------------------------------------------------------------------

    def _key(self, key: str) -> str:
        names.check_object_name(key, self.url)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

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
            return StoreError(f"store {self.url}: timed out {action} {where}: {exc}")
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

    def _call(self, action: str, key: str, fn: Callable[[], T],
              on_status: dict[int, Callable[[Exception], Exception]] | None = None) -> T:
        """Run one S3 call; translate its errors; retry 409 conflicts a few times."""
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return fn()
            except (self._exc.BotoCoreError, self._exc.ClientError) as exc:
                status = self._status(exc)
                if on_status and status in on_status:
                    raise on_status[status](exc) from exc
                if status == 409 and attempt + 1 < _CONFLICT_ATTEMPTS:
                    time.sleep(0.05 * 2 ** attempt * random.uniform(0.5, 1.5))
                    continue
                raise self._translate(exc, key, action) from exc
        raise AssertionError("unreachable")

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
            def put() -> Any:
                body.seek(0)
                return self.client.put_object(Bucket=self.bucket, Key=self._key(key),
                                              Body=body, IfNoneMatch="*")
            self._call("writing", key, put, {412: self._exists_error(key)})

    def put_new_bytes(self, key: str, data: bytes) -> None:
        self._call("writing", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"),
            {412: self._exists_error(key)})

    def _put_multipart(self, key: str, src: str | os.PathLike[str], size: int) -> None:
        full = self._key(key)
        upload = self._call("starting an upload of", key, lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=full))
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(src, "rb") as f:
                for number in range(1, (size + self.part_size - 1) // self.part_size + 1):
                    chunk = f.read(self.part_size)

                    def part(body: bytes = chunk, n: int = number) -> Any:
                        return self.client.upload_part(Bucket=self.bucket, Key=full,
                                                       UploadId=upload_id, PartNumber=n, Body=body)
                    done = self._call("uploading a part of", key, part)
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
            self._call("completing the upload of", key, lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, IfNoneMatch="*"),
                {412: self._exists_error(key)})
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full,
                                                   UploadId=upload_id)
            raise

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        def fenced(exc: Exception) -> Exception:
            return ProducerFencedError(
                f"store {self.url}: {self._where(key)} changed since it was read (expected "
                f"ETag {etag}): another writer moved it")

        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        response = self._call("replacing", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **condition),
            # 404: If-Match on an object that is gone; 412: the ETag moved.
            {412: fenced, 404: fenced})
        return str(response["ETag"])

    def delete(self, key: str) -> None:
        self._call("deleting", key, lambda: self.client.delete_object(
            Bucket=self.bucket, Key=self._key(key)))

    # -- reads -------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()  # type: ignore[no-any-return]
        return self._call("reading", key, read)

    def download(self, key: str, dest: str | os.PathLike[str]) -> int:
        def fetch() -> int:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            written = 0
            with open(dest, "wb") as f:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    f.write(chunk)
                    written += len(chunk)
            return written
        return self._call("downloading", key, fetch)

    def exists(self, key: str) -> bool:
        try:
            self._call("checking", key, lambda: self.client.head_object(
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

        def pages() -> list[str]:
            out: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                out.extend(item["Key"][cut:] for item in page.get("Contents", []))
            return out
        return sorted(self._call("listing", prefix, pages))

    def read_if_changed(self, key: str, etag: str | None = None) -> tuple[bytes, str] | None:
        condition = {"IfNoneMatch": etag} if etag is not None else {}

        def read() -> tuple[bytes, str] | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key),
                                                  **condition)
            except self._exc.ClientError as exc:
                if self._status(exc) == 304:
                    return None
                raise
            return response["Body"].read(), str(response["ETag"])
        return self._call("reading", key, read)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
