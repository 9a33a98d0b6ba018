"""The DMS worker over a real RabbitMQ and PostgreSQL, with the CA worker in-process:
the DMS registry, and enrollment authorized here and issued by the CA worker."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateView,
    CreateCA,
    GetCA,
    GetCertificate,
    RevocationReason,
    RevokeCertificate,
    SignCertificate,
)
from contracts.devices import (
    DeviceDecommissioned,
    DeviceStatus,
    DeviceStatusUpdate,
    DeviceView,
)
from contracts.dms import (
    CreateDMS,
    DMSs,
    DMSStatus,
    DMSView,
    EnrollmentKind,
    EnrollmentRequest,
    GetDMS,
    ListDMSs,
    RevokeDMS,
    UpdateAuthorizedCAs,
)
from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorCode, Reply
from contracts.message import Message
from runtime.bus import Bus
from tests.envelopes import raw_envelope
from tests.pki import EventLog, call, csr_pem, make_csr, tampered_csr_pem, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

INTERNAL_CA = "LAMASSU-DMS-MANAGER"


# --- the bus and in-memory keys ------------------------------------------------------
# (as tests/pki.py has them; repeated so that mypy checks this package on its own)


@pytest.fixture
async def events(bus: Bus, dms_service: None) -> AsyncIterator[EventLog]:
    log = EventLog()
    await bus.subscribe("#", log.on_message)
    yield log


# --- a small site: CAs, DMSs and devices made through the bus ------------------------


def new_request_id() -> str:
    return secrets.token_hex(32)


def certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


async def ok(bus: Bus, request: Message) -> Reply:
    reply = await call(bus, request)
    assert reply.ok, reply.error
    return reply


async def create_ca(bus: Bus, name: str) -> CAView:
    return CAView.model_validate((await ok(bus, CreateCA(name=name))).result)


async def create_dms(
    bus: Bus, name: str, authorized_cas: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, DMSView]:
    key, csr = make_csr(name)
    reply = await ok(
        bus, CreateDMS(name=name, authorized_cas=authorized_cas, csr_pem=csr_pem(csr))
    )
    return key, DMSView.model_validate(reply.result)


async def enroll(
    bus: Bus,
    label: str,
    csr: x509.CertificateSigningRequest | str,
    chain: list[str],
    *,
    kind: EnrollmentKind = EnrollmentKind.ENROLL,
    request_id: str | None = None,
) -> Reply:
    """What the EST gateway sends for one request, and the reply it gets."""
    request = EnrollmentRequest(
        kind=kind,
        label=label,
        csr_pem=csr if isinstance(csr, str) else csr_pem(csr),
        client_certificate_chain_pem=chain,
        request_id=request_id or new_request_id(),
    )
    return await call(bus, request)


def issued(reply: Reply) -> CertificateView:
    assert reply.ok, reply.error
    return CertificateView.model_validate(reply.result)


def refusal(reply: Reply) -> tuple[ErrorCode | None, str]:
    assert not reply.ok
    assert reply.error is not None
    assert "\n" not in reply.error.message
    return reply.error.code, reply.error.message


@dataclass(frozen=True)
class Site:
    """A device CA, a second CA outside the DMS's allow-list, and an active DMS."""

    device_ca: CAView
    other_ca: CAView
    dms: DMSView


@pytest.fixture(scope="module")
async def site(bus: Bus, dms_service: None) -> Site:
    device_ca = await create_ca(bus, unique("device-ca"))
    other_ca = await create_ca(bus, unique("other-ca"))
    _, dms = await create_dms(bus, unique("factory"), [device_ca.name])
    return Site(device_ca, other_ca, dms)


# --- the DMS registry ----------------------------------------------------------------


async def test_create_signs_the_dms_certificate_with_the_internal_ca(
    bus: Bus, site: Site, events: EventLog
) -> None:
    """A DMS gets a certificate for its own key from LAMASSU-DMS-MANAGER, and an event."""
    name = unique("line-1")
    key, dms = await create_dms(bus, name, [site.device_ca.name])
    internal = CAView.model_validate((await ok(bus, GetCA(name=INTERNAL_CA))).result)
    cert = certificate(dms.certificate_pem)
    cert.verify_directly_issued_by(certificate(internal.certificate_pem))
    assert key.public_key() == cert.public_key()
    assert (DMSStatus.ACTIVE, [site.device_ca.name]) == (
        dms.status,
        dms.authorized_cas,
    )
    event = await events.wait_for("dms.create", f"dms/{name}")
    assert dms == DMSView.model_validate(event.data)


