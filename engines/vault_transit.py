"""The ``vault-transit`` engine: non-exportable keys in Vault/OpenBao's Transit engine.

Vault signs; the private key never leaves it (unlike Lamassu's KV v2 engine, which
stores a PEM). Backend quirks:

- Transit keys cannot be renamed, and the key id (hex SHA-256 of the SPKI) exists only
  after Vault generated the key. So keys are created as ``lamassu-<uuid>`` and the id is
  derived from each key's public key, never stored twice: a lookup that misses the cache
  lists the mount and reads every key's public keys (one request per key), and later
  lookups hit the cache. Each id is pinned to its key *version*, so a rotation in Vault
  can never make an old key id sign with a new key.
- Data is hashed on the host (``engines.remote_key``) and sent with ``prehashed=true``.
  ECDSA uses ``marshaling_algorithm=asn1``, which returns the DER ECDSA-Sig-Value of
  RFC 3279 §2.2.3; RSA uses ``signature_algorithm=pkcs1v15`` (RFC 8017 §8.2), for which
  Vault adds the DigestInfo itself. Signatures come back as ``vault:v<N>:<base64>``.
- Deleting needs ``deletion_allowed`` set on the key first (Transit's guard).
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import hvac
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.keys import KeyType
from engines.base import KeySpec, PrivateKey, PublicKey, key_id_of
from engines.errors import EngineError, EngineMisconfigured, KeyNotFound
from engines.remote_key import RemoteEcPrivateKey, RemoteRsaPrivateKey
from engines.vault_client import VaultConnection, VaultSession

__all__ = ["VaultTransitEngine"]

_TRANSIT_TYPES = {
    KeyType.EC_P256: "ecdsa-p256",
    KeyType.EC_P384: "ecdsa-p384",
    KeyType.RSA_2048: "rsa-2048",
    KeyType.RSA_3072: "rsa-3072",
    KeyType.RSA_4096: "rsa-4096",
}
_HASH_NAMES = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}
_NAME_PREFIX = "lamassu-"


@dataclass(frozen=True, slots=True)
class _TransitKey:
    name: str
    version: int
    public_key: PublicKey


def _signature_bytes(signature: str) -> bytes:
    """Strip Transit's ``vault:v<N>:`` prefix and decode the base64 that follows."""
    scheme, version, encoded = [*signature.split(":", 2), "", ""][:3]
    if scheme != "vault" or not version.startswith("v"):
        raise EngineError("Vault Transit returned a signature in an unknown format")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise EngineError(
            "Vault Transit returned a signature that is not base64"
        ) from exc


class VaultTransitEngine:
    """Keys in one Transit mount; each signature is one Transit ``sign`` request."""

    def __init__(self, connection: VaultConnection, mount: str = "transit") -> None:
        self._vault = VaultSession(connection)
        self._mount = mount
        self._keys: dict[str, _TransitKey] = {}
        self._lock = threading.Lock()
        try:
            self._check_mount()
        except BaseException:
            self._vault.close()
            raise

    @property
    def name(self) -> str:
        return "vault-transit"

    def _check_mount(self) -> None:
        # sys/internal/ui/mounts answers for any path the token's policy touches, so
        # this works with a least-privilege AppRole (sys/mounts needs sudo-like rights).
        try:
            info = self._vault.call(
                lambda c: c.adapter.get(f"/v1/sys/internal/ui/mounts/{self._mount}")
            )
        except (EngineMisconfigured, KeyNotFound) as exc:
            raise EngineMisconfigured(
                f"no Transit mount {self._mount!r} at VAULT_ADDRESS, or the policy "
                "grants nothing under it"
            ) from exc
        if info["data"]["type"] != "transit":
            raise EngineMisconfigured(f"mount {self._mount!r} is not a Transit engine")

    def create_key(self, spec: KeySpec) -> str:
        name = f"{_NAME_PREFIX}{uuid.uuid4().hex}"
        self._vault.call(
            lambda c: c.secrets.transit.create_key(
                name,
                key_type=_TRANSIT_TYPES[spec.key_type],
                exportable=False,
                allow_plaintext_backup=False,
                mount_point=self._mount,
            )
        )
        with self._lock:
            (key_id,) = self._read(name)
        return key_id

    def _read(self, name: str) -> list[str]:
        """Cache the key ids of every version of one Transit key; return them."""
        response = self._vault.call(
            lambda c: c.secrets.transit.read_key(name, mount_point=self._mount)
        )
        key_ids = []
        versions: dict[str, Any] = response["data"]["keys"]
        for version, info in versions.items():
            # Symmetric keys list a timestamp per version instead of a public key.
            if not isinstance(info, dict) or not info.get("public_key"):
                continue
            public_key = serialization.load_pem_public_key(info["public_key"].encode())
            if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                continue
            key_id = key_id_of(public_key)
            self._keys[key_id] = _TransitKey(name, int(version), public_key)
            key_ids.append(key_id)
        return key_ids

    def _rescan(self) -> list[str]:
        try:
            response = self._vault.call(
                lambda c: c.secrets.transit.list_keys(mount_point=self._mount)
            )
        except KeyNotFound:
            return []  # Transit answers 404 for a mount without keys
        self._keys.clear()
        return [
            key_id for name in response["data"]["keys"] for key_id in self._read(name)
        ]

    def _lookup(self, key_id: str) -> _TransitKey:
        with self._lock:
            if key_id not in self._keys:
                self._rescan()
            found = self._keys.get(key_id)
        if found is None:
            raise KeyNotFound(f"no key {key_id} in Transit mount {self._mount!r}")
        return found

    def public_key(self, key_id: str) -> PublicKey:
        return self._lookup(key_id).public_key

    def signer(self, key_id: str) -> PrivateKey:
        key = self._lookup(key_id)
        is_rsa = isinstance(key.public_key, rsa.RSAPublicKey)

        def sign(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            def request(client: hvac.Client) -> Any:
                return client.secrets.transit.sign_data(
                    key.name,
                    hash_input=base64.b64encode(digest).decode("ascii"),
                    key_version=key.version,
                    hash_algorithm=_HASH_NAMES[algorithm.name],
                    prehashed=True,
                    signature_algorithm="pkcs1v15" if is_rsa else None,
                    marshaling_algorithm=None if is_rsa else "asn1",
                    mount_point=self._mount,
                )

            response = self._vault.call(request)
            return _signature_bytes(response["data"]["signature"])

        if isinstance(key.public_key, ec.EllipticCurvePublicKey):
            return RemoteEcPrivateKey(key.public_key, sign)
        return RemoteRsaPrivateKey(key.public_key, sign)

    def delete_key(self, key_id: str) -> None:
        name = self._lookup(key_id).name
        transit = self._mount
        self._vault.call(
            lambda c: c.secrets.transit.update_key_configuration(
                name, deletion_allowed=True, mount_point=transit
            )
        )
        self._vault.call(
            lambda c: c.secrets.transit.delete_key(name, mount_point=transit)
        )
        with self._lock:
            for stale in [k for k, v in self._keys.items() if v.name == name]:
                del self._keys[stale]

    def list_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._rescan())

    def key_types(self) -> list[KeyType]:
        """Transit generates every key type the CA offers."""
        return list(_TRANSIT_TYPES)

    def close(self) -> None:
        self._vault.close()
