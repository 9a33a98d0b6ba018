"""The CA worker's routes without RabbitMQ: the real dispatcher over runtime.testing's
in-memory bus, a gopem engine in a temporary directory, PostgreSQL in a transaction
that is rolled back. What the real-service tests (test_ca_worker.py, test_expiry.py,
test_revocation.py) prove through the broker, in milliseconds: replies and their codes,
events with their types and subjects, rows, verdicts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca_worker.context import CaDeps
from contracts.ca import (
    CACreated,
    CAView,
    CertificateCreated,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    CreateCA,
    GetCA,
    GetCertificate,
    IssueCertificate,
    ListCAs,
    RevocationReason,
    RevokeCertificate,
    RevokeDeviceCertificates,
    SignCertificate,
)
from contracts.message import Message
from contracts.ops import CAStats, CheckEngines, EngineChecks, GetCAStats
from contracts.sweeps import GetSweep, RunSweep, SweepShard, SweepView
from contracts.va import CRLCreated, CRLView, SignCRL
from runtime.testing import Handled, Harness
from tests.ca_worker.in_memory import ca_harness, ca_schema, gopem_deps, result
from tests.pki import Clock, csr_pem, make_csr, tampered_csr_pem

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await ca_schema(handler_db)
    return handler_db


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ca-handler-keys")


@pytest.fixture(scope="module")
def deps(keys: Path) -> Iterator[CaDeps]:
    with gopem_deps(keys) as found:
        yield found


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def harness(
    pool: asyncpg.Pool, deps: CaDeps, keys: Path, clock: Clock
) -> AsyncIterator[Harness]:
    async with ca_harness(pool, deps, keys, clock) as found:
        yield found


def common_name(name: x509.Name) -> str:
    (attribute,) = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def pem_of(view: CAView | CertificateView) -> x509.Certificate:
    return x509.load_pem_x509_certificate(view.certificate_pem.encode())


async def create_ca(harness: Harness, name: str, parent: str | None = None) -> CAView:
    return CAView.model_validate(
        result(await harness.send(CreateCA(name=name, parent=parent)))
    )


async def sign(harness: Harness, ca: str, cn: str, **fields: int) -> CertificateView:
    _, csr = make_csr(cn)
    request = SignCertificate(ca=ca, csr_pem=csr_pem(csr), **fields)
    return CertificateView.model_validate(result(await harness.send(request)))


def enrollment(
    device: str, *, ca: str = "root", pem: str | None = None
) -> IssueCertificate:
    """What the DMS worker sends for an authorized enrollment; the request id is
    derived from the request's meaning, so that a retry carries the same."""
    return IssueCertificate(
        ca=ca,
        csr_pem=pem or csr_pem(make_csr(device)[1]),
        request_id=hashlib.sha256(device.encode()).hexdigest(),
        device_id=device,
    )


async def count(harness: Harness, table: str) -> int:
    found = await harness.conn.fetchval(f"SELECT count(*) FROM ca.{table}")
    return int(found)


async def test_a_root_and_a_sub_ca_are_created_and_announced(
    harness: Harness,
) -> None:
    created = await harness.send(CreateCA(name="root"))
    root = CAView.model_validate(result(created))
    assert ("ack", [CACreated.TYPE], ["ca/root"]) == (
        created.verdict,
        [e.type for e in created.events],
        [e.subject for e in created.events],
    )
    assert root == CAView.model_validate(created.events[0].data)
    # The event names the request that caused it.
    assert created.events[0].correlationid is not None

    sub = await harness.send(CreateCA(name="issuing", parent="root"))
    issuing = CAView.model_validate(result(sub))
    assert ["ca/issuing"] == [e.subject for e in sub.events]
    assert ("root", "gopem") == (issuing.parent, issuing.engine)
    # RFC 5280 §6.1: the sub CA's certificate is issued by the root's key.
    certificate = pem_of(issuing)
    certificate.verify_directly_issued_by(pem_of(root))
    assert "issuing" == common_name(certificate.subject)
    assert 2 == await count(harness, "cas")


async def test_a_csr_is_signed_and_announced(harness: Harness) -> None:
    await create_ca(harness, "root")
    _, csr = make_csr("sensor-1")
    signed = await harness.send(SignCertificate(ca="root", csr_pem=csr_pem(csr)))
    view = CertificateView.model_validate(result(signed))
    assert [CertificateCreated.TYPE] == [e.type for e in signed.events]
    assert [f"certificate/{view.serial}"] == [e.subject for e in signed.events]
    certificate = pem_of(view)
    assert "sensor-1" == common_name(certificate.subject)
    assert ("root", CertificateStatus.ACTIVE) == (view.ca, view.status)
    assert csr.public_key() == certificate.public_key()
    stored = await harness.conn.fetchval(
        "SELECT status FROM ca.certificates WHERE serial = $1", view.serial
    )
    assert "ACTIVE" == stored


