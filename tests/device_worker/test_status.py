"""Tests of the pure device status: precedence, binding certificates, status updates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from contracts.ca import CertificateStatus
from contracts.devices import DeviceStatus
from device_worker.status import (
    SlotCertificate,
    SlotState,
    apply_certificate_status,
    bind_certificate,
    derive_status,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
YEAR = timedelta(days=365)

ACTIVE = CertificateStatus.ACTIVE
ABOUT_TO_EXPIRE = CertificateStatus.ABOUT_TO_EXPIRE
EXPIRED = CertificateStatus.EXPIRED
REVOKED = CertificateStatus.REVOKED


def cert(
    serial: str, status: CertificateStatus = ACTIVE, *, issued: datetime = NOW
) -> SlotCertificate:
    return SlotCertificate(serial, status, not_before=issued, not_after=issued + YEAR)


def slot(name: str, certificate: SlotCertificate | None = None) -> SlotState:
    return SlotState(name, certificate)


def slots(*statuses: CertificateStatus | None) -> tuple[SlotState, ...]:
    """One slot per status, named s0, s1, ...; None is a slot without a certificate."""
    return tuple(
        slot(f"s{i}", None if status is None else cert(f"0{i}", status))
        for i, status in enumerate(statuses)
    )


# --- derive_status: DESIGN §4 precedence ---------------------------------------------

DERIVE_CASES: dict[str, tuple[Sequence[SlotState], bool, DeviceStatus]] = {
    "decommissioned beats fully provisioned": (
        slots(ACTIVE),
        True,
        DeviceStatus.DECOMMISSIONED,
    ),
    "decommissioned beats warnings": (
        slots(EXPIRED, REVOKED),
        True,
        DeviceStatus.DECOMMISSIONED,
    ),
    "decommissioned before any certificate": (
        slots(None),
        True,
        DeviceStatus.DECOMMISSIONED,
    ),
    "expired slot warns": (
        slots(ACTIVE, EXPIRED),
        False,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    ),
    "revoked slot warns": (
        slots(REVOKED, ACTIVE),
        False,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    ),
    "warnings beat requires action": (
        slots(ABOUT_TO_EXPIRE, REVOKED),
        False,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    ),
    "warnings beat pending": (
        slots(EXPIRED, None),
        False,
        DeviceStatus.PROVISIONED_WITH_WARNINGS,
    ),
    "about to expire requires action": (
        slots(ACTIVE, ABOUT_TO_EXPIRE),
        False,
        DeviceStatus.REQUIRES_ACTION,
    ),
    "requires action beats pending": (
        slots(ABOUT_TO_EXPIRE, None),
        False,
        DeviceStatus.REQUIRES_ACTION,
    ),
    "every slot active": (
        slots(ACTIVE, ACTIVE),
        False,
        DeviceStatus.FULLY_PROVISIONED,
    ),
    "one slot active": (
        slots(ACTIVE),
        False,
        DeviceStatus.FULLY_PROVISIONED,
    ),
    "some slots still empty": (
        slots(ACTIVE, None),
        False,
        DeviceStatus.PENDING_PROVISIONING,
    ),
    "no certificate yet": (
        slots(None, None),
        False,
        DeviceStatus.PENDING_PROVISIONING,
    ),
    "no slots at all": (
        (),
        False,
        DeviceStatus.PENDING_PROVISIONING,
    ),
}


@pytest.mark.parametrize(
    ("device_slots", "decommissioned", "expected"),
    DERIVE_CASES.values(),
    ids=list(DERIVE_CASES),
)
def test_derive_status(
    device_slots: Sequence[SlotState], decommissioned: bool, expected: DeviceStatus
) -> None:
    """The most severe applicable status wins, in the order DESIGN §4 gives."""
    actual = derive_status(device_slots, decommissioned)

    assert expected == actual


# --- bind_certificate: enrollment and re-enrollment ----------------------------------

OLD = cert("0a", issued=NOW - YEAR)
NEW = cert("0b")
SAME_START_LONGER = SlotCertificate("0c", ACTIVE, NOW, NOW + 2 * YEAR)

BIND_CASES: dict[
    str, tuple[Sequence[SlotState], str, SlotCertificate, tuple[SlotState, ...]]
] = {
    "an empty slot takes its first certificate": (
        (slot("default"), slot("tpm")),
        "default",
        NEW,
        (slot("default", NEW), slot("tpm")),
    ),
    "a newer certificate replaces the current one": (
        (slot("default", OLD),),
        "default",
        NEW,
        (slot("default", NEW),),
    ),
    "a newer certificate replaces an expired one": (
        (slot("default", cert("0a", EXPIRED, issued=NOW - YEAR)),),
        "default",
        NEW,
        (slot("default", NEW),),
    ),
    "a late event about an older certificate changes nothing": (
        (slot("default", NEW),),
        "default",
        OLD,
        (slot("default", NEW),),
    ),
    "the same certificate again changes nothing": (
        (slot("default", NEW),),
        "default",
        NEW,
        (slot("default", NEW),),
    ),
    "same not_before: the later not_after wins": (
        (slot("default", NEW),),
        "default",
        SAME_START_LONGER,
        (slot("default", SAME_START_LONGER),),
    ),
    "same not_before: the shorter one does not displace it": (
        (slot("default", SAME_START_LONGER),),
        "default",
        NEW,
        (slot("default", SAME_START_LONGER),),
    ),
    "other slots are left alone": (
        (slot("default", OLD), slot("tpm", OLD)),
        "tpm",
        NEW,
        (slot("default", OLD), slot("tpm", NEW)),
    ),
    "an unregistered slot is added": (
        (slot("default", OLD),),
        "tpm",
        NEW,
        (slot("default", OLD), slot("tpm", NEW)),
    ),
}


@pytest.mark.parametrize(
    ("device_slots", "slot_name", "certificate", "expected"),
    BIND_CASES.values(),
    ids=list(BIND_CASES),
)
def test_bind_certificate(
    device_slots: Sequence[SlotState],
    slot_name: str,
    certificate: SlotCertificate,
    expected: tuple[SlotState, ...],
) -> None:
    """A slot holds the newest certificate enrolled into it, by not_before."""
    actual = bind_certificate(device_slots, slot_name, certificate)

    assert expected == actual


@pytest.mark.parametrize(
    "certificates",
    [(OLD, NEW, SAME_START_LONGER), (SAME_START_LONGER, NEW, OLD)],
    ids=["in issuance order", "in reverse order"],
)
def test_bind_certificate_ignores_arrival_order(
    certificates: Sequence[SlotCertificate],
) -> None:
    """The same enrollments leave the slot with the same certificate in any order."""
    expected = (slot("default", SAME_START_LONGER),)

    actual: tuple[SlotState, ...] = (slot("default"),)
    for certificate in certificates:
        actual = bind_certificate(actual, "default", certificate)

    assert expected == actual


# --- apply_certificate_status: certificate.status.update -----------------------------

STATUS_CASES: dict[
    str, tuple[CertificateStatus, str, CertificateStatus, CertificateStatus]
] = {
    "active to about to expire": (ACTIVE, "0a", ABOUT_TO_EXPIRE, ABOUT_TO_EXPIRE),
    "active to expired": (ACTIVE, "0a", EXPIRED, EXPIRED),
    "active to revoked": (ACTIVE, "0a", REVOKED, REVOKED),
    "about to expire to expired": (ABOUT_TO_EXPIRE, "0a", EXPIRED, EXPIRED),
    "about to expire to revoked": (ABOUT_TO_EXPIRE, "0a", REVOKED, REVOKED),
    "an unknown serial is ignored": (ACTIVE, "ff", REVOKED, ACTIVE),
    "a replayed update is ignored": (REVOKED, "0a", REVOKED, REVOKED),
    "expired is final": (EXPIRED, "0a", ACTIVE, EXPIRED),
    "revoked is final": (REVOKED, "0a", ACTIVE, REVOKED),
    "a stale about to expire does not undo a revocation": (
        REVOKED,
        "0a",
        ABOUT_TO_EXPIRE,
        REVOKED,
    ),
    "a stale about to expire does not undo an expiry": (
        EXPIRED,
        "0a",
        ABOUT_TO_EXPIRE,
        EXPIRED,
    ),
    "about to expire does not go back to active": (
        ABOUT_TO_EXPIRE,
        "0a",
        ACTIVE,
        ABOUT_TO_EXPIRE,
    ),
}


@pytest.mark.parametrize(
    ("current", "serial", "update", "expected_status"),
    STATUS_CASES.values(),
    ids=list(STATUS_CASES),
)
def test_apply_certificate_status(
    current: CertificateStatus,
    serial: str,
    update: CertificateStatus,
    expected_status: CertificateStatus,
) -> None:
    """A slot follows its certificate's status forward only, and only for its own serial."""
    device_slots = (slot("default", cert("0a", current)), slot("tpm", cert("0b")))
    expected = (slot("default", cert("0a", expected_status)), slot("tpm", cert("0b")))

    actual = apply_certificate_status(device_slots, serial, update)

    assert expected == actual


def test_superseded_certificate_does_not_degrade_the_device() -> None:
    """Revoking the certificate a re-enrollment replaced leaves the device provisioned."""
    expected = DeviceStatus.FULLY_PROVISIONED
    enrolled = bind_certificate((slot("default"),), "default", OLD)
    reenrolled = bind_certificate(enrolled, "default", NEW)

    superseded = apply_certificate_status(reenrolled, OLD.serial, REVOKED)
    actual = derive_status(superseded, decommissioned=False)

    assert expected == actual
