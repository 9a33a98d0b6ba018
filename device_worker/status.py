"""Pure device status: which certificate each slot holds, and what that makes the device.

No I/O and no clock: certificate events come in as values, and every function returns
new slot states. Delivery is at least once and unordered, so each step is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from contracts.ca import CertificateStatus
from contracts.devices import DeviceStatus

__all__ = [
    "SlotCertificate",
    "SlotState",
    "apply_certificate_status",
    "bind_certificate",
    "derive_status",
]

_ACTIVE = CertificateStatus.ACTIVE
_ABOUT_TO_EXPIRE = CertificateStatus.ABOUT_TO_EXPIRE
_EXPIRED = CertificateStatus.EXPIRED
_REVOKED = CertificateStatus.REVOKED

# The status moves one way, so a late or replayed update never undoes a newer one.
# EXPIRED is final (RFC 5280 §4.1.2.5), and so is REVOKED while no command releases a
# certificateHold (RFC 5280 §5.3.1 removeFromCRL).
_NEXT: Mapping[CertificateStatus, frozenset[CertificateStatus]] = {
    _ACTIVE: frozenset({_ABOUT_TO_EXPIRE, _EXPIRED, _REVOKED}),
    _ABOUT_TO_EXPIRE: frozenset({_EXPIRED, _REVOKED}),
    _EXPIRED: frozenset(),
    _REVOKED: frozenset(),
}

_WARNINGS = frozenset({_EXPIRED, _REVOKED})


@dataclass(frozen=True, slots=True)
class SlotCertificate:
    """The certificate a slot holds, as far as status needs to know."""

    serial: str
    status: CertificateStatus
    not_before: datetime
    not_after: datetime
    # The serial a re-enrollment presented (RFC 7030 §4.2.2), if this certificate
    # renewed one: it outranks that certificate even when both start in the same second.
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class SlotState:
    """A named slot of a device and its current certificate, if it has one yet."""

    name: str
    certificate: SlotCertificate | None = None


def derive_status(slots: Sequence[SlotState], decommissioned: bool) -> DeviceStatus:
    """DESIGN §4, first match wins: decommissioned, warnings, action, full, pending.

    A device with some slots still empty is pending even if the others are active: it
    is not provisioned until every slot it was registered with holds a certificate.
    """
    if decommissioned:
        return DeviceStatus.DECOMMISSIONED
    statuses = [None if s.certificate is None else s.certificate.status for s in slots]
    if any(status in _WARNINGS for status in statuses):
        return DeviceStatus.PROVISIONED_WITH_WARNINGS
    if _ABOUT_TO_EXPIRE in statuses:
        return DeviceStatus.REQUIRES_ACTION
    if statuses and all(status is _ACTIVE for status in statuses):
        return DeviceStatus.FULLY_PROVISIONED
    return DeviceStatus.PENDING_PROVISIONING


def _newer(candidate: SlotCertificate, current: SlotCertificate) -> bool:
    # A renewal outranks the certificate it replaced, whatever their validity; X.509
    # times have one-second precision, so a quick re-enrollment may start together.
    if candidate.replaces == current.serial:
        return True
    if current.replaces == candidate.serial:
        return False
    # Newest not_before wins; not_after and then the serial break ties, so the same set
    # of enrollments ends in the same slot whatever order their events arrive in.
    return (candidate.not_before, candidate.not_after, candidate.serial) > (
        current.not_before,
        current.not_after,
        current.serial,
    )


def _take(state: SlotState, certificate: SlotCertificate) -> SlotState:
    current = state.certificate
    if current is None or _newer(certificate, current):
        return replace(state, certificate=certificate)
    return state


def _set_status(state: SlotState, status: CertificateStatus) -> SlotState:
    current = state.certificate
    if current is None or status not in _NEXT[current.status]:
        return state
    return replace(state, certificate=replace(current, status=status))


def bind_certificate(
    slots: Sequence[SlotState], slot: str, certificate: SlotCertificate
) -> tuple[SlotState, ...]:
    """The slots after ``certificate`` was (re-)enrolled into ``slot``.

    The slot keeps whichever certificate is newer, so a late event about an older
    enrollment changes nothing. A slot the device was not registered with is added:
    the DMS authorized the enrollment, and the CSR CN named the slot (DESIGN §3).
    """
    if all(state.name != slot for state in slots):
        return (*slots, SlotState(slot, certificate))
    return tuple(
        _take(state, certificate) if state.name == slot else state for state in slots
    )


def apply_certificate_status(
    slots: Sequence[SlotState], serial: str, status: CertificateStatus
) -> tuple[SlotState, ...]:
    """The slots after certificate ``serial`` took ``status``.

    Only a slot currently holding ``serial`` changes, so an update about a certificate
    the device never had, or one a re-enrollment superseded, leaves it as it was.
    """
    return tuple(
        _set_status(state, status)
        if state.certificate is not None and state.certificate.serial == serial
        else state
        for state in slots
    )
