"""SQL of schema ``ca``: inline, on asyncpg, each method taking the caller's connection
so the caller owns the transaction. Rows come back as contract views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_worker.issuance import serial_hex
from contracts.ca import CAView, CertificateStatus, CertificateView, RevocationReason
from engines import KeyType

T = TypeVar("T", CAView, CertificateView)

__all__ = ["NewCA", "NewCertificate", "StatusChange", "Store"]


def _pem(der: bytes) -> str:
    return (
        x509.load_der_x509_certificate(der)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def _ca_view(row: asyncpg.Record | dict[str, Any]) -> CAView:
    return CAView(
        name=row["name"],
        parent=row["parent"],
        internal=row["internal"],
        key_type=KeyType(row["key_type"]),
        key_id=row["key_id"],
        engine=row["engine"],
        serial=row["serial"],
        subject=row["subject"],
        status=CertificateStatus(row["status"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
        certificate_pem=_pem(row["certificate_der"]),
    )


def _certificate_view(row: asyncpg.Record | dict[str, Any]) -> CertificateView:
    return CertificateView(
        serial=row["serial"],
        ca=row["ca"],
        subject=row["subject"],
        issuer=row["issuer"],
        status=CertificateStatus(row["status"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
        csr_fingerprint=row["csr_fingerprint"],
        certificate_pem=_pem(row["certificate_der"]),
        device_id=row["device_id"],
        slot=row["slot"],
        dms=row["dms"],
        replaces=row["replaces"],
    )


@dataclass(frozen=True, slots=True)
class NewCA:
    name: str
    parent: str | None
    internal: bool
    key_type: KeyType
    key_id: str
    engine: str
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class NewCertificate:
    ca: str
    csr_fingerprint: str
    certificate: x509.Certificate
    device_id: str | None = None
    slot: str | None = None
    dms: str | None = None
    replaces: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange(Generic[T]):
    previous: T
    updated: T


_CA_COLUMNS = """name, parent, internal, key_type, key_id, engine, serial, subject, status,
    not_before, not_after, revoked_at, revocation_reason, certificate_der"""
_CERT_COLUMNS = """serial, ca, subject, issuer, status, not_before, not_after, revoked_at,
    revocation_reason, csr_fingerprint, certificate_der, device_id, slot, dms, replaces"""


class Store:
    """Every query of the CA worker, named for its intent."""

    async def get_ca(
        self, conn: asyncpg.Connection, name: str, *, lock: bool = False
    ) -> CAView | None:
        row = await conn.fetchrow(
            f"SELECT {_CA_COLUMNS} FROM ca.cas WHERE name = $1"
            + (" FOR UPDATE" if lock else ""),
            name,
        )
        return None if row is None else _ca_view(row)

    async def list_cas(self, conn: asyncpg.Connection) -> list[CAView]:
        rows = await conn.fetch(
            f"SELECT {_CA_COLUMNS} FROM ca.cas ORDER BY created_at, name"
        )
        return [_ca_view(r) for r in rows]

    async def insert_ca(self, conn: asyncpg.Connection, new: NewCA) -> CAView:
        cert = new.certificate
        row = await conn.fetchrow(
            f"""INSERT INTO ca.cas (name, parent, internal, key_type, key_id, engine, serial,
                    subject, status, not_before, not_after, certificate_der)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ACTIVE', $9, $10, $11)
                RETURNING {_CA_COLUMNS}""",
            new.name,
            new.parent,
            new.internal,
            new.key_type.value,
            new.key_id,
            new.engine,
            serial_hex(cert.serial_number),
            cert.subject.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            cert.public_bytes(serialization.Encoding.DER),
        )
        assert row is not None  # noqa: S101 - INSERT ... RETURNING always yields a row
        return _ca_view(row)

    async def insert_certificate(
        self, conn: asyncpg.Connection, new: NewCertificate
    ) -> CertificateView:
        cert = new.certificate
        row = await conn.fetchrow(
            f"""INSERT INTO ca.certificates (serial, ca, subject, issuer, status, not_before,
                    not_after, csr_fingerprint, certificate_der, device_id, slot, dms,
                    replaces, request_id)
                VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $6, $7, $8, $9, $10, $11, $12, $13)
                RETURNING {_CERT_COLUMNS}""",
            serial_hex(cert.serial_number),
            new.ca,
            cert.subject.rfc4514_string(),
            cert.issuer.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            new.csr_fingerprint,
            cert.public_bytes(serialization.Encoding.DER),
            new.device_id,
            new.slot,
            new.dms,
            new.replaces,
            new.request_id,
        )
        assert row is not None  # noqa: S101
        return _certificate_view(row)

    async def get_certificate(
        self, conn: asyncpg.Connection, serial: str
    ) -> CertificateView | None:
        row = await conn.fetchrow(
            f"SELECT {_CERT_COLUMNS} FROM ca.certificates WHERE serial = $1",
            serial,
        )
        return None if row is None else _certificate_view(row)

    async def get_certificate_by_request(
        self, conn: asyncpg.Connection, request_id: str
    ) -> CertificateView | None:
        row = await conn.fetchrow(
            f"SELECT {_CERT_COLUMNS} FROM ca.certificates WHERE request_id = $1",
            request_id,
        )
        return None if row is None else _certificate_view(row)

    async def list_certificates(
        self,
        conn: asyncpg.Connection,
        *,
        ca: str | None,
        status: CertificateStatus | None,
        limit: int,
        after: str | None,
    ) -> list[CertificateView]:
        rows = await conn.fetch(
            f"""SELECT {_CERT_COLUMNS} FROM ca.certificates
                WHERE ($1::text IS NULL OR ca = $1)
                  AND ($2::text IS NULL OR status = $2)
                  AND ($3::text IS NULL OR serial > $3)
                ORDER BY serial LIMIT $4""",
            ca,
            None if status is None else status.value,
            after,
            limit,
        )
        return [_certificate_view(r) for r in rows]

    async def revoke_certificates(
        self,
        conn: asyncpg.Connection,
        *,
        serials: list[str] | None = None,
        cas: list[str] | None = None,
        reason: RevocationReason,
        now: datetime,
    ) -> list[StatusChange[CertificateView]]:
        """Revoke the given serials, or everything the given CAs issued, that is not revoked yet."""
        rows = await conn.fetch(
            f"""WITH target AS (
                    SELECT serial, status AS old_status FROM ca.certificates
                    WHERE status <> 'REVOKED'
                      AND (serial = ANY($1::text[]) OR ca = ANY($2::text[]))
                    FOR UPDATE)
                UPDATE ca.certificates c
                SET status = 'REVOKED', revoked_at = $3, revocation_reason = $4
                FROM target WHERE c.serial = target.serial
                RETURNING target.old_status, {", ".join("c." + col.strip() for col in _CERT_COLUMNS.split(","))}""",
            serials or [],
            cas or [],
            now,
            reason.value,
        )
        changes = []
        for row in rows:
            updated = _certificate_view(row)
            previous = updated.model_copy(
                update={
                    "status": CertificateStatus(row["old_status"]),
                    "revoked_at": None,
                    "revocation_reason": None,
                }
            )
            changes.append(StatusChange(previous, updated))
        return changes

    async def revoke_ca_tree(
        self,
        conn: asyncpg.Connection,
        name: str,
        reason: RevocationReason,
        now: datetime,
    ) -> list[StatusChange[CAView]]:
        """Revoke a CA and every CA below it (RFC 5280 §6.1: their paths break too)."""
        rows = await conn.fetch(
            f"""WITH RECURSIVE tree AS (
                    SELECT name FROM ca.cas WHERE name = $1
                    UNION SELECT c.name FROM ca.cas c JOIN tree ON c.parent = tree.name),
                target AS (
                    SELECT cas.name, cas.status AS old_status FROM ca.cas
                    JOIN tree USING (name) WHERE cas.status <> 'REVOKED' FOR UPDATE OF cas)
                UPDATE ca.cas c SET status = 'REVOKED', revoked_at = $2, revocation_reason = $3
                FROM target WHERE c.name = target.name
                RETURNING target.old_status, {", ".join("c." + col.strip() for col in _CA_COLUMNS.split(","))}""",
            name,
            now,
            reason.value,
        )
        changes = []
        for row in rows:
            updated = _ca_view(row)
            previous = updated.model_copy(
                update={
                    "status": CertificateStatus(row["old_status"]),
                    "revoked_at": None,
                    "revocation_reason": None,
                }
            )
            changes.append(StatusChange(previous, updated))
        return changes
