"""The DMS worker's routes without RabbitMQ: its command and event tables through the
real dispatcher (runtime.testing), on PostgreSQL in a transaction rolled back after each
test. DMS rows are seeded through the store, on the harness's connection, so the routes
that would have the CA worker sign a DMS certificate (create, renew) stay with
test_dms_worker.py, which runs them over the broker against the real CA worker.

The enrollment routes ask the CA worker for the label's CA (``ca.get``) through
``CAClient``; here a stand-in for that worker answers (``CAWorker``), from CAs built in
memory. It is another worker's part played in-process, not a mock of the broker.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contracts.ca import (
    INTERNAL_CA,
    CAView,
    CertificateCreated,
    CertificateStatus,
    CertificateView,
    GetCA,
    IssueCertificate,
    RevocationReason,
)
from contracts.devices import DeviceDecommissioned, DeviceStatus, DeviceView
from contracts.dms import (
    AuthorizeEnrollment,
    DeviceOwnership,
    DeviceOwnershipUpdate,
    DMSEnrolled,
    DMSReenrolled,
    DMSs,
    DMSStatus,
    DMSUpdate,
    DMSView,
    EnrollmentAuthorization,
    EnrollmentKind,
    EnrollmentRequest,
    GetDMS,
    ListDMSs,
    TransferDevice,
    UpdateDMSPolicy,
)
from contracts.envelope import CloudEvent
from contracts.errors import ErrorCode, Reply
from contracts.keys import KeyType
from dms_worker.authorization import certificate_serial
from dms_worker.ca_client import CAClient
from dms_worker.enrollment import authorize_requests
from dms_worker.handlers import EVENT_HANDLERS, HANDLERS, DmsContext, DmsDeps
from dms_worker.settings import Settings
from dms_worker.store import NewDMS, Store
from runtime.db import discover_migrations, migrate
from runtime.routes import Batch, Mode, Outcome, Route, merged
from runtime.testing import Handled, Harness
from tests.device_worker.device_bus import enrollment_certificate, envelope_bytes
from tests.dms_worker.throwaway import (
    DAY,
    NOW,
    Authority,
    issued,
    self_signed_ca,
)
from tests.pki import csr_pem, make_csr

pytestmark = [pytest.mark.postgres]

SCHEMA = "dms"


# --- a throwaway PKI, and the CA worker's side of ca.get ------------------------------


def ca_view(name: str, ca: Authority, *, internal: bool = False) -> CAView:
    certificate = ca.certificate
    return CAView(
        name=name,
        parent=None,
        internal=internal,
        key_type=KeyType.EC_P256,
        key_id="00",
        engine="software",
        serial=certificate_serial(certificate),
        subject=certificate.subject.rfc4514_string(),
        status=CertificateStatus.ACTIVE,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        certificate_pem=ca.pem,
    )


@dataclass
class CAWorker:
    """A stand-in for the CA worker at the other end of ``CAClient`` (its ``Requester``
    port): it answers ``ca.get`` from CAs built in memory, as the CA worker would. The
    routes tested here ask it nothing else; anything else fails the test."""

    cas: Mapping[str, CAView]
    asked: list[str] = field(default_factory=list)

    async def request(self, command: CloudEvent, *, timeout: float) -> Reply:
        del timeout
        assert GetCA.TYPE == command.type, f"unexpected request {command.type}"
        name = GetCA.model_validate(command.data).name
        self.asked.append(name)
        if (view := self.cas.get(name)) is None:
            return Reply.failure(ErrorCode.NOT_FOUND, f"no CA named {name!r}")
        return Reply.success(view)


@dataclass(frozen=True)
class Pki:
    manager: Authority  # LAMASSU-DMS-MANAGER, which issues DMS certificates
    factory_ca: Authority  # the CA devices enroll with
    other_ca: Authority  # a CA no DMS here is allowed to enroll with
    internal_ca: Authority  # an internal CA: devices never enroll with it


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki(
        self_signed_ca(INTERNAL_CA),
        self_signed_ca("factory-ca"),
        self_signed_ca("other-ca"),
        self_signed_ca("vault-ca"),
    )


@pytest.fixture(scope="module")
async def pool(handler_db: asyncpg.Pool) -> asyncpg.Pool:
    await migrate(handler_db, SCHEMA, discover_migrations("dms_worker"))
    return handler_db


@pytest.fixture
def ca_worker(pki: Pki) -> CAWorker:
    return CAWorker(
        {
            name: ca_view(name, ca, internal=name == "vault-ca")
            for name, ca in (
                ("factory-ca", pki.factory_ca),
                ("other-ca", pki.other_ca),
                ("vault-ca", pki.internal_ca),
            )
        }
    )


@pytest.fixture
def deps(pki: Pki, ca_worker: CAWorker) -> DmsDeps:
    return DmsDeps(
        store=Store(),
        cas=CAClient(ca_worker, timeout=1),
        dms_manager_ca=pki.manager.certificate,
        # Its defaults, whatever the environment says: only create and renew read it.
        settings=Settings.model_construct(),
    )


@pytest.fixture
async def harness(pool: asyncpg.Pool, deps: DmsDeps) -> AsyncIterator[Harness]:
    # One table for both queues: which queue a type arrives on is the broker's part.
    async with Harness.open(
        pool,
        schema=SCHEMA,
        routes=merged(HANDLERS, EVENT_HANDLERS),
        context=DmsContext.factory(deps),
        clock=lambda: NOW,
    ) as found:
        yield found


@dataclass(frozen=True)
class Dms:
    name: str
    certificate: x509.Certificate

    @property
    def chain(self) -> list[str]:
        return [self.certificate.public_bytes(serialization.Encoding.PEM).decode()]


async def seeded(harness: Harness, pki: Pki, name: str, cas: list[str]) -> Dms:
    """A DMS row as create_dms writes it, in the harness's transaction."""
    certificate = issued(pki.manager, f"dms-{name}")
    await Store().insert_dms(
        harness.conn,
        NewDMS(
            name=name,
            authorized_cas=cas,
            certificate_serial=certificate_serial(certificate),
            certificate=certificate,
            created_at=NOW,
        ),
    )
    return Dms(name, certificate)


