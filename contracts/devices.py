"""Commands, queries, results and events of the device side.

A device has named slots, each holding at most one current certificate; its status is
derived from theirs (DESIGN §4). Event types follow the original system:
``device.create``, ``device.status.update``, ``device.identity.update``; and
``device.decommissioned``, which has no equivalent there.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, Field, field_validator

from contracts.ca import CertificateStatus
from contracts.message import Message, Model, Update
from contracts.pki import DEFAULT_SLOT
from contracts.pki import NAME_PATTERN as _NAME

__all__ = [
    "DecommissionDevice",
    "DeviceCreated",
    "DeviceDecommissioned",
    "DeviceIdentityUpdate",
    "DeviceStatus",
    "DeviceStatusUpdate",
    "DeviceView",
    "Devices",
    "GetDevice",
    "ListDevices",
    "RegisterDevice",
    "SlotView",
]

_DeviceId = Annotated[str, Field(pattern=_NAME)]
_SlotName = Annotated[str, Field(pattern=_NAME)]


class DeviceStatus(enum.StrEnum):
    """DESIGN §4; precedence, highest first: DECOMMISSIONED, PROVISIONED_WITH_WARNINGS,
    REQUIRES_ACTION, FULLY_PROVISIONED, PENDING_PROVISIONING.
    """

    PENDING_PROVISIONING = "PENDING_PROVISIONING"
    FULLY_PROVISIONED = "FULLY_PROVISIONED"
    PROVISIONED_WITH_WARNINGS = "PROVISIONED_WITH_WARNINGS"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    DECOMMISSIONED = "DECOMMISSIONED"


# --- commands and queries (routed on lamassu.commands) -----------------------------


class RegisterDevice(Message):
    """Register a device ahead of its first enrollment, with the slots it will fill."""

    TYPE: ClassVar[str] = "device.register"
    id: _DeviceId
    dms: str | None = Field(default=None, pattern=_NAME)
    slots: list[_SlotName] = Field(default_factory=lambda: [DEFAULT_SLOT], min_length=1)

    @field_validator("slots")
    @classmethod
    def _distinct(cls, slots: list[str]) -> list[str]:
        if twice := sorted(name for name, count in Counter(slots).items() if count > 1):
            raise ValueError(f"slots lists {', '.join(twice)} more than once")
        return slots


class DecommissionDevice(Message):
    """Retire a device for good; its certificates are revoked (cessationOfOperation)."""

    TYPE: ClassVar[str] = "device.decommission"
    id: str = Field(min_length=1, max_length=64)


class GetDevice(Message):
    TYPE: ClassVar[str] = "device.get"
    id: str = Field(min_length=1, max_length=64)


class ListDevices(Message):
    TYPE: ClassVar[str] = "device.list"
    status: DeviceStatus | None = None
    limit: int = Field(default=100, gt=0, le=1000)
    after: str | None = Field(default=None, description="Device id to page after.")


# --- results and event payloads ------------------------------------------------------


class SlotView(Model):
    """A slot and its current certificate, if it has one yet."""

    name: str
    certificate_serial: str | None = None
    certificate_status: CertificateStatus | None = None
    not_after: AwareDatetime | None = None


class DeviceView(Model):
    """A device as replies and events show it (``device.create`` data)."""

    id: str
    dms: str | None
    status: DeviceStatus
    slots: list[SlotView]
    created_at: AwareDatetime
    decommissioned_at: AwareDatetime | None = None


class Devices(Model):
    items: list[DeviceView]


# --- events (published on lamassu.events) -------------------------------------------


class DeviceCreated(DeviceView, Message):
    """``device.create``: a device was registered, or created by its first
    certificate (its data is the device's view)."""

    TYPE: ClassVar[str] = "device.create"


class DeviceDecommissioned(DeviceView, Message):
    """``device.decommissioned``: a device was retired for good. Published besides its
    ``device.status.update`` so that a consumer needing only decommissions (the DMS
    worker) binds this key and is not sent every enrollment's status change."""

    TYPE: ClassVar[str] = "device.decommissioned"


class DeviceStatusUpdate(Update[DeviceView]):
    """``device.status.update``: a device's status moved."""

    TYPE: ClassVar[str] = "device.status.update"


class DeviceIdentityUpdate(Update[DeviceView]):
    """``device.identity.update``: a slot took a new certificate."""

    TYPE: ClassVar[str] = "device.identity.update"
