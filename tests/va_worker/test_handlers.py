"""The VA's routes without RabbitMQ: the real dispatcher over runtime.testing's
in-memory bus, PostgreSQL in a transaction that is rolled back, and a hot copy
(``Served``) of the test's own.

The events it takes are the CA worker's own: a CA harness (tests/ca_worker/in_memory)
creates a CA, signs, revokes and signs a CRL once for the module, and each test hands
those envelopes to the VA as the events queue would. test_projection.py and
test_ocsp_http.py prove the same through the broker and HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from contracts.ca import (
    CACreated,
    CAStatusUpdate,
    CertificateCreated,
    CertificateStatusUpdate,
    CertificateView,
    CreateCA,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
    SignCertificate,
)
from contracts.envelope import CloudEvent
from contracts.pki import serial_hex
from contracts.va import (
    CRLCreated,
    CRLView,
    GetCRL,
    IssueResponderCertificate,
    SignCRL,
)
from engines import PemFileEngine
from runtime.db import discover_migrations, migrate
from runtime.routes import merged
from runtime.testing import Handled, Harness
from tests.ca_worker.in_memory import ca_harness, ca_schema, gopem_deps, result
from tests.pki import Clock, csr_pem, make_csr
from tests.va_worker.conftest import ocsp_request
from va_worker.handlers import COMMAND_HANDLERS, EVENT_HANDLERS, VaContext, VaDeps
from va_worker.ocsp import CertState
from va_worker.served import Served
from va_worker.store import Store
from va_worker.upkeep import responder_csr

pytestmark = [pytest.mark.postgres]

DEBOUNCE = timedelta(seconds=30)


@dataclass(frozen=True)
class FromCA:
    """What the CA worker announced, in order, and the VA's pending responder key."""

    root: CloudEvent
    sub: CloudEvent
    sub_revoked: CloudEvent
    leaf: CloudEvent
    responder: CloudEvent
    leaf_revoked: CloudEvent
    crls: list[CloudEvent]  # the full CRL and its delta
    responder_key_id: str
    responder_csr_fingerprint: str


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await ca_schema(handler_db)
    await migrate(handler_db, "va", discover_migrations("va_worker"))
    return handler_db


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PemFileEngine]:
    """The VA's own engine (VA_KEYS), where responder keys are made."""
    found = PemFileEngine(tmp_path_factory.mktemp("va-keys"))
    yield found
    found.close()


def only(handled: Handled) -> CloudEvent:
    result(handled)
    (event,) = handled.events
    return event


