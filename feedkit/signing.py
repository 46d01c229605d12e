"""Signed manifests: an HMAC-SHA256 over a manifest's canonical bytes, with a shared key.

A producer holding the key adds ``"signature": {"alg": "hmac-sha256", "key_id": ...,
"mac": ...}`` to every manifest it writes; ``mac`` covers the manifest's bytes as
written without the ``signature`` field (``Manifest.signed_payload``). Blobs are bound
to the manifest by their SHA-256, so a valid signature covers the whole version. A
consumer holding the key refuses a manifest that is unsigned, signed with another key,
or changed after signing.

The key comes from the caller (``signing_key=``), else from ``FEEDKIT_SIGNING_KEY`` (the
key itself) or ``FEEDKIT_SIGNING_KEY_FILE`` (a file holding it), read when a producer or
consumer is made, never at import. ``key_id`` (8 hex digits of the key's SHA-256) tells
keys apart in errors without revealing them; the key itself is never logged or written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import replace
from typing import TYPE_CHECKING

from feedkit.errors import ConfigurationError, IntegrityError

if TYPE_CHECKING:
    from feedkit.manifest import Manifest

__all__ = ["ALGORITHM", "ENV_KEY", "ENV_KEY_FILE", "MIN_KEY_BYTES", "Signer", "signer_from"]

ALGORITHM = "hmac-sha256"
ENV_KEY = "FEEDKIT_SIGNING_KEY"
ENV_KEY_FILE = "FEEDKIT_SIGNING_KEY_FILE"
MIN_KEY_BYTES = 16


class Signer:
    """Signs and verifies manifests with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigurationError(f"signing key too short: {len(key)} bytes, use at least "
                                     f"{MIN_KEY_BYTES} random bytes")
        self._key = key
        self.key_id = hashlib.sha256(key).hexdigest()[:8]

    def __repr__(self) -> str:  # never the key
        return f"<Signer key_id={self.key_id}>"

    def _mac(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def sign(self, manifest: Manifest) -> Manifest:
        """``manifest`` with its signature."""
        payload = manifest.signed_payload()
        return replace(manifest, signature={"alg": ALGORITHM, "key_id": self.key_id,
                                            "mac": self._mac(payload)})

    def verify(self, manifest: Manifest, where: str) -> None:
        """Check ``manifest``'s signature.

        Raises:
            IntegrityError: the manifest is unsigned, signed with another key or another
                algorithm, or was changed after it was signed (names ``where``).
        """
        sig = manifest.signature
        if not sig:
            raise IntegrityError(f"manifest {where} is not signed, and this consumer requires "
                                 f"signed manifests (key {self.key_id})")
        if sig.get("alg") != ALGORITHM:
            raise IntegrityError(f"manifest {where}: unsupported signature algorithm "
                                 f"{sig.get('alg')!r}")
        if sig.get("key_id") != self.key_id:
            raise IntegrityError(f"manifest {where} is signed with key {sig.get('key_id')!r}, "
                                 f"not this consumer's key {self.key_id}")
        mac = sig.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(
                mac, self._mac(manifest.signed_payload())):
            raise IntegrityError(f"manifest {where}: signature mismatch (changed after signing)")


def signer_from(key: str | bytes | os.PathLike[str] | None = None) -> Signer | None:
    """The signer for ``key`` (bytes, or a str taken as UTF-8), else from the environment.

    With ``key=None``: ``FEEDKIT_SIGNING_KEY`` (the key), else ``FEEDKIT_SIGNING_KEY_FILE``
    (a path; its bytes, without a trailing newline), else None (no signing). A
    ``pathlib.Path`` (an ``os.PathLike``) is read as a key file.

    Raises:
        ConfigurationError: the key is shorter than 16 bytes, or its file cannot be read.
    """
    if key is None:
        if os.environ.get(ENV_KEY):
            key = os.environ[ENV_KEY]
        elif os.environ.get(ENV_KEY_FILE):
            key = _read_key_file(os.environ[ENV_KEY_FILE])
        else:
            return None
    elif isinstance(key, os.PathLike):
        key = _read_key_file(os.fspath(key))
    return Signer(key.encode() if isinstance(key, str) else bytes(key))


def _read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the signing key file {path}: "
                                 f"{exc.strerror or exc}") from exc