async def test_get_and_list(bus: Bus, site: Site) -> None:
    """A DMS is found by name, listed by status, and paged by name."""
    got = DMSView.model_validate((await ok(bus, GetDMS(name=site.dms.name))).result)
    active = DMSs.model_validate(
        (await ok(bus, ListDMSs(status=DMSStatus.ACTIVE, limit=1000))).result
    )
    after = DMSs.model_validate(
        (await ok(bus, ListDMSs(after=site.dms.name, limit=1000))).result
    )
    assert site.dms == got
    assert site.dms.name in [d.name for d in active.items]
    assert all(d.name > site.dms.name for d in after.items)


@pytest.mark.parametrize(
    ("make", "code", "reason"),
    [
        (
            lambda s: CreateDMS(
                name=s.dms.name,
                authorized_cas=[s.device_ca.name],
                csr_pem=csr_pem(make_csr("again")[1]),
            ),
            ErrorCode.CONFLICT,
            "already exists",
        ),
        (
            lambda s: CreateDMS(
                name=unique("x"),
                authorized_cas=[s.device_ca.name, "no-such-ca"],
                csr_pem=csr_pem(make_csr("x")[1]),
            ),
            ErrorCode.NOT_FOUND,
            "no CA named 'no-such-ca'",
        ),
        (
            lambda s: CreateDMS(
                name=unique("x"), authorized_cas=[s.device_ca.name], csr_pem="garbage"
            ),
            ErrorCode.INVALID,
            "not a PKCS#10",
        ),
        (
            lambda s: CreateDMS(
                name=unique("x"),
                authorized_cas=[s.device_ca.name],
                csr_pem=tampered_csr_pem("x"),
            ),
            ErrorCode.INVALID,
            "signature does not verify",
        ),
        (
            lambda _: CreateDMS(
                name=unique("x"),
                authorized_cas=[INTERNAL_CA],
                csr_pem=csr_pem(make_csr("x")[1]),
            ),
            ErrorCode.INVALID,
            "is internal",
        ),
        (lambda _: GetDMS(name="no-such-dms"), ErrorCode.NOT_FOUND, "no DMS named"),
        (
            lambda s: UpdateAuthorizedCAs(name=s.dms.name, add=["no-such-ca"]),
            ErrorCode.NOT_FOUND,
            "no CA named 'no-such-ca'",
        ),
        (
            lambda _: UpdateAuthorizedCAs(name="no-such-dms", remove=["x"]),
            ErrorCode.NOT_FOUND,
            "no DMS named",
        ),
        (lambda _: RevokeDMS(name="no-such-dms"), ErrorCode.NOT_FOUND, "no DMS named"),
    ],
    ids=[
        "duplicate-name",
        "unknown-ca",
        "garbage-csr",
        "bad-signature-csr",
        "internal-ca-in-allow-list",
        "get-unknown",
        "add-unknown-ca",
        "update-unknown-dms",
        "revoke-unknown-dms",
    ],
)
async def test_registry_refusals_name_their_code_and_reason(
    bus: Bus,
    site: Site,
    make: Callable[[Site], Message],
    code: ErrorCode,
    reason: str,
) -> None:
    """Each refusal is a typed error reply with a one-line reason."""
    actual_code, message = refusal(await call(bus, make(site)))
    assert code == actual_code
    assert reason in message


async def test_update_allow_list(bus: Bus, site: Site, events: EventLog) -> None:
    """CAs are added and removed in one step, with a dms.update event of both states."""
    first, second = await create_ca(bus, unique("a")), await create_ca(bus, unique("b"))
    _, dms = await create_dms(bus, unique("upd"), [first.name])
    reply = await ok(
        bus, UpdateAuthorizedCAs(name=dms.name, add=[second.name], remove=[first.name])
    )
    updated = DMSView.model_validate(reply.result)
    event = await events.wait_for("dms.update", f"dms/{dms.name}")
    assert [second.name] == updated.authorized_cas
    assert ([first.name], [second.name]) == (
        event.data["previous"]["authorized_cas"],
        event.data["updated"]["authorized_cas"],
    )


