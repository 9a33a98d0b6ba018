"""Failures of the CA worker, each a subclass of the shared tree in ``runtime.errors``.

Failure
 ├── NotFound ── CANotFound, CertificateNotFound, SweepNotFound, ProfileNotFound
 ├── Conflict ── CAExists, AlreadyRevoked, CAUnusable, SlotContended, ProfileExists
 ├── Forbidden ─ PresentedCertificateRefused, SlotRefused, InternalCAProtected,
 │              ProfileViolated, PathLengthExceeded
 ├── Invalid ─── BadCSR, EngineNotConfigured, EngineMismatch
 └── Unavailable CAKeyMissing
"""

from __future__ import annotations

from runtime.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable

__all__ = [
    "AlreadyRevoked",
    "BadCSR",
    "CAExists",
    "CAKeyMissing",
    "CANotFound",
    "CAUnusable",
    "CertificateNotFound",
    "EngineMismatch",
    "EngineNotConfigured",
    "InternalCAProtected",
    "PathLengthExceeded",
    "PresentedCertificateRefused",
    "ProfileExists",
    "ProfileNotFound",
    "ProfileViolated",
    "SlotContended",
    "SlotRefused",
    "SweepNotFound",
]


class CANotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no CA named {name!r}")


class CertificateNotFound(NotFound):
    def __init__(self, serial: str) -> None:
        super().__init__(f"no certificate with serial {serial}")


class CAExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"a CA named {name!r} already exists")


class AlreadyRevoked(Conflict):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is already revoked")


class CAUnusable(Conflict):
    """The CA exists but cannot sign: revoked or expired."""


class BadCSR(Invalid):
    """The CSR is garbage, or its signature does not verify."""


class PresentedCertificateRefused(Forbidden):
    """A re-enrolling device presented a certificate this CA does not vouch for now."""


class InternalCAProtected(Forbidden):
    """A change to LAMASSU-DMS-MANAGER that disables every DMS, asked without force."""


class ProfileNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no issuance profile named {name!r}")


class ProfileExists(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"an issuance profile named {name!r} already exists")


class ProfileViolated(Forbidden):
    """The CSR or the request asks for what the issuance profile does not allow."""


class PathLengthExceeded(Forbidden):
    """A CA below a parent whose pathLenConstraint allows no more (RFC 5280 §4.2.1.9)."""


class SlotRefused(Forbidden):
    """An enrollment may not fill its device slot (ca_worker.slots)."""


class SlotContended(Conflict):
    """A batch asked twice for one slot: its requests are decided one at a time."""


class EngineNotConfigured(Invalid):
    """A CA was asked for on an engine this CA worker has not opened."""

    def __init__(self, engine: str, configured: list[str]) -> None:
        super().__init__(
            f"engine {engine!r} is not configured in the CA worker "
            f"(ENGINE/ENGINES: {', '.join(configured)})"
        )


class EngineMismatch(Invalid):
    """A subordinate CA and its parent are on engines that cannot sign for each other."""


class SweepNotFound(NotFound):
    def __init__(self, sweep_id: str) -> None:
        super().__init__(f"no sweep with id {sweep_id}")


class CAKeyMissing(Unavailable):
    """The CA's key is not in its engine (GOPEM_DATA pointing elsewhere, another
    token): answered at once, since retrying cannot bring the key back."""

    def __init__(self, ca: str, engine: str) -> None:
        super().__init__(
            f"CA {ca!r} cannot sign: its key is not in engine {engine!r} "
            "(check that engine's settings, e.g. GOPEM_DATA or PKCS11_LABEL)"
        )