@pytest.fixture
async def factory(harness: Harness, pki: Pki) -> Dms:
    return await seeded(harness, pki, "factory", ["factory-ca", "vault-ca"])


def enrollment(
    common_name: str,
    chain: list[str],
    *,
    label: str = "factory-ca",
    kind: EnrollmentKind = EnrollmentKind.ENROLL,
) -> EnrollmentRequest:
    _, csr = make_csr(common_name)
    return EnrollmentRequest(
        kind=kind,
        label=label,
        csr_pem=csr_pem(csr),
        client_certificate_chain_pem=chain,
        request_id=secrets.token_hex(32),
    )


def refused(handled: Handled) -> tuple[str | None, str]:
    assert handled.reply is not None
    assert handled.reply.error is not None
    return handled.code, handled.reply.error.message


async def in_inbox(harness: Harness, message_id: str) -> bool:
    found: bool = await harness.conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.inbox WHERE id = $1)", message_id
    )
    return found


async def owner(harness: Harness, device_id: str) -> str | None:
    found: str | None = await harness.conn.fetchval(
        f"SELECT dms FROM {SCHEMA}.devices WHERE device_id = $1", device_id
    )
    return found


# --- enrollment.request and enrollment.authorize -------------------------------------


async def test_an_enrollment_is_forwarded_to_the_ca_worker(
    harness: Harness, factory: Dms
) -> None:
    request = enrollment("backup:dev-1", factory.chain)
    handled = await harness.send(request, id_="enroll-1")
    # The CA worker answers the gateway: this worker forwards, and replies nothing.
    assert (None, "ack") == (handled.reply, handled.verdict)
    assert handled.forward is not None
    assert (IssueCertificate.TYPE, "device/dev-1") == (
        handled.forward.type,
        handled.forward.subject,
    )
    issue = IssueCertificate.model_validate(handled.forward.data)
    assert ("factory-ca", "dev-1", "backup", "factory", None) == (
        issue.ca,
        issue.device_id,
        issue.slot,
        issue.dms,
        issue.replaces,
    )
    assert (request.request_id, request.csr_pem) == (issue.request_id, issue.csr_pem)
    # Its policy travels with it (create_dms's defaults).
    assert (False, True, None) == (
        issue.allow_replace,
        issue.revoke_replaced,
        issue.profile,
    )
    # A READ route: no inbox row, no events. It claims the unowned device, though,
    # in a statement of its own (claim_devices), for the DMS that first enrolled it.
    assert ([], []) == (handled.events, handled.commands)
    assert not await in_inbox(harness, "enroll-1")
    assert "factory" == await owner(harness, "dev-1")


