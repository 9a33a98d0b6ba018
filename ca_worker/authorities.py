"""How a CA's engine creates CAs, signs leaves and records revocations: one strategy
per kind of engine, chosen per CA by the ``engine`` its row records.

- ``SignerAuthority`` wraps an ``engines.Engine`` (gopem, pkcs11, vault-transit): the
  key stays in the engine, certificates are built by ``issuance`` and signed through
  the engine's key object, so every such CA issues the same profile.
- ``VaultAuthority`` wraps ``engines.VaultPkiAuthority`` (``vault``): each CA is a
  Vault PKI mount that holds its key and builds its certificates (sign-verbatim), and
  revocations are mirrored into the mount so that Vault's CRL agrees with ours.

Vault copies a CSR's extensions (all but basicConstraints) into the certificate, so a
Vault CA refuses CSRs that ask for more than this profile grants (``verbatim_conflicts``)
and passes the profile's key usages for the CSRs that ask for none. What still differs
from a signer-engine leaf: Vault writes no basicConstraints extension, puts notBefore
30 s in the past, and chooses a 160-bit serial.

A parent and its subordinate are both Vault CAs or both signer-engine CAs: Vault signs
only CSRs of its own mounts here, and its keys cannot sign our certificates. Methods are
synchronous, like the engines; handlers call them with ``asyncio.to_thread``, except
``sign_leaf`` of an authority whose key is in this process (``in_process``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca_worker.errors import BadCSR, CAExists, EngineMismatch
from ca_worker.issuance import (
    Issuer,
    build_ca_certificate,
    build_leaf_certificate,
    leaf_key_usage,
    new_serial,
    validation_extensions,
    verbatim_conflicts,
)
from ca_worker.profiles import LeafUsage
from contracts.ca import CAView
from contracts.profiles import ExtendedKeyUsage
from engines import (
    Engine,
    KeyDeleter,
    KeyExists,
    KeyNotFound,
    KeySpec,
    KeyType,
    KeyTypeReporter,
    PemFileEngine,
    VaultPkiAuthority,
    VaultPkiConfig,
    open_engine,
    open_vault_pki,
)
from engines.config import AnyEngineConfig

__all__ = [
    "Authority",
    "CASpec",
    "CreatedCA",
    "Parent",
    "SignerAuthority",
    "VaultAuthority",
    "close_authorities",
    "open_authorities",
    "open_authority",
]

log = structlog.get_logger("ca_worker")

# Vault's names for the key usages of RFC 5280 §4.2.1.3 that a leaf may carry.
_VAULT_KEY_USAGE = {
    "digital_signature": "DigitalSignature",
    "key_encipherment": "KeyEncipherment",
    "key_agreement": "KeyAgreement",
    "content_commitment": "ContentCommitment",
    "data_encipherment": "DataEncipherment",
}
# Vault's names of the extended key usages a profile may set.
_VAULT_EXT_KEY_USAGE = {
    ExtendedKeyUsage.SERVER_AUTH: "ServerAuth",
    ExtendedKeyUsage.CLIENT_AUTH: "ClientAuth",
    ExtendedKeyUsage.CODE_SIGNING: "CodeSigning",
    ExtendedKeyUsage.EMAIL_PROTECTION: "EmailProtection",
    ExtendedKeyUsage.TIME_STAMPING: "TimeStamping",
}


@dataclass(frozen=True, slots=True)
class CASpec:
    """What CA to create."""

    name: str
    key_type: KeyType
    now: datetime
    validity: timedelta
    # RFC 5280 §4.2.1.9 pathLenConstraint: CAs allowed below this one; None: any.
    path_length: int | None = None


@dataclass(frozen=True, slots=True)
class Parent:
    """The CA that signs a subordinate, with the authority that keeps its key."""

    ca: CAView
    authority: Authority


@dataclass(frozen=True, slots=True)
class CreatedCA:
    """A new CA's certificate and where its key is (``key_id`` as the row records it)."""

    key_id: str
    certificate: x509.Certificate


