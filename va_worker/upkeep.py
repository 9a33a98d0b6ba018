"""The VA's background upkeep: ask the CA worker for CRLs that are due (first CRL of a
new CA, a delta after revocations, a new CRL before nextUpdate) and for responder
certificates that are missing or about to end, each through the outbox.

Every replica may run it: due rows are claimed with ``FOR UPDATE SKIP LOCKED``. The
responder keys are made here, in the VA's engine; only the CSR travels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from contracts.envelope import CloudEvent, new_message
from contracts.names import Source
from contracts.va import CRLScope, IssueResponderCertificate, SignCRL
from engines import Engine, EngineError, KeyDeleter, KeySpec, KeyType
from runtime.outbox import write_commands
from va_worker.store import SCHEMA, Store

__all__ = ["SOURCE", "Upkeep", "responder_csr"]

SOURCE = Source.VA

log = structlog.get_logger("va_worker")

# A command that brought no answer (the CA worker refused it, say for a CA kept in
# Vault PKI, whose mount signs its own CRLs and OCSP) is sent again after this; the
# commands are durable, so a CA worker that is away answers them when it is back.
_RETRY = timedelta(minutes=10)
_FAILED = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, EngineError)


def responder_csr(
    engine: Engine, ca: str
) -> tuple[str, x509.CertificateSigningRequest]:
    """A new responder key in the VA's engine and its CSR (the key never leaves)."""
    key_id = engine.create_key(KeySpec(KeyType.EC_P256))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "OCSP responder"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ca),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lamassu PKI"),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(engine.signer(key_id), hashes.SHA256())
    )
    return key_id, csr


@dataclass(frozen=True, slots=True)
class Upkeep:
    pool: asyncpg.Pool
    store: Store
    engine: Engine
    clock: Callable[[], datetime]
    interval: float
    crl_validity_hours: int
    delta_crl_validity_hours: int
    responder_validity_hours: int
    responder_renew: timedelta

    async def run(self, wake: Callable[[], None]) -> None:
        """Forever: one round, then wait ``interval``; a failed round is logged."""
        while True:
            try:
                if await self.round(self.clock()):
                    wake()
            except _FAILED as exc:
                log.warning("va_upkeep_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)

    async def round(self, now: datetime) -> int:
        """One pass; the number of commands written."""
        async with self.pool.acquire() as conn, conn.transaction():
            commands = [
                self._message(
                    SignCRL(
                        ca=due.ca,
                        scope=CRLScope.FULL if due.full else CRLScope.DELTA,
                        validity_hours=self.crl_validity_hours,
                        delta_validity_hours=self.delta_crl_validity_hours,
                    ),
                    now,
                    f"crl/{due.ca}",
                )
                for due in await self.store.claim_due_crls(conn, now, now + _RETRY)
            ]
            needing = await self.store.cas_needing_responder(
                conn, now + self.responder_renew, now - _RETRY
            )
            commands += [await self._ask_responder(conn, ca, now) for ca in needing]
            await write_commands(conn, SCHEMA, commands)
        return len(commands)

    async def _ask_responder(
        self, conn: asyncpg.Connection, ca: str, now: datetime
    ) -> CloudEvent:
        key_id, csr = await asyncio.to_thread(responder_csr, self.engine, ca)
        fingerprint = hashes.Hash(hashes.SHA256())
        fingerprint.update(csr.public_bytes(serialization.Encoding.DER))
        previous = await self.store.responder_requested(
            conn, ca, key_id, fingerprint.finalize().hex(), now
        )
        if previous is not None and isinstance(self.engine, KeyDeleter):
            # A request that never got its certificate: its key is of no use.
            with contextlib.suppress(EngineError):
                self.engine.delete_key(previous)
        log.info("ocsp_responder_requested", ca=ca, key_id=key_id)
        return self._message(
            IssueResponderCertificate(
                ca=ca,
                csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
                validity_hours=self.responder_validity_hours,
            ),
            now,
            f"ca/{ca}",
        )

    @staticmethod
    def _message(
        command: SignCRL | IssueResponderCertificate, now: datetime, subject: str
    ) -> CloudEvent:
        return new_message(source=SOURCE, data=command, now=now, subject=subject)
