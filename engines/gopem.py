"""The ``gopem`` engine: one unencrypted PKCS#8 PEM file per key under GOPEM_DATA, mode 0600.

The directory is created 0700. Files are written with O_EXCL so a key is never overwritten.
A key is read and checked once, then kept in memory: loading an RSA key checks it
(RSA_check_key), which costs tens of milliseconds, far more than a signature.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.keys import KeyType
from engines.base import KeySpec, PrivateKey, PublicKey, key_id_of
from engines.errors import EngineMisconfigured, KeyNotFound

__all__ = ["PemFileEngine", "generate_private_key"]

_KEY_ID = re.compile(r"^[0-9a-f]{64}$")


def generate_private_key(key_type: KeyType) -> PrivateKey:
    """Generate a software key of the given type (also used for server-side keygen)."""
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=key_type.rsa_bits)


class PemFileEngine:
    """Keys as PEM files in one directory."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineMisconfigured(
                f"GOPEM_DATA: cannot create {directory}: {exc.strerror}"
            ) from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise EngineMisconfigured(f"GOPEM_DATA: {directory} is not writable")
        self._directory = directory
        self._keys: dict[str, PrivateKey] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "gopem"

    def _path(self, key_id: str) -> Path:
        if not _KEY_ID.match(key_id):
            raise KeyNotFound(f"malformed key id {key_id!r}")
        return self._directory / f"{key_id}.pem"

    def create_key(self, spec: KeySpec) -> str:
        key = generate_private_key(spec.key_type)
        key_id = key_id_of(key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(self._path(key_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return key_id

    def signer(self, key_id: str) -> PrivateKey:
        with self._lock:
            key = self._keys.get(key_id)
        if key is not None:
            return key
        try:
            pem = self._path(key_id).read_bytes()
        except FileNotFoundError as exc:
            raise KeyNotFound(f"no key {key_id} in {self._directory}") from exc
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyNotFound(f"key {key_id} is not an EC or RSA key")
        with self._lock:
            return self._keys.setdefault(key_id, loaded)

    def public_key(self, key_id: str) -> PublicKey:
        return self.signer(key_id).public_key()

    def delete_key(self, key_id: str) -> None:
        with self._lock:
            self._keys.pop(key_id, None)
        try:
            self._path(key_id).unlink()
        except FileNotFoundError as exc:
            raise KeyNotFound(f"no key {key_id} in {self._directory}") from exc

    def list_keys(self) -> list[str]:
        return sorted(
            p.stem for p in self._directory.glob("*.pem") if _KEY_ID.match(p.stem)
        )

    def close(self) -> None:
        """Forget the keys held in memory; files are opened per call."""
        with self._lock:
            self._keys.clear()