class Authority(Protocol):
    """What the CA handlers need from the engine that keeps a CA."""

    @property
    def engine(self) -> str:
        """The engine name, as ``ENGINE`` / ``CreateCA.engine`` spell it."""
        ...

    @property
    def in_process(self) -> bool:
        """Whether ``sign_leaf`` only computes (the key is in this process), so the
        event loop may call it; otherwise it waits on a token or a server, in a thread."""
        ...

    def create_ca(self, spec: CASpec, parent: Parent | None) -> CreatedCA: ...

    def has_key(self, ca: CAView) -> bool:
        """Whether the CA's key is in this engine (checked at start)."""
        ...

    def discard_ca(self, name: str, key_id: str) -> None:
        """Undo ``create_ca`` when its row could not be stored."""
        ...

    def sign_leaf(
        self,
        ca: CAView,
        csr: x509.CertificateSigningRequest,
        *,
        now: datetime,
        validity: timedelta,
        usage: LeafUsage | None = None,
    ) -> x509.Certificate: ...

    def revoke(self, ca: CAView, serials: Sequence[str]) -> None:
        """Tell the engine that ``ca`` revoked these serials (already in the database)."""
        ...

    def close(self) -> None: ...


def _no_va(_ca: str) -> str:
    return ""


class SignerAuthority:
    """A CA whose key is in a signer engine; certificates are built here.

    ``va_url`` gives the validation authority's URL of each issuing CA (empty: none),
    which its leaves and subordinate CAs point at (``validation_extensions``).
    """

    def __init__(self, engine: Engine, va_url: Callable[[str], str] = _no_va) -> None:
        self._engine = engine
        self._va_url = va_url
        reporter = engine if isinstance(engine, KeyTypeReporter) else None
        self._key_types = list(KeyType) if reporter is None else reporter.key_types()
        # Parsed CA certificates by (name, serial): a CA's certificate never changes,
        # and parsing it for every leaf is wasted work. One entry per CA.
        self._certificates: dict[tuple[str, str], x509.Certificate] = {}

    @property
    def engine(self) -> str:
        return self._engine.name

    @property
    def in_process(self) -> bool:
        return isinstance(self._engine, PemFileEngine)

    def va_url(self, ca: str) -> str:
        """The validation authority that serves what ``ca`` issued (empty: none)."""
        return self._va_url(ca)

    def issuer(self, ca: CAView) -> Issuer:
        """The CA's certificate and key object, for signing with it."""
        key = (ca.name, ca.serial)
        certificate = self._certificates.get(key)
        if certificate is None:
            certificate = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
            self._certificates[key] = certificate
        return Issuer(certificate, self._engine.signer(ca.key_id))

    def create_ca(self, spec: CASpec, parent: Parent | None) -> CreatedCA:
        if spec.key_type not in self._key_types:
            offered = ", ".join(k.value for k in self._key_types) or "none"
            raise EngineMismatch(
                f"engine {self.engine!r} cannot create {spec.key_type.value} keys "
                f"(it offers {offered})"
            )
        issuer = None
        if parent is not None:
            if not isinstance(parent.authority, SignerAuthority):
                raise EngineMismatch(
                    f"parent CA {parent.ca.name!r} is on engine {parent.ca.engine!r}, "
                    f"which signs only CAs on that engine, not on {self.engine!r}"
                )
            issuer = parent.authority.issuer(parent.ca)
        links = (
            []
            if parent is None
            else validation_extensions(self._va_url(parent.ca.name), parent.ca.name)
        )
        engine = self._engine
        key_id = engine.create_key(KeySpec(spec.key_type))
        certificate = build_ca_certificate(
            name=spec.name,
            public_key=engine.public_key(key_id),
            issuer=issuer,
            self_signer=engine.signer(key_id),
            serial=new_serial(),
            now=spec.now,
            validity=spec.validity,
            extensions=links,
            path_length=spec.path_length,
        )
        return CreatedCA(key_id, certificate)

    def has_key(self, ca: CAView) -> bool:
        try:
            self._engine.public_key(ca.key_id)
        except KeyNotFound:
            return False
        return True

    def discard_ca(self, name: str, key_id: str) -> None:
        del name  # the key id says it all
        if isinstance(self._engine, KeyDeleter):
            self._engine.delete_key(key_id)

    def sign_leaf(
        self,
        ca: CAView,
        csr: x509.CertificateSigningRequest,
        *,
        now: datetime,
        validity: timedelta,
        usage: LeafUsage | None = None,
    ) -> x509.Certificate:
        return build_leaf_certificate(
            csr=csr,
            issuer=self.issuer(ca),
            serial=new_serial(),
            now=now,
            validity=validity,
            extensions=validation_extensions(self._va_url(ca.name), ca.name),
            usage=usage,
        )

    def revoke(self, ca: CAView, serials: Sequence[str]) -> None:
        """Nothing to tell: for these CAs the database is the only record."""

    def close(self) -> None:
        self._engine.close()


