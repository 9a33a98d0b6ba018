"""Failures of the device worker, each a subclass of the shared tree in ``runtime.errors``.

Failure
 ├── NotFound ── DeviceNotFound, DMSNotFound
 └── Conflict ── DeviceExists, AlreadyDecommissioned, DMSRevoked
"""

from __future__ import annotations

from runtime.errors import Conflict, NotFound

__all__ = [
    "AlreadyDecommissioned",
    "DMSNotFound",
    "DMSRevoked",
    "DeviceExists",
    "DeviceNotFound",
]


class DeviceNotFound(NotFound):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"no device with id {device_id!r}")


class DeviceExists(Conflict):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"a device with id {device_id!r} already exists")


class AlreadyDecommissioned(Conflict):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is already decommissioned")


class DMSNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"no DMS named {name!r}: a device is registered for an existing DMS"
        )


class DMSRevoked(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"DMS {name!r} is revoked: no device is registered for it")