async def test_enrollment_authorize_answers_instead_of_forwarding(
    harness: Harness, factory: Dms
) -> None:
    request = enrollment("dev-2", factory.chain)
    asked = AuthorizeEnrollment(**request.model_dump())
    handled = await harness.send(asked, id_="authorize-2")
    assert handled.forward is None
    assert handled.reply is not None
    assert EnrollmentAuthorization(
        device_id="dev-2", slot="default", dms="factory"
    ) == EnrollmentAuthorization.model_validate(handled.reply.result)
    assert not await in_inbox(harness, "authorize-2")


async def test_a_refusal_among_several_is_answered_alone(
    harness: Harness, deps: DmsDeps, factory: Dms, ca_worker: CAWorker
) -> None:
    """Requests that arrive together are authorized in one call; a refusal of any has
    each sent again alone: the others are forwarded as if alone, and the refused one
    gets its own code and reason."""
    sizes: list[int] = []

    async def counted(
        batch: Batch[EnrollmentRequest, DmsContext],
    ) -> list[Outcome]:
        sizes.append(len(batch))
        return await authorize_requests(batch)

    # The real handler, counted; on the harness's connection, to see its DMS row.
    table = {
        **merged(HANDLERS, EVENT_HANDLERS),
        EnrollmentRequest.TYPE: Route(
            EnrollmentRequest, handle_batch=counted, mode=Mode.READ
        ),
    }
    counting = Harness(
        harness.conn,
        schema=SCHEMA,
        routes=table,
        context=DmsContext.factory(deps),
        clock=lambda: NOW,
    )
    first, refused_one, third = await counting.send_all(
        [
            enrollment("dev-a", factory.chain),
            enrollment("dev-b", factory.chain, label="other-ca"),
            enrollment("dev-c", factory.chain),
        ]
    )
    assert [3, 1, 1, 1] == sizes
    forwarded = [
        IssueCertificate.model_validate(h.forward.data).device_id
        for h in (first, third)
        if h.forward is not None
    ]
    assert ["dev-a", "dev-c"] == forwarded
    assert (None, None) == (first.reply, third.reply)
    assert refused_one.forward is None
    assert (
        "forbidden",
        "CA 'other-ca' is not in the allow-list of DMS 'factory'",
    ) == refused(refused_one)
    assert ["ack"] * 3 == [h.verdict for h in (first, refused_one, third)]
    # The CA client remembers a CA once it exists: one ca.get per label.
    assert ["factory-ca", "other-ca"] == sorted(ca_worker.asked)


@dataclass(frozen=True)
class Refusal:
    name: str
    common_name: str
    label: str
    chain: str  # "dms", "none", "garbage", "foreign"
    code: ErrorCode
    reason: str