async def test_an_enrollment_batch_fails_only_its_refused_request(
    harness: Harness,
) -> None:
    await create_ca(harness, "root")
    first, refused, third = await harness.send_all(
        [
            enrollment("dev-1"),
            enrollment("dev-2", pem=tampered_csr_pem("dev-2")),
            enrollment("dev-3"),
        ]
    )
    assert (True, "invalid", True) == (first.ok, refused.code, third.ok)
    assert ["ack"] * 3 == [h.verdict for h in (first, refused, third)]
    issued = [CertificateView.model_validate(result(h)) for h in (first, third)]
    assert ["dev-1", "dev-3"] == [view.device_id for view in issued]
    # Each message's own event, and none for the refused one.
    assert [[f"certificate/{view.serial}"] for view in issued] == [
        [e.subject for e in h.events] for h in (first, third)
    ]
    assert [] == refused.events
    assert {CertificateCreated.TYPE} == {
        e.type for h in (first, third) for e in h.events
    }
    rows = await harness.conn.fetch(
        "SELECT device_id FROM ca.certificates ORDER BY device_id"
    )
    assert ["dev-1", "dev-3"] == [row["device_id"] for row in rows]


async def test_a_retried_enrollment_gets_the_same_certificate(
    harness: Harness,
) -> None:
    """Another message (a new id) with the same request id: the DMS retried."""
    await create_ca(harness, "root")
    request = enrollment("dev-1")
    once = await harness.send(request)
    again = await harness.send(request)
    assert result(once)["serial"] == result(again)["serial"]
    assert [CertificateCreated.TYPE] == [e.type for e in once.events]
    assert [] == again.events
    assert 1 == await count(harness, "certificates")


async def test_a_revocation_is_announced_once(harness: Harness) -> None:
    await create_ca(harness, "root")
    view = await sign(harness, "root", "sensor-1")
    revoke = RevokeCertificate(
        serial=view.serial, reason=RevocationReason.KEY_COMPROMISE
    )
    revoked = await harness.send(revoke)
    updated = CertificateView.model_validate(result(revoked))
    assert (CertificateStatus.REVOKED, RevocationReason.KEY_COMPROMISE) == (
        updated.status,
        updated.revocation_reason,
    )
    (event,) = revoked.events
    assert (CertificateStatusUpdate.TYPE, f"certificate/{view.serial}") == (
        event.type,
        event.subject,
    )
    update = CertificateStatusUpdate.model_validate(event.data)
    assert (CertificateStatus.ACTIVE, CertificateStatus.REVOKED) == (
        update.previous.status,
        update.updated.status,
    )
    again = await harness.send(revoke)
    assert ("conflict", "ack", []) == (again.code, again.verdict, again.events)


async def test_decommissioning_revokes_every_certificate_of_the_device(
    harness: Harness,
) -> None:
    await create_ca(harness, "root")
    issued = result(await harness.send(enrollment("dev-1")))
    await sign(harness, "root", "someone-else")
    handled = await harness.send(RevokeDeviceCertificates(device_id="dev-1"))
    assert [issued["serial"]] == [item["serial"] for item in result(handled)["items"]]
    assert [f"certificate/{issued['serial']}"] == [e.subject for e in handled.events]
    statuses = await harness.conn.fetch(
        "SELECT status FROM ca.certificates ORDER BY status"
    )
    assert ["ACTIVE", "REVOKED"] == [row["status"] for row in statuses]


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (SignCertificate(ca="nobody", csr_pem="x"), "invalid", "CSR"),
        (
            SignCertificate(ca="nobody", csr_pem=csr_pem(make_csr("d")[1])),
            "not_found",
            "nobody",
        ),
        (CreateCA(name="sub", parent="nobody"), "not_found", "nobody"),
        (CreateCA(name="root"), "conflict", "root"),
        (CreateCA(name="other", engine="pkcs11"), "invalid", "pkcs11"),
        (GetCA(name="nobody"), "not_found", "nobody"),
        (GetCertificate(serial="0abc"), "not_found", "0abc"),
        (RevokeCertificate(serial="0abc"), "not_found", "0abc"),
        (GetSweep(id="00000000-0000-4000-8000-000000000000"), "not_found", "sweep"),
        (SignCRL(ca="nobody"), "not_found", "nobody"),
    ],
    ids=[
        "garbage-csr",
        "unknown-ca",
        "unknown-parent",
        "ca-exists",
        "engine-not-configured",
        "get-unknown-ca",
        "get-unknown-certificate",
        "revoke-unknown-certificate",
        "unknown-sweep",
        "crl-of-unknown-ca",
    ],
)
async def test_refusals_carry_their_code_and_change_nothing(
    harness: Harness, request_: Message, code: str, reason: str
) -> None:
    await create_ca(harness, "root")
    cas = await count(harness, "cas")
    handled = await harness.send(request_)
    assert (code, "ack", []) == (handled.code, handled.verdict, handled.events)
    assert handled.reply is not None
    assert handled.reply.error is not None
    assert reason in handled.reply.error.message
    assert (cas, 0) == (
        await count(harness, "cas"),
        await count(harness, "certificates"),
    )