@pytest.fixture(scope="module")
async def from_ca(
    pool: asyncpg.Pool,
    engine: PemFileEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> FromCA:
    keys = tmp_path_factory.mktemp("ca-keys")
    key_id, csr = responder_csr(engine, "root")
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    with gopem_deps(keys) as deps:
        async with ca_harness(pool, deps, keys) as ca:
            root = only(await ca.send(CreateCA(name="root")))
            sub = only(await ca.send(CreateCA(name="issuing", parent="root")))
            sub_revoked = only(await ca.send(RevokeCA(name="issuing")))
            leaf = only(
                await ca.send(
                    SignCertificate(ca="root", csr_pem=csr_pem(make_csr("dev-1")[1]))
                )
            )
            responder = only(
                await ca.send(
                    IssueResponderCertificate(ca="root", csr_pem=csr_pem(csr))
                )
            )
            serial = CertificateView.model_validate(leaf.data).serial
            leaf_revoked = only(
                await ca.send(
                    RevokeCertificate(
                        serial=serial, reason=RevocationReason.KEY_COMPROMISE
                    )
                )
            )
            signed = await ca.send(SignCRL(ca="root"))
            result(signed)
    return FromCA(
        root=root,
        sub=sub,
        sub_revoked=sub_revoked,
        leaf=leaf,
        responder=responder,
        leaf_revoked=leaf_revoked,
        crls=signed.events,
        responder_key_id=key_id,
        responder_csr_fingerprint=hashlib.sha256(csr_der).hexdigest(),
    )


@dataclass
class VA:
    harness: Harness
    served: Served
    clock: Clock

    async def take(self, event: CloudEvent) -> Handled:
        """An event as the events queue delivers it (its own id and type)."""
        handled = await self.harness.deliver(
            event.model_dump_json().encode(), type_=event.type, message_id=event.id
        )
        assert [] == handled.events + handled.commands  # a projection sends nothing
        return handled

    async def take_all(self, *events: CloudEvent) -> None:
        for event in events:
            handled = await self.take(event)
            assert (True, "ack") == (handled.ok, handled.verdict), handled.reply

    async def row(self, query: str, *args: object) -> asyncpg.Record:
        found = await self.harness.conn.fetchrow(query, *args)
        assert found is not None
        return found


@pytest.fixture
async def va(pool: asyncpg.Pool, engine: PemFileEngine) -> AsyncIterator[VA]:
    store = Store()
    on: list[asyncpg.Connection] = []  # the harness's connection, once open

    async def lookup(ca: str, serial: int) -> CertState | None:
        return await store.certificate(on[0], ca, serial_hex(serial))

    served = Served(validity=timedelta(hours=1), lookup=lookup)
    deps = VaDeps(store=store, served=served, engine=engine, crl_debounce=DEBOUNCE)

    clock = Clock()
    table = merged(EVENT_HANDLERS, COMMAND_HANDLERS)
    async with Harness.open(
        pool, schema="va", routes=table, context=VaContext.factory(deps), clock=clock
    ) as harness:
        on.append(harness.conn)
        yield VA(harness, served, clock)


def certificate_of(event: CloudEvent) -> x509.Certificate:
    """The certificate a ca.create or certificate.create event carries."""
    pem = str(event.data["certificate_pem"])
    return x509.load_pem_x509_certificate(pem.encode())


async def test_a_new_ca_is_served_and_its_first_crl_is_due(
    va: VA, from_ca: FromCA
) -> None:
    assert CACreated.TYPE == from_ca.root.type
    handled = await va.take(from_ca.root)
    assert (True, "ack") == (handled.ok, handled.verdict)
    row = await va.row("SELECT status, full_crl_due FROM va.cas WHERE name = 'root'")
    assert "ACTIVE" == row["status"]
    assert row["full_crl_due"] <= va.clock()
    assert va.served.ca_certificate("root") is not None
    assert None is va.served.responder("root")


async def test_certificate_events_project_statuses_that_only_move_forward(
    va: VA, from_ca: FromCA
) -> None:
    await va.take_all(from_ca.root, from_ca.leaf)
    serial = CertificateView.model_validate(from_ca.leaf.data).serial
    query = "SELECT status FROM va.certificates WHERE serial = $1"
    assert "ACTIVE" == (await va.row(query, serial))["status"]

    assert CertificateStatusUpdate.TYPE == from_ca.leaf_revoked.type
    await va.take_all(from_ca.leaf_revoked)
    assert "REVOKED" == (await va.row(query, serial))["status"]
    # The revocation goes on the next delta CRL, due within the debounce.
    due = await va.row(
        "SELECT delta_crl_due, last_revocation_at FROM va.cas WHERE name = 'root'"
    )
    revoked_at = CertificateStatusUpdate.model_validate(
        from_ca.leaf_revoked.data
    ).updated.revoked_at
    assert revoked_at == due["last_revocation_at"]
    assert due["delta_crl_due"] <= va.clock() + DEBOUNCE

    # The creation again, as a new message (another id): still revoked.
    late = from_ca.leaf.model_copy(update={"id": "late-create"})
    await va.take_all(late)
    assert "REVOKED" == (await va.row(query, serial))["status"]


async def test_a_revoked_sub_ca_hastens_its_parent_s_delta(
    va: VA, from_ca: FromCA
) -> None:
    await va.take_all(from_ca.root, from_ca.sub)
    assert CAStatusUpdate.TYPE == from_ca.sub_revoked.type
    await va.take_all(from_ca.sub_revoked)
    status = await va.row("SELECT status FROM va.cas WHERE name = 'issuing'")
    assert "REVOKED" == status["status"]
    parent = await va.row("SELECT last_revocation_at FROM va.cas WHERE name = 'root'")
    revoked = CAStatusUpdate.model_validate(from_ca.sub_revoked.data).updated
    assert revoked.revoked_at == parent["last_revocation_at"]


async def test_the_responder_certificate_asked_for_is_installed_and_answers(
    va: VA, from_ca: FromCA
) -> None:
    """certificate.create of the responder certificate that answers the pending
    request installs it; answers are signed at once and follow the statuses."""
    await va.take_all(from_ca.root)
    await Store().responder_requested(
        va.harness.conn,
        "root",
        from_ca.responder_key_id,
        from_ca.responder_csr_fingerprint,
        va.clock(),
    )
    await va.take_all(from_ca.responder)
    responder = va.served.responder("root")
    assert responder is not None
    assert certificate_of(from_ca.responder) == responder.certificate
    row = await va.row("SELECT key_id FROM va.responders WHERE ca = 'root'")
    assert from_ca.responder_key_id == row["key_id"]

    issuer = certificate_of(from_ca.root)
    request = ocsp_request(certificate_of(from_ca.leaf), issuer)
    await va.take_all(from_ca.leaf)
    good = ocsp.load_der_ocsp_response(
        (await va.served.answer(request, va.clock())).der
    )
    assert ocsp.OCSPCertStatus.GOOD == good.certificate_status
    await va.take_all(from_ca.leaf_revoked)
    revoked = ocsp.load_der_ocsp_response(
        (await va.served.answer(request, va.clock())).der
    )
    assert (ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.key_compromise) == (
        revoked.certificate_status,
        revoked.revocation_reason,
    )


async def test_a_certificate_of_no_pending_request_installs_no_responder(
    va: VA, from_ca: FromCA
) -> None:
    await va.take_all(from_ca.root, from_ca.responder)
    assert None is va.served.responder("root")


async def test_crls_are_stored_served_and_answered(va: VA, from_ca: FromCA) -> None:
    full, delta = (CRLView.model_validate(e.data) for e in from_ca.crls)
    assert [CRLCreated.TYPE] * 2 == [e.type for e in from_ca.crls]
    inbox = await va.harness.conn.fetchval("SELECT count(*) FROM va.inbox")
    missing = await va.harness.send(GetCRL(ca="root"))
    assert ("not_found", "ack") == (missing.code, missing.verdict)

    await va.take_all(from_ca.root, *from_ca.crls)
    got = CRLView.model_validate(result(await va.harness.send(GetCRL(ca="root"))))
    # Two entries: the revoked leaf and the revoked sub CA (RFC 5280 §5.1.2.6).
    assert (full.number, full.crl_der_b64, 2) == (
        got.number,
        got.crl_der_b64,
        got.entries,
    )
    got_delta = CRLView.model_validate(
        result(await va.harness.send(GetCRL(ca="root", delta=True)))
    )
    assert (delta.number, full.number) == (got_delta.number, got_delta.delta_base)
    # GetCRL is a READ route: two answers, no inbox row of its own.
    assert inbox + 3 == await va.harness.conn.fetchval("SELECT count(*) FROM va.inbox")
    # The next CRLs are planned for when a quarter of their validity is left.
    row = await va.row("SELECT full_crl_due FROM va.cas WHERE name = 'root'")
    assert (
        full.next_update - (full.next_update - full.this_update) / 4
        == (row["full_crl_due"])
    )


async def test_an_older_crl_does_not_replace_a_newer_one(
    va: VA, from_ca: FromCA
) -> None:
    full = from_ca.crls[0]
    older = CRLView.model_validate(full.data).model_copy(update={"number": "0"})
    await va.take_all(from_ca.root, full)
    await va.harness.send(CRLCreated.of(older))
    served = va.served.crl("root", delta=False)
    assert served is not None
    assert CRLView.model_validate(full.data).number == str(served.number)
    stored = await va.row("SELECT number FROM va.crls WHERE ca = 'root'")
    assert CRLView.model_validate(full.data).number == str(stored["number"])


async def test_a_crl_that_is_not_der_is_refused_invalid(
    va: VA, from_ca: FromCA
) -> None:
    await va.take_all(from_ca.root)
    view = CRLView.model_validate(from_ca.crls[0].data)
    handled = await va.harness.send(
        CRLCreated.of(view.model_copy(update={"crl_der_b64": "bm90IGEgQ1JM"}))
    )
    assert ("invalid", "ack") == (handled.code, handled.verdict)
    assert None is va.served.crl("root", delta=False)
    assert 0 == await va.harness.conn.fetchval("SELECT count(*) FROM va.crls")


async def test_a_ca_event_without_a_certificate_is_refused_invalid(
    va: VA, from_ca: FromCA
) -> None:
    view = CACreated.model_validate(from_ca.root.data)
    handled = await va.harness.send(view.model_copy(update={"certificate_pem": "x"}))
    assert ("invalid", "ack") == (handled.code, handled.verdict)
    assert 0 == await va.harness.conn.fetchval("SELECT count(*) FROM va.cas")


@pytest.mark.parametrize("body", [b"\x00garbage", b'{"id": "x"}'])
async def test_garbage_is_invalid_and_dead_lettered(va: VA, body: bytes) -> None:
    handled = await va.harness.deliver(body, type_=CertificateCreated.TYPE)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
