"""Failures of the cloud proxy, each a subclass of the shared tree in ``runtime.errors``.

Failure
 ├── Invalid ── UnknownConnector
 └── Transient ── ProviderUnavailable   (unreachable, throttled, 5xx: retried with backoff)
ProviderRefused                          (the platform said no: retried with backoff too,
                                          since an operator may fix a policy or a group)
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime.errors import Invalid, Transient

__all__ = [
    "ProviderError",
    "ProviderRefused",
    "ProviderUnavailable",
    "UnknownConnector",
]


class UnknownConnector(Invalid):
    def __init__(self, name: str, configured: Iterable[str]) -> None:
        known = ", ".join(sorted(configured)) or "none (set CLOUD_CONNECTORS)"
        super().__init__(f"no connector named {name!r}; configured: {known}")


class ProviderError(Exception):
    """A provider call failed; ``str()`` is one line naming the call and the cause."""


class ProviderUnavailable(ProviderError, Transient):  # noqa: N818 - names the outcome, like Transient
    """The platform could not be reached, throttled us, or failed on its side."""


class ProviderRefused(ProviderError):  # noqa: N818 - names the outcome
    """The platform refused the request (permissions, a missing policy or group...)."""