async def test_queries_answer_without_an_inbox_row(harness: Harness) -> None:
    """READ routes: no transaction, no inbox row, nothing sent."""
    await create_ca(harness, "root")
    view = await sign(harness, "root", "sensor-1")
    inbox = await count(harness, "inbox")
    got = await harness.send(GetCertificate(serial=view.serial))
    assert view == CertificateView.model_validate(result(got))
    listed = await harness.send(ListCAs())
    assert ["root"] == [ca["name"] for ca in result(listed)["items"]]
    stats = CAStats.model_validate(result(await harness.send(GetCAStats())))
    assert 1 == stats.cas
    assert [("root", "ACTIVE", 1)] == [
        (c.ca, c.status, c.count) for c in stats.certificates
    ]
    checks = EngineChecks.model_validate(result(await harness.send(CheckEngines())))
    assert checks.items
    assert all(c.engine == "gopem" and c.ok for c in checks.items), checks
    assert [] == got.events + listed.events
    assert inbox == await count(harness, "inbox")


def status_updates(handled: Handled) -> list[tuple[str | None, CertificateStatus]]:
    return [
        (e.subject, CertificateStatusUpdate.model_validate(e.data).updated.status)
        for e in handled.events
        if e.type == CertificateStatusUpdate.TYPE
    ]


async def sweep(harness: Harness) -> tuple[SweepView, Handled]:
    """A manual sweep of one shard, and that shard delivered as the outbox would."""
    started = await harness.send(RunSweep(shards=1))
    view = SweepView.model_validate(result(started))
    (command,) = started.commands
    assert (SweepShard.TYPE, f"sweep/{view.id}") == (command.type, command.subject)
    shard = await harness.deliver(
        command.model_dump_json().encode(), type_=command.type, message_id=command.id
    )
    assert "ack" == shard.verdict
    return view, shard


async def test_sweeps_move_certificates_as_the_clock_moves(
    harness: Harness, clock: Clock
) -> None:
    await create_ca(harness, "root")  # about_to_expire_days: 30
    view = await sign(harness, "root", "sensor-1", validity_days=100)
    subject = f"certificate/{view.serial}"

    _, shard = await sweep(harness)
    assert [] == shard.events  # nothing due yet

    clock.offset = timedelta(days=80)
    started, shard = await sweep(harness)
    assert [(subject, CertificateStatus.ABOUT_TO_EXPIRE)] == status_updates(shard)
    done = SweepView.model_validate(result(await harness.send(GetSweep(id=started.id))))
    assert (1, 1) == (done.shards_done, done.transitions)

    clock.offset = timedelta(days=101)
    _, shard = await sweep(harness)
    assert [(subject, CertificateStatus.EXPIRED)] == status_updates(shard)
    stored = await harness.conn.fetchval(
        "SELECT status FROM ca.certificates WHERE serial = $1", view.serial
    )
    assert "EXPIRED" == stored


async def test_a_shard_delivered_again_changes_nothing(
    harness: Harness, clock: Clock
) -> None:
    await create_ca(harness, "root")
    await sign(harness, "root", "sensor-1", validity_days=100)
    clock.offset = timedelta(days=80)
    started = await harness.send(RunSweep(shards=1))
    (command,) = started.commands
    body = command.model_dump_json().encode()
    first = await harness.deliver(body, type_=command.type)  # a fresh message id
    again = await harness.deliver(body, type_=command.type)
    assert (1, 0) == (len(first.events), len(again.events))
    assert "ack" == again.verdict


async def test_a_crl_is_signed_with_its_revocations(harness: Harness) -> None:
    await create_ca(harness, "root")
    view = await sign(harness, "root", "sensor-1")
    await harness.send(RevokeCertificate(serial=view.serial))
    signed = await harness.send(SignCRL(ca="root"))
    full = CRLView.model_validate(result(signed))
    # A full CRL and its first delta (RFC 5280 §5.2.4), each announced.
    assert [CRLCreated.TYPE] * 2 == [e.type for e in signed.events]
    deltas = [CRLView.model_validate(e.data) for e in signed.events]
    assert [f"crl/root/{d.number}" for d in deltas] == [
        e.subject for e in signed.events
    ]
    assert (None, full.number) == (deltas[0].delta_base, deltas[1].delta_base)
    assert 1 == full.entries


@pytest.mark.parametrize(
    "body",
    [b"\x00garbage", b"{}", CreateCA(name="root").model_dump_json().encode()],
    ids=["bytes", "no-envelope", "data-without-envelope"],
)
async def test_garbage_is_invalid_and_dead_lettered(
    harness: Harness, body: bytes
) -> None:
    handled = await harness.deliver(body, type_=CreateCA.TYPE)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    assert [] == handled.events
    assert 0 == await count(harness, "cas")
