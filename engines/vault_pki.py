"""CAs that live in Vault's PKI secrets engine (not an ``Engine``: Vault issues).

Each CA is its own PKI mount at ``{VAULT_PKI_CA_PATH}{name}`` (default prefix ``pki-``)
whose key is generated with ``type=internal``, so private keys never leave Vault. An
intermediate's CSR is generated inside its own mount, signed by the parent mount's
``root/sign-intermediate`` and installed with ``intermediate/set-signed``. Each mount's
``max_lease_ttl`` is the CA's own lifetime, which caps what it can issue.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import hvac
from hvac import exceptions as hvac_errors

from contracts.keys import KeyType
from engines.errors import EngineMisconfigured, KeyExists, KeyNotFound
from engines.vault_client import VaultConnection, VaultSession

__all__ = ["VaultPkiAuthority"]

# Vault mount paths allow more, but CA names also end up in URLs and logs.
_CA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_EC_BITS = {KeyType.EC_P256: 256, KeyType.EC_P384: 384}


def _ttl(ttl: timedelta) -> str:
    return f"{int(ttl.total_seconds())}s"


def _key_params(key_type: KeyType) -> dict[str, Any]:
    if key_type.is_rsa:
        return {"key_type": "rsa", "key_bits": key_type.rsa_bits}
    return {"key_type": "ec", "key_bits": _EC_BITS[key_type]}


def _vault_serial(serial_hex: str) -> str:
    """Vault names certificates by colon-separated hex octets (``0a:1b:...``)."""
    digits = serial_hex.replace(":", "").lower()
    if not digits or not re.fullmatch(r"[0-9a-f]+", digits):
        raise ValueError(f"{serial_hex!r} is not a hex serial number")
    digits = digits.zfill(len(digits) + len(digits) % 2)
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


class VaultPkiAuthority:
    """Root and intermediate CAs as Vault PKI mounts; Vault holds every CA key."""

    def __init__(self, connection: VaultConnection, mount_prefix: str = "pki-") -> None:
        self._vault = VaultSession(connection)
        self._prefix = mount_prefix
        try:
            self._check_policy()
        except BaseException:
            self._vault.close()
            raise

    def _check_policy(self) -> None:
        """Fail at start, not at the first CA, when the login may not create mounts."""
        probe = f"sys/mounts/{self._prefix}lamassu-probe"
        answer = self._vault.call(lambda c: c.sys.get_capabilities(paths=[probe]))
        granted = set(answer["data"].get(probe) or [])
        if not granted & {"root", "create", "update"}:
            raise EngineMisconfigured(
                f"VAULT_PKI_CA_PATH: the Vault policy may not create mounts at "
                f"sys/mounts/{self._prefix}* (granted: {', '.join(sorted(granted))})"
            )

    def _mount(self, name: str) -> str:
        if not _CA_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid CA name")
        return f"{self._prefix}{name}"

    def _enable(self, name: str, ttl: timedelta) -> str:
        mount = self._mount(name)

        def enable(client: hvac.Client) -> Any:
            try:
                return client.sys.enable_secrets_engine(
                    "pki", path=mount, config={"max_lease_ttl": _ttl(ttl)}
                )
            except hvac_errors.InvalidRequest as exc:
                if any("already in use" in str(e) for e in exc.errors or []):
                    raise KeyExists(
                        f"a CA named {name!r} exists (mount {mount})"
                    ) from exc
                raise

        self._vault.call(enable)
        return mount

    def create_root(self, name: str, key_type: KeyType, ttl: timedelta) -> str:
        """Create a self-signed root CA; returns its certificate PEM."""
        mount = self._enable(name, ttl)
        response = self._vault.call(
            lambda c: c.secrets.pki.generate_root(
                "internal",
                name,
                extra_params={**_key_params(key_type), "ttl": _ttl(ttl)},
                mount_point=mount,
            )
        )
        return str(response["data"]["certificate"])

    def create_intermediate(
        self, name: str, parent_name: str, key_type: KeyType, ttl: timedelta
    ) -> str:
        """Create a CA signed by ``parent_name``; returns its certificate PEM."""
        parent = self._mount(parent_name)
        mount = self._enable(name, ttl)
        csr = self._vault.call(
            lambda c: c.secrets.pki.generate_intermediate(
                "internal", name, extra_params=_key_params(key_type), mount_point=mount
            )
        )["data"]["csr"]
        certificate = str(
            self._vault.call(
                lambda c: c.secrets.pki.sign_intermediate(
                    csr, name, extra_params={"ttl": _ttl(ttl)}, mount_point=parent
                )
            )["data"]["certificate"]
        )
        self._vault.call(
            lambda c: c.secrets.pki.set_signed_intermediate(
                certificate, mount_point=mount
            )
        )
        return certificate

    def sign_verbatim(
        self,
        ca_name: str,
        csr_pem: str,
        ttl: timedelta | None = None,
        *,
        not_after: datetime | None = None,
        key_usage: Sequence[str] | None = None,
        ext_key_usage: Sequence[str] | None = None,
    ) -> str:
        """Issue a certificate for the CSR as requested; returns its PEM.

        Vault copies the CSR's subject, SANs and extensions (all but basicConstraints,
        which it drops). ``key_usage`` / ``ext_key_usage`` (Vault's names, e.g.
        ``DigitalSignature``, ``ClientAuth``) apply only when the CSR requests none;
        None keeps Vault's defaults. The end is ``not_after`` (whole seconds) or
        ``ttl`` from Vault's clock; past the CA's own expiry it is refused.
        """
        mount = self._mount(ca_name)
        params: dict[str, Any] = {}
        if not_after is not None:
            params["not_after"] = not_after.astimezone(UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        elif ttl is not None:
            params["ttl"] = _ttl(ttl)
        if key_usage is not None:
            params["key_usage"] = list(key_usage)
        if ext_key_usage is not None:
            params["ext_key_usage"] = list(ext_key_usage)
        response = self._vault.call(
            lambda c: c.secrets.pki.sign_verbatim(
                csr_pem, extra_params=params, mount_point=mount
            )
        )
        return str(response["data"]["certificate"])

    def revoke(self, ca_name: str, serial_hex: str) -> None:
        """Revoke a certificate the CA issued; it appears on the CA's next CRL.

        Revoking twice is harmless; a serial the mount never issued is KeyNotFound.
        """
        mount = self._mount(ca_name)
        serial = _vault_serial(serial_hex)

        def revoke(client: hvac.Client) -> Any:
            try:
                return client.secrets.pki.revoke_certificate(serial, mount_point=mount)
            except hvac_errors.InvalidRequest as exc:
                if any("not found" in str(e) for e in exc.errors or []):
                    raise KeyNotFound(f"{mount} issued no serial {serial}") from exc
                raise

        self._vault.call(revoke)

    def mount_path(self, name: str) -> str:
        """The PKI mount that holds the CA ``name`` (and its key)."""
        return self._mount(name)

    def delete_ca(self, name: str) -> None:
        """Remove the CA's mount, its key and everything it issued, for good."""
        mount = self._mount(name)
        self._vault.call(lambda c: c.sys.disable_secrets_engine(mount))

    def key_types(self) -> list[KeyType]:
        """Vault PKI generates every key type the CA offers."""
        return list(KeyType)

    def close(self) -> None:
        self._vault.close()
