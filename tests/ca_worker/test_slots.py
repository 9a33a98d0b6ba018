"""The slot rules of enrollment (ca_worker.slots), pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ca_worker.slots import SlotHolder, repeated_slots, slot_refusal
from contracts.ca import CertificateStatus, IssueCertificate

NOW = datetime(2030, 1, 1, tzinfo=UTC)
LIVE = SlotHolder("0a", CertificateStatus.ACTIVE, NOW + timedelta(days=30))


def issue(**fields: object) -> IssueCertificate:
    base: dict[str, object] = {
        "ca": "ca",
        "csr_pem": "-",
        "request_id": "ab" * 32,
        "device_id": "pump-1",
        "dms": "dms-a",
    }
    return IssueCertificate.model_validate(base | fields)


@pytest.mark.parametrize(
    ("holder", "allow_replace", "refused"),
    [
        (None, False, False),
        (LIVE, False, True),
        (LIVE, True, False),
        (SlotHolder("0a", CertificateStatus.REVOKED, LIVE.not_after), False, False),
        (SlotHolder("0a", CertificateStatus.ACTIVE, NOW), False, False),
        (
            SlotHolder("0a", CertificateStatus.ABOUT_TO_EXPIRE, LIVE.not_after),
            False,
            True,
        ),
    ],
    ids=["empty", "live", "live-allowed", "revoked", "expired-now", "about-to-expire"],
)
def test_enrollment_into_a_slot(
    holder: SlotHolder | None,
    allow_replace: bool,
    refused: bool,
) -> None:
    """simpleenroll fills an empty or dead slot; a live one only when the DMS allows."""
    reason = slot_refusal(issue(allow_replace=allow_replace), holder, NOW)
    assert refused == (reason is not None)
    if reason is not None:
        assert "holds the live certificate 0a" in reason
        assert "'dms-a'" in reason


def test_repeated_slots() -> None:
    """Two requests for one slot in one batch are found, others are not."""
    commands = [
        issue(),
        issue(slot="tpm"),
        issue(device_id="pump-2"),
        issue(request_id="cd" * 32),
    ]
    assert [("pump-1", "default")] == repeated_slots(commands)


@pytest.mark.parametrize(
    ("holder", "refused"),
    [
        (LIVE, False),
        (SlotHolder("0b", CertificateStatus.ACTIVE, LIVE.not_after), True),
        (None, True),
    ],
    ids=["current", "superseded", "no-slot"],
)
def test_only_the_current_certificate_renews(
    holder: SlotHolder | None,
    refused: bool,
) -> None:
    """simplereenroll presenting anything but the slot's current certificate is refused."""
    reason = slot_refusal(issue(replaces="0a", dms=None), holder, NOW)
    assert refused == (reason is not None)
    if reason is not None:
        assert "only the slot's current certificate may re-enroll" in reason
        assert "not 0a" in reason
