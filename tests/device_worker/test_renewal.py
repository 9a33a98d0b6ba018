"""Tests of renewals in the pure device status: a certificate outranks the one it replaced."""

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

# Issued in the same second with the same validity, so only `replaces` tells them
# apart; the renewal's serial sorts lower, which alone would lose the tie.
REPLACED = SlotCertificate("ff", CertificateStatus.ACTIVE, NOW, NOW + YEAR)
RENEWAL = SlotCertificate("01", CertificateStatus.ACTIVE, NOW, NOW + YEAR, "ff")


@pytest.mark.parametrize(
    "arrivals",
    [(REPLACED, RENEWAL), (RENEWAL, REPLACED)],
    ids=["in issuance order", "the replaced one arrives late"],
)
def test_renewal_takes_the_slot_in_any_arrival_order(
    arrivals: Sequence[SlotCertificate],
) -> None:
    """A renewal holds the slot even when it starts in the same second as its predecessor."""
    expected = (SlotState("default", RENEWAL),)

    actual: tuple[SlotState, ...] = (SlotState("default"),)
    for certificate in arrivals:
        actual = bind_certificate(actual, "default", certificate)

    assert expected == actual


def test_revoking_the_replaced_certificate_changes_nothing() -> None:
    """The replaced certificate's revocation leaves the renewed device fully provisioned."""
    slots = bind_certificate((SlotState("default", REPLACED),), "default", RENEWAL)

    revoked = apply_certificate_status(
        slots, REPLACED.serial, CertificateStatus.REVOKED
    )

    assert DeviceStatus.FULLY_PROVISIONED == derive_status(
        revoked, decommissioned=False
    )
