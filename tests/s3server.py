"""A real S3-API server for the tests: moto's standalone server on 127.0.0.1, started as a
process (or the server named by ``FEEDKIT_S3_ENDPOINT``: MinIO, AWS)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

BUCKET = os.environ.get("FEEDKIT_S3_BUCKET", "feedkit-tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """The endpoint, and (for our own moto process) a way to stall and resume it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        external = os.environ.get("FEEDKIT_S3_ENDPOINT")
        if external:
            self.endpoint = external
            self.kind = "external"
        else:
            # moto accepts any credentials; boto3 only needs some to sign requests.
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "feedkit-test")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "feedkit-test")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            port = _free_port()
            self.log = Path(tempfile.mkdtemp(prefix="feedkit-moto-")) / "moto.log"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
            self.endpoint = f"http://127.0.0.1:{port}"
            self.kind = "moto"
            self._wait()
        self._create_bucket()

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()  # noqa: S310
                return
            except OSError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"moto server exited: {self.log.read_text()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start in 60 s") from None
                time.sleep(0.1)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        import botocore.config

        return boto3.client("s3", endpoint_url=self.endpoint, config=botocore.config.Config(
            s3={"addressing_style": "path"}, retries={"mode": "standard"}))

    def _create_bucket(self) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=BUCKET)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass

    def url(self) -> str:
        """A fresh, empty prefix in the test bucket."""
        return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"

    @property
    def can_stall(self) -> bool:
        return self.proc is not None

    def stall(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def own_moto() -> Iterator[S3Server]:
    """A moto server process of the caller's own, even with ``FEEDKIT_S3_ENDPOINT`` set: for
    tests that SIGSTOP it (the session's server is shared)."""
    import pytest

    pytest.importorskip("moto")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FEEDKIT_S3_ENDPOINT", raising=False)
        server = S3Server()
    try:
        yield server
    finally:
        server.stop()
