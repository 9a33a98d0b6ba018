"""Failures of the DMS worker, each a subclass of the shared tree in ``runtime.errors``.

Failure
 ├── NotFound ───── DMSNotFound, CANotFound
 ├── Conflict ───── DMSExists, AlreadyRevoked, DMSRevoked
 ├── Invalid ────── BadCSR, BadClientCertificate, InternalCARefused
 ├── Unauthorized ─ NoClientCertificate
 ├── Forbidden ──── EnrollmentForbidden
 └── Transient ──── CAWorkerUnavailable
"""

from __future__ import annotations

from runtime.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Transient,
    Unauthorized,
)

__all__ = [
    "AlreadyRevoked",
    "BadCSR",
    "BadClientCertificate",
    "CANotFound",
    "CAWorkerUnavailable",
    "DMSExists",
    "DMSNotFound",
    "DMSRevoked",
    "EnrollmentForbidden",
    "InternalCARefused",
    "NoClientCertificate",
]


class DMSNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no DMS named {name!r}")


class CANotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no CA named {name!r}")


class DMSExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"a DMS named {name!r} already exists")


class AlreadyRevoked(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"DMS {name!r} is already revoked")


class DMSRevoked(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"DMS {name!r} is revoked: its allow-list cannot change")


class BadCSR(Invalid):
    """The CSR is garbage, its signature does not verify, or its CN is no device id."""


class BadClientCertificate(Invalid):
    """The gateway passed a client certificate that is not PEM X.509."""


class InternalCARefused(Invalid):
    def __init__(self, name: str) -> None:
        super().__init__(f"CA {name!r} is internal: no DMS may enroll devices with it")


class NoClientCertificate(Unauthorized):
    """RFC 7030 §3.3.2: enrollment needs a TLS client certificate."""


class EnrollmentForbidden(Forbidden):
    """Authenticated, but this client may not have this CSR signed by this CA."""


class CAWorkerUnavailable(Transient):
    """The CA worker did not answer in time, or nothing consumes its queue."""