async def test_revoke_revokes_the_dms_and_its_certificate(
    bus: Bus, site: Site, events: EventLog
) -> None:
    """A revoked DMS is REVOKED, its certificate is revoked at the CA, and it stays so."""
    _, dms = await create_dms(bus, unique("rev"), [site.device_ca.name])
    reply = await ok(
        bus, RevokeDMS(name=dms.name, reason=RevocationReason.KEY_COMPROMISE)
    )
    revoked = DMSView.model_validate(reply.result)
    status = await events.wait_for(
        "certificate.status.update", f"certificate/{dms.certificate_serial}"
    )
    at_ca = CertificateView.model_validate(
        (await ok(bus, GetCertificate(serial=dms.certificate_serial))).result
    )
    assert (DMSStatus.REVOKED, RevocationReason.KEY_COMPROMISE) == (
        revoked.status,
        revoked.revocation_reason,
    )
    assert "REVOKED" == status.data["updated"]["status"]
    assert (CertificateStatus.REVOKED, RevocationReason.KEY_COMPROMISE) == (
        at_ca.status,
        at_ca.revocation_reason,
    )
    assert ErrorCode.CONFLICT == refusal(await call(bus, RevokeDMS(name=dms.name)))[0]
    code, message = refusal(
        await call(bus, UpdateAuthorizedCAs(name=dms.name, add=[site.other_ca.name]))
    )
    assert (ErrorCode.CONFLICT, f"DMS {dms.name!r} is revoked") == (
        code,
        message.split(":")[0],
    )


async def test_certificate_revoked_directly_revokes_its_dms(
    bus: Bus, site: Site, events: EventLog
) -> None:
    """An admin revoking a DMS certificate at the CA revokes the DMS too."""
    _, dms = await create_dms(bus, unique("direct"), [site.device_ca.name])
    await ok(bus, RevokeCertificate(serial=dms.certificate_serial))
    event = await events.wait_for(
        "dms.update",
        f"dms/{dms.name}",
        lambda data: data["updated"]["status"] == "REVOKED",
    )
    got = DMSView.model_validate((await ok(bus, GetDMS(name=dms.name))).result)
    assert DMSStatus.REVOKED == got.status
    assert "ACTIVE" == event.data["previous"]["status"]


# --- enrollment, as the EST gateway will send it -------------------------------------


async def test_enroll_issues_from_the_label_ca(
    bus: Bus, site: Site, events: EventLog
) -> None:
    """An authorized enrollment is answered by the CA worker with the device's certificate."""
    device = unique("dev")
    _, csr = make_csr(f"tls:{device}")
    cert = issued(
        await enroll(bus, site.device_ca.name, csr, [site.dms.certificate_pem])
    )
    certificate(cert.certificate_pem).verify_directly_issued_by(
        certificate(site.device_ca.certificate_pem)
    )
    assert (site.device_ca.name, device, "tls", site.dms.name, None) == (
        cert.ca,
        cert.device_id,
        cert.slot,
        cert.dms,
        cert.replaces,
    )
    event = await events.wait_for(
        "dms.enroll", f"dms/{site.dms.name}", lambda d: d["serial"] == cert.serial
    )
    assert (device, "tls", cert.serial) == (
        event.data["device_id"],
        event.data["slot"],
        event.data["serial"],
    )
    # certificate.create delivered again (at least once): announced again, same id.
    created = await events.wait_for("certificate.create", f"certificate/{cert.serial}")
    await bus.publish(bus.topology.events, created)
    twice = await events.wait_for_all(
        "dms.enroll",
        f"dms/{site.dms.name}",
        lambda d: d["serial"] == cert.serial,
        count=2,
    )
    assert {event.id} == {e.id for e in twice}