class VaultAuthority:
    """A CA that is a Vault PKI mount; Vault holds its key and issues."""

    def __init__(self, vault: VaultPkiAuthority) -> None:
        self._vault = vault

    @property
    def engine(self) -> str:
        return "vault"

    @property
    def in_process(self) -> bool:
        return False  # Vault signs, over HTTP

    def create_ca(self, spec: CASpec, parent: Parent | None) -> CreatedCA:
        if spec.path_length is not None:
            raise EngineMismatch("engine 'vault' makes CAs without a path length")
        try:
            mount = self._vault.mount_path(spec.name)
        except ValueError as exc:
            raise EngineMismatch(f"engine 'vault': {exc}") from None
        try:
            if parent is None:
                pem = self._vault.create_root(spec.name, spec.key_type, spec.validity)
            else:
                if not isinstance(parent.authority, VaultAuthority):
                    raise EngineMismatch(
                        f"parent CA {parent.ca.name!r} is on engine "
                        f"{parent.ca.engine!r}; a CA on 'vault' needs a parent on "
                        "'vault'"
                    )
                # RFC 5280 §6.1.3: no longer than the parent (Vault refuses otherwise).
                ttl = min(spec.validity, parent.ca.not_after - spec.now)
                pem = self._vault.create_intermediate(
                    spec.name, parent.ca.name, spec.key_type, ttl
                )
        except KeyExists:
            raise CAExists(spec.name) from None
        return CreatedCA(mount, x509.load_pem_x509_certificate(pem.encode()))

    def has_key(self, ca: CAView) -> bool:
        del ca  # the mount holds the key; a missing mount answers when it is asked
        return True

    def discard_ca(self, name: str, key_id: str) -> None:
        del key_id  # the mount is named after the CA
        self._vault.delete_ca(name)

    def sign_leaf(
        self,
        ca: CAView,
        csr: x509.CertificateSigningRequest,
        *,
        now: datetime,
        validity: timedelta,
        usage: LeafUsage | None = None,
    ) -> x509.Certificate:
        conflicts = verbatim_conflicts(
            csr, None if usage is None else usage.extended_key_usage_extension()
        )
        if conflicts:
            raise BadCSR(
                f"CA {ca.name!r} is in Vault PKI, which copies CSR extensions into the "
                f"certificate; the CSR may not request {', '.join(conflicts)}"
            )
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise BadCSR("the CSR key must be EC or RSA")
        key_usage = leaf_key_usage(public_key, usage)
        ext_key_usage = (
            ["ClientAuth"]  # issuance.LEAF_EXTENDED_KEY_USAGE
            if usage is None
            else [_VAULT_EXT_KEY_USAGE[u] for u in usage.extended_key_usage]
        )
        pem = self._vault.sign_verbatim(
            ca.name,
            csr.public_bytes(serialization.Encoding.PEM).decode(),
            not_after=min(now + validity, ca.not_after),
            key_usage=[v for k, v in _VAULT_KEY_USAGE.items() if getattr(key_usage, k)],
            ext_key_usage=ext_key_usage,
        )
        return x509.load_pem_x509_certificate(pem.encode())

    def revoke(self, ca: CAView, serials: Sequence[str]) -> None:
        for serial in serials:
            try:
                self._vault.revoke(ca.name, serial)
            except KeyNotFound:
                # The database is the record; a mount that never saw it has nothing to add.
                log.warning("revocation_not_mirrored", ca=ca.name, serial=serial)

    def close(self) -> None:
        self._vault.close()


def open_authority(
    config: AnyEngineConfig, va_url: Callable[[str], str] = _no_va
) -> Authority:
    """Open the engine the config names; raises EngineMisconfigured naming the setting."""
    if isinstance(config, VaultPkiConfig):
        return VaultAuthority(open_vault_pki(config))
    return SignerAuthority(open_engine(config), va_url)


def open_authorities(
    configs: Mapping[str, AnyEngineConfig], va_url: Callable[[str], str] = _no_va
) -> dict[str, Authority]:
    """Open every configured engine, or none: a failure closes those already open."""
    opened: dict[str, Authority] = {}
    try:
        for name, config in configs.items():
            opened[name] = open_authority(config, va_url)
    except BaseException:
        close_authorities(opened.values())
        raise
    return opened


def close_authorities(authorities: Iterable[Authority]) -> None:
    for authority in authorities:
        authority.close()