REFUSALS = [
    Refusal(
        "no client certificate",
        "dev-r",
        "factory-ca",
        "none",
        ErrorCode.UNAUTHORIZED,
        "no client certificate was presented",
    ),
    Refusal(
        "a CA outside the allow-list",
        "dev-r",
        "other-ca",
        "dms",
        ErrorCode.FORBIDDEN,
        "CA 'other-ca' is not in the allow-list of DMS 'factory'",
    ),
    Refusal(
        "an internal CA, even in the allow-list",
        "dev-r",
        "vault-ca",
        "dms",
        ErrorCode.FORBIDDEN,
        "CA 'vault-ca' is internal: devices do not enroll with it",
    ),
    Refusal(
        "an unknown CA",
        "dev-r",
        "nowhere-ca",
        "dms",
        ErrorCode.NOT_FOUND,
        "no CA named 'nowhere-ca'",
    ),
    Refusal(
        "a certificate no DMS holds",
        "dev-r",
        "factory-ca",
        "foreign",
        ErrorCode.FORBIDDEN,
        "no DMS holds the client certificate",
    ),
    Refusal(
        "a chain that is not PEM",
        "dev-r",
        "factory-ca",
        "garbage",
        ErrorCode.INVALID,
        "the client certificate chain is not PEM X.509",
    ),
    Refusal(
        "a CN that is no device id",
        "a:b:c d",
        "factory-ca",
        "dms",
        ErrorCode.INVALID,
        "the CSR common name 'a:b:c d' is not [slot:]device-id",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[r.name for r in REFUSALS])
async def test_enrollment_refusals_name_their_code_and_reason(
    harness: Harness, pki: Pki, factory: Dms, case: Refusal
) -> None:
    chains = {
        "dms": factory.chain,
        "none": [],
        "garbage": ["not a certificate"],
        "foreign": [
            issued(pki.manager, "stranger")
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        ],
    }
    handled = await harness.send(
        enrollment(case.common_name, chains[case.chain], label=case.label)
    )
    assert handled.forward is None
    code, reason = refused(handled)
    assert case.code == code
    assert reason.startswith(case.reason)
    assert "ack" == handled.verdict


async def test_a_device_of_another_dms_is_not_enrolled_by_this_one(
    harness: Harness, pki: Pki, factory: Dms
) -> None:
    plant = await seeded(harness, pki, "plant", ["factory-ca"])
    assert (await harness.send(enrollment("dev-o", factory.chain))).forward
    handled = await harness.send(enrollment("dev-o", plant.chain))
    code, reason = refused(handled)
    assert "forbidden" == code
    assert reason.startswith("device 'dev-o' belongs to DMS 'factory', not 'plant'")


async def test_a_renewal_is_authorized_by_the_device_s_own_certificate(
    harness: Harness, pki: Pki, factory: Dms
) -> None:
    """RFC 7030 §4.2.2: the device presents the certificate it renews, issued by the
    label's CA, and its owner's renewal window applies."""
    assert (await harness.send(enrollment("dev-r", factory.chain))).forward
    current = issued(pki.factory_ca, "dev-r")
    chain = [current.public_bytes(serialization.Encoding.PEM).decode()]
    renewal = enrollment("dev-r", chain, kind=EnrollmentKind.REENROLL)
    handled = await harness.send(renewal)
    assert handled.forward is not None
    issue = IssueCertificate.model_validate(handled.forward.data)
    assert ("dev-r", "default", None, certificate_serial(current), True) == (
        issue.device_id,
        issue.slot,
        issue.dms,
        issue.replaces,
        issue.revoke_replaced,
    )
    window = UpdateDMSPolicy(name="factory", reenroll_window_days=30)
    assert (await harness.send(window)).ok
    early = await harness.send(enrollment("dev-r", chain, kind=EnrollmentKind.REENROLL))
    code, reason = refused(early)
    assert "forbidden" == code
    assert reason.startswith("re-enrollment opens 30 days before expiry")


async def test_a_revoked_dms_enrolls_nothing(
    harness: Harness, pki: Pki, factory: Dms
) -> None:
    await Store().revoke_dms(
        harness.conn, "factory", reason=RevocationReason.UNSPECIFIED, now=NOW
    )
    handled = await harness.send(enrollment("dev-v", factory.chain))
    assert ("forbidden", "DMS 'factory' is revoked") == refused(handled)


# --- dms.get, dms.list, dms.update-policy, dms.transfer-device ----------------------


async def test_get_and_list_are_read_without_an_inbox_row(
    harness: Harness, pki: Pki, factory: Dms
) -> None:
    await seeded(harness, pki, "plant", ["other-ca"])
    got = await harness.send(GetDMS(name="factory"), id_="get-factory")
    assert got.reply is not None
    view = DMSView.model_validate(got.reply.result)
    assert ("factory", DMSStatus.ACTIVE, ["factory-ca", "vault-ca"]) == (
        view.name,
        view.status,
        view.authorized_cas,
    )
    assert certificate_serial(factory.certificate) == view.certificate_serial
    listed = await harness.send(ListDMSs(after="factory"), id_="list-after")
    assert listed.reply is not None
    assert ["plant"] == [d.name for d in DMSs.model_validate(listed.reply.result).items]
    missing = await harness.send(GetDMS(name="nobody"), id_="get-nobody")
    assert ("not_found", "no DMS named 'nobody'") == refused(missing)
    for query in ("get-factory", "list-after", "get-nobody"):
        assert not await in_inbox(harness, query)


async def test_a_policy_change_is_announced_once(
    harness: Harness, factory: Dms
) -> None:
    change = UpdateDMSPolicy(
        name="factory", allow_replace=True, reenroll_window_days=30
    )
    handled = await harness.send(change, id_="policy-1")
    assert handled.ok
    (event,) = handled.events
    assert (DMSUpdate.TYPE, "dms/factory", "policy-1") == (
        event.type,
        event.subject,
        event.correlationid,
    )
    update = DMSUpdate.model_validate(event.data)
    assert (False, 0) == (
        update.previous.allow_replace,
        update.previous.reenroll_window_days,
    )
    assert (True, 30) == (
        update.updated.allow_replace,
        update.updated.reenroll_window_days,
    )
    assert await in_inbox(harness, "policy-1")
    # The same change again changes nothing, and says nothing.
    again = await harness.send(change)
    assert (True, []) == (again.ok, again.events)
    # The policy is what the next enrollment is forwarded with.
    handled = await harness.send(enrollment("dev-p", factory.chain))
    assert handled.forward is not None
    assert IssueCertificate.model_validate(handled.forward.data).allow_replace
    missing = await harness.send(UpdateDMSPolicy(name="nobody", require_pop=True))
    assert "not_found" == missing.code


async def test_a_transfer_gives_the_device_to_the_other_dms(
    harness: Harness, pki: Pki, factory: Dms
) -> None:
    plant = await seeded(harness, pki, "plant", ["factory-ca"])
    assert (await harness.send(enrollment("dev-t", factory.chain))).forward
    handled = await harness.send(TransferDevice(device_id="dev-t", dms="plant"))
    assert handled.reply is not None
    assert DeviceOwnership(
        device_id="dev-t", dms="plant", since=NOW
    ) == DeviceOwnership.model_validate(handled.reply.result)
    (event,) = handled.events
    assert (DeviceOwnershipUpdate.TYPE, "device/dev-t") == (event.type, event.subject)
    update = DeviceOwnershipUpdate.model_validate(event.data)
    assert update.previous is not None
    assert ("factory", "plant") == (update.previous.dms, update.updated.dms)
    # Only the new owner enrolls it now.
    assert "forbidden" == (await harness.send(enrollment("dev-t", factory.chain))).code
    assert (await harness.send(enrollment("dev-t", plant.chain))).forward is not None
    # To the owner it has: nothing changes, nothing is announced.
    again = await harness.send(TransferDevice(device_id="dev-t", dms="plant"))
    assert (True, []) == (again.ok, again.events)
    nowhere = await harness.send(TransferDevice(device_id="dev-t", dms="nobody"))
    assert "not_found" == nowhere.code


# --- events of the CA and device workers ---------------------------------------------


def issued_certificate(**changes: str | None) -> CertificateView:
    return enrollment_certificate("dev-e").model_copy(
        update={"dms": "factory", **changes}
    )


async def test_a_certificate_create_is_announced_under_an_id_of_its_serial(
    harness: Harness,
) -> None:
    """A READ route with Events.DIRECT: a redelivery announces again, under the same
    id, which consumers deduplicate on."""
    certificate = issued_certificate(slot="backup")
    first = await harness.send(CertificateCreated.of(certificate), id_="created-1")
    again = await harness.send(CertificateCreated.of(certificate), id_="created-2")
    assert first.ok
    (event,) = first.events
    (repeat,) = again.events
    assert (DMSEnrolled.TYPE, "dms/factory", "created-1") == (
        event.type,
        event.subject,
        event.correlationid,
    )
    assert event.id == repeat.id
    assert 5 == uuid.UUID(event.id).version  # a name-based UUID (RFC 9562 §5.5)
    announced = DMSEnrolled.model_validate(event.data)
    assert ("factory", "dev-e", "backup", certificate.serial, "throwaway") == (
        announced.dms,
        announced.device_id,
        announced.slot,
        announced.serial,
        announced.ca,
    )
    assert not await in_inbox(harness, "created-1")
    assert 0 == await harness.conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.outbox")


async def test_a_renewal_is_announced_as_a_reenrollment(harness: Harness) -> None:
    renewed = issued_certificate(replaces="0abc")
    handled = await harness.send(CertificateCreated.of(renewed))
    (event,) = handled.events
    assert DMSReenrolled.TYPE == event.type
    first = await harness.send(CertificateCreated.of(issued_certificate()))
    # Another type, another certificate: another id.
    assert event.id != first.events[0].id
    # A certificate issued through no DMS (certificate.sign) announces nothing.
    unowned = issued_certificate(dms=None)
    assert [] == (await harness.send(CertificateCreated.of(unowned))).events


async def test_a_decommissioned_device_never_enrolls_again(
    harness: Harness, factory: Dms
) -> None:
    retired = DeviceView(
        id="dev-d",
        dms="factory",
        status=DeviceStatus.DECOMMISSIONED,
        slots=[],
        created_at=NOW - DAY,
        decommissioned_at=NOW - timedelta(hours=1),
    )
    handled = await harness.send(DeviceDecommissioned.of(retired), id_="retired-d")
    assert (True, [], "ack") == (handled.ok, handled.events, handled.verdict)
    assert await in_inbox(harness, "retired-d")
    assert NOW - timedelta(hours=1) == await harness.conn.fetchval(
        f"SELECT decommissioned_at FROM {SCHEMA}.decommissioned_devices"
        " WHERE device_id = 'dev-d'"
    )
    refused_one = await harness.send(enrollment("dev-d", factory.chain))
    assert ("forbidden", "device 'dev-d' is decommissioned") == refused(refused_one)


async def test_garbage_is_refused_invalid_and_dead_lettered(harness: Harness) -> None:
    handled = await harness.deliver(b"{", type_=EnrollmentRequest.TYPE)
    assert ("invalid", "dead-letter") == (handled.code, handled.verdict)
    bad = await harness.deliver(
        envelope_bytes(GetDMS.TYPE, {"name": ""}), type_=GetDMS.TYPE
    )
    assert ("invalid", "dead-letter") == (bad.code, bad.verdict)
    assert refused(bad)[1].startswith("invalid dms.get: name:")