async def test_serverkeygen_is_authorized_as_enroll(bus: Bus, site: Site) -> None:
    """serverkeygen (RFC 7030 §4.4) is authorized like simpleenroll; the slot defaults."""
    device = unique("dev")
    _, csr = make_csr(device)
    cert = issued(
        await enroll(
            bus,
            site.device_ca.name,
            csr,
            [site.dms.certificate_pem],
            kind=EnrollmentKind.SERVERKEYGEN,
        )
    )
    assert (device, "default") == (cert.device_id, cert.slot)


async def test_the_same_request_twice_gets_the_same_certificate(
    bus: Bus, site: Site
) -> None:
    """A retried request (same request_id, RFC 7030 §4.2.3) finds its first certificate."""
    _, csr = make_csr(unique("dev"))
    request_id = new_request_id()
    chain = [site.dms.certificate_pem]
    first = issued(
        await enroll(bus, site.device_ca.name, csr, chain, request_id=request_id)
    )
    second = issued(
        await enroll(bus, site.device_ca.name, csr, chain, request_id=request_id)
    )
    assert first.serial == second.serial


async def test_allow_list_change_takes_effect(bus: Bus, site: Site) -> None:
    """A CA outside the allow-list is refused, and accepted once added."""
    ca = await create_ca(bus, unique("late"))
    _, dms = await create_dms(bus, unique("grow"), [site.device_ca.name])
    _, csr = make_csr(unique("dev"))
    code, message = refusal(await enroll(bus, ca.name, csr, [dms.certificate_pem]))
    await ok(bus, UpdateAuthorizedCAs(name=dms.name, add=[ca.name]))
    cert = issued(await enroll(bus, ca.name, csr, [dms.certificate_pem]))
    assert (ErrorCode.FORBIDDEN, f"CA {ca.name!r} is not in the allow-list") == (
        code,
        message.split(" of DMS")[0],
    )
    assert ca.name == cert.ca


@dataclass(frozen=True)
class Refused:
    """An enrollment that must be refused: what is sent, and the expected error."""

    chain: Callable[[Site, Bus], Awaitable[list[str]]]
    code: ErrorCode
    reason: str
    csr: str | None = None
    label: str | None = None


async def _foreign_certificate(site: Site, bus: Bus) -> list[str]:
    reply = await ok(
        bus,
        SignCertificate(ca=site.other_ca.name, csr_pem=csr_pem(make_csr("imp")[1])),
    )
    return [CertificateView.model_validate(reply.result).certificate_pem]


async def _dms_chain(site: Site, _bus: Bus) -> list[str]:
    return [site.dms.certificate_pem]


async def _no_chain(_site: Site, _bus: Bus) -> list[str]:
    return []


async def _garbage_chain(_site: Site, _bus: Bus) -> list[str]:
    return ["garbage"]


async def _revoked_dms_chain(site: Site, bus: Bus) -> list[str]:
    _, dms = await create_dms(bus, unique("gone"), [site.device_ca.name])
    await ok(bus, RevokeDMS(name=dms.name))
    return [dms.certificate_pem]


ENROLL_REFUSALS = {
    "no client certificate": Refused(
        _no_chain, ErrorCode.UNAUTHORIZED, "no client certificate was presented"
    ),
    "certificate not from LAMASSU-DMS-MANAGER": Refused(
        _foreign_certificate, ErrorCode.FORBIDDEN, "not by LAMASSU-DMS-MANAGER"
    ),
    "revoked DMS": Refused(_revoked_dms_chain, ErrorCode.FORBIDDEN, "DMS 'gone-"),
    "label CA not in the allow-list": Refused(
        _dms_chain, ErrorCode.FORBIDDEN, "is not in the allow-list", label="other"
    ),
    "unknown label": Refused(
        _dms_chain, ErrorCode.NOT_FOUND, "no CA named 'no-such-ca'", label="no-such-ca"
    ),
    "garbage CSR": Refused(
        _dms_chain, ErrorCode.INVALID, "not a PKCS#10", csr="garbage"
    ),
    "CSR with a bad signature": Refused(
        _dms_chain,
        ErrorCode.INVALID,
        "signature does not verify",
        csr=tampered_csr_pem("dev-x"),
    ),
    "CN not [slot:]device-id": Refused(
        _dms_chain,
        ErrorCode.INVALID,
        "is not [slot:]device-id",
        csr=csr_pem(make_csr("a:b:c")[1]),
    ),
    "garbage client certificate": Refused(
        _garbage_chain, ErrorCode.INVALID, "not PEM X.509"
    ),
}


