"""Which certificate each device slot holds, and the enrollment rules that follow.

No I/O: the caller locks and reads the slots (``slot_store``) and passes ``now``. A
slot's current certificate is the last one issued into it; simpleenroll replaces a
live one only when the DMS allows it, and only it may be renewed (issue 14).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from contracts.ca import CertificateStatus, IssueCertificate

__all__ = ["SlotHolder", "repeated_slots", "slot_key", "slot_refusal"]

_LIVE = {CertificateStatus.ACTIVE, CertificateStatus.ABOUT_TO_EXPIRE}


@dataclass(frozen=True, slots=True)
class SlotHolder:
    """The certificate a slot holds now."""

    serial: str
    status: CertificateStatus
    not_after: datetime

    def live(self, now: datetime) -> bool:
        return self.status in _LIVE and now < self.not_after


def slot_key(cmd: IssueCertificate) -> tuple[str, str]:
    return cmd.device_id, cmd.slot


def repeated_slots(commands: Iterable[IssueCertificate]) -> list[tuple[str, str]]:
    """Slots asked for more than once: such requests are decided one after the other."""
    counts = Counter(slot_key(cmd) for cmd in commands)
    return sorted(key for key, count in counts.items() if count > 1)


def slot_refusal(
    cmd: IssueCertificate, holder: SlotHolder | None, now: datetime
) -> str | None:
    """Why ``cmd`` may not fill its slot, or None when it may."""
    where = f"slot {cmd.slot!r} of device {cmd.device_id!r}"
    if cmd.replaces is None:
        if holder is None or not holder.live(now) or cmd.allow_replace:
            return None
        return (
            f"{where} holds the live certificate {holder.serial}; DMS {cmd.dms!r}"
            " does not allow simpleenroll to replace it (dms --allow-replace);"
            " the device re-enrolls with it instead"
        )
    # RFC 7030 §4.2.2 renews "the" current certificate: one superseded (still valid
    # when revoke-on-reenroll is off) renews nothing.
    if holder is None or holder.serial != cmd.replaces:
        held = "no certificate" if holder is None else f"certificate {holder.serial}"
        return (
            f"only the slot's current certificate may re-enroll: {where} holds"
            f" {held}, not {cmd.replaces}"
        )
    return None