@pytest.mark.parametrize("case", ENROLL_REFUSALS.values(), ids=list(ENROLL_REFUSALS))
async def test_enroll_refusals(bus: Bus, site: Site, case: Refused) -> None:
    """Each refused enrollment gets its code and a one-line reason, from the DMS worker."""
    chain = await case.chain(site, bus)
    code, message = refusal(await enroll(bus, _label(site, case), _csr(case), chain))
    assert case.code == code
    assert case.reason in message


def _label(site: Site, case: Refused) -> str:
    names = {None: site.device_ca.name, "other": site.other_ca.name}
    return str(names.get(case.label, case.label))


def _csr(case: Refused) -> str:
    return case.csr or csr_pem(make_csr(unique("dev"))[1])


async def test_enrollments_arriving_together_are_each_decided(
    bus: Bus, site: Site
) -> None:
    """Requests the DMS worker reads together, with one statement: each allowed one
    gets its certificate, each refused one its own code and reason."""
    cases = list(ENROLL_REFUSALS.values())
    chains = [await case.chain(site, bus) for case in cases]

    def allowed() -> Awaitable[Reply]:
        csr = csr_pem(make_csr(unique("dev"))[1])
        return enroll(bus, site.device_ca.name, csr, [site.dms.certificate_pem])

    replies = await asyncio.gather(*(allowed() for _ in range(5)))
    assert 5 == len({issued(reply).serial for reply in replies})

    replies = await asyncio.gather(
        allowed(),
        *(
            enroll(bus, _label(site, case), _csr(case), chain)
            for case, chain in zip(cases, chains, strict=True)
        ),
        allowed(),
    )
    issued(replies[0])
    issued(replies[-1])
    for case, reply in zip(cases, replies[1:-1], strict=True):
        code, message = refusal(reply)
        assert (case.code, True) == (code, case.reason in message), message


# --- re-enrollment -------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    common_name: str
    key: ec.EllipticCurvePrivateKey
    certificate: CertificateView


async def enrolled_device(bus: Bus, site: Site, common_name: str) -> Device:
    key, csr = make_csr(
        common_name, dns_names=(f"{common_name.rpartition(':')[2]}.local",)
    )
    reply = await enroll(bus, site.device_ca.name, csr, [site.dms.certificate_pem])
    return Device(common_name, key, issued(reply))


async def test_reenroll_renews_for_the_same_subject(
    bus: Bus, site: Site, events: EventLog
) -> None:
    """A device renews with its current certificate; the new one replaces it, same DMS."""
    name = unique("dev")
    device = await enrolled_device(bus, site, f"tls:{name}")
    _, csr = make_csr(device.common_name, dns_names=(f"{name}.local",))
    renewed = issued(
        await enroll(
            bus,
            site.device_ca.name,
            csr,
            [device.certificate.certificate_pem],
            kind=EnrollmentKind.REENROLL,
        )
    )
    assert (name, "tls", site.dms.name, device.certificate.serial) == (
        renewed.device_id,
        renewed.slot,
        renewed.dms,
        renewed.replaces,
    )
    event = await events.wait_for(
        "dms.reenroll",
        f"dms/{site.dms.name}",
        lambda data: data["serial"] == renewed.serial,
    )
    assert name == event.data["device_id"]


async def test_reenroll_refusals(bus: Bus, site: Site) -> None:
    """Renewal is refused for another subject, another device's or a DMS certificate,
    and a revoked certificate."""
    name, other = unique("dev"), unique("dev")
    device = await enrolled_device(bus, site, name)
    other_device = await enrolled_device(bus, site, other)
    own_chain = [device.certificate.certificate_pem]
    same = csr_pem(make_csr(name, dns_names=(f"{name}.local",))[1])
    cases = {
        "changed subject": (own_chain, csr_pem(make_csr(f"x:{name}")[1])),
        "another device's certificate": (
            [other_device.certificate.certificate_pem],
            same,
        ),
        "the DMS certificate": ([site.dms.certificate_pem], same),
        "no client certificate": ([], same),
    }
    outcomes = {
        case: refusal(
            await enroll(
                bus, site.device_ca.name, csr, chain, kind=EnrollmentKind.REENROLL
            )
        )
        for case, (chain, csr) in cases.items()
    }
    await ok(bus, RevokeCertificate(serial=device.certificate.serial))
    outcomes["revoked certificate"] = refusal(
        await enroll(
            bus, site.device_ca.name, same, own_chain, kind=EnrollmentKind.REENROLL
        )
    )
    assert {
        "changed subject": ErrorCode.FORBIDDEN,
        "another device's certificate": ErrorCode.FORBIDDEN,
        "the DMS certificate": ErrorCode.FORBIDDEN,
        "no client certificate": ErrorCode.UNAUTHORIZED,
        "revoked certificate": ErrorCode.FORBIDDEN,
    } == {case: code for case, (code, _) in outcomes.items()}
    assert "the CSR subject" in outcomes["changed subject"][1]
    assert "the CSR subject" in outcomes["another device's certificate"][1]
    assert "not by " in outcomes["the DMS certificate"][1]
    assert "revoked" in outcomes["revoked certificate"][1]


def device_view(name: str, status: DeviceStatus) -> DeviceView:
    now = datetime.now(UTC)
    decommissioned = now if status is DeviceStatus.DECOMMISSIONED else None
    return DeviceView(
        id=name,
        dms=None,
        status=status,
        slots=[],
        created_at=now,
        decommissioned_at=decommissioned,
    )


def status_update(name: str, updated: DeviceStatus) -> CloudEvent:
    return new_message(
        source="tests",
        subject=f"device/{name}",
        data=DeviceStatusUpdate(
            previous=device_view(name, DeviceStatus.FULLY_PROVISIONED),
            updated=device_view(name, updated),
        ),
        now=datetime.now(UTC),
    )


def decommissioned_event(name: str) -> CloudEvent:
    return raw_envelope(
        type_=DeviceDecommissioned.TYPE,
        source="tests",
        subject=f"device/{name}",
        data=device_view(name, DeviceStatus.DECOMMISSIONED),
        now=datetime.now(UTC),
    )


async def recorded_decommissioned(db: asyncpg.Pool, name: str) -> None:
    async with asyncio.timeout(10):  # the projection is eventually consistent
        while not await db.fetchval(
            "SELECT 1 FROM dms.decommissioned_devices WHERE device_id = $1", name
        ):
            await asyncio.sleep(0.05)


async def test_decommissioned_device_never_enrolls_again(
    bus: Bus, site: Site, db: asyncpg.Pool
) -> None:
    """After device.decommissioned, enroll and reenroll are refused."""
    name = unique("dev")
    device = await enrolled_device(bus, site, name)
    await bus.publish(bus.topology.events, decommissioned_event(name))
    await recorded_decommissioned(db, name)
    fresh = csr_pem(make_csr(name, dns_names=(f"{name}.local",))[1])
    enrolled = refusal(
        await enroll(bus, site.device_ca.name, fresh, [site.dms.certificate_pem])
    )
    renewed = refusal(
        await enroll(
            bus,
            site.device_ca.name,
            fresh,
            [device.certificate.certificate_pem],
            kind=EnrollmentKind.REENROLL,
        )
    )
    expected = (ErrorCode.FORBIDDEN, f"device {name!r} is decommissioned")
    assert expected == enrolled
    assert expected == renewed


async def test_device_status_updates_no_longer_reach_the_dms(
    bus: Bus, dms_service: None, db: asyncpg.Pool
) -> None:
    """The DMS queue is bound to device.decommissioned only: a status update published
    before it is never handled (one queue, in order, so it would be handled first)."""
    unheard, heard = unique("dev"), unique("dev")
    await bus.publish(
        bus.topology.events, status_update(unheard, DeviceStatus.DECOMMISSIONED)
    )
    await bus.publish(bus.topology.events, decommissioned_event(heard))
    await recorded_decommissioned(db, heard)
    assert not await db.fetchval(
        "SELECT 1 FROM dms.decommissioned_devices WHERE device_id = $1", unheard
    )
