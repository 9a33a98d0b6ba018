"""The interface a cloud IoT platform offers the proxy; ``aws.py`` is its one provider.

Every method is idempotent or says what it found, so that a step repeated after a crash
or a timeout does no harm. Failures are ``ProviderUnavailable`` (retry later) or
``ProviderRefused`` (the platform said no), each with one line of reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cloud_proxy.sync import RemoteCertificate, RemoteState

__all__ = ["CloudProvider"]


class CloudProvider(Protocol):
    async def registration_code(self) -> str:
        """The code a BYO-CA verification certificate must carry as its CN."""

    async def ca_status(self, ca_id: str) -> str | None:
        """The CA certificate's status, or None when it is not registered."""

    async def register_ca(
        self,
        certificate_pem: str,
        *,
        status: str,
        verification_pem: str | None,
        sni_only: bool,
        template: str | None,
        role_arn: str | None,
    ) -> str:
        """Register a CA certificate; its id."""

    async def set_ca_status(self, ca_id: str, status: str) -> None: ...

    async def certificate(self, certificate_id: str) -> RemoteCertificate | None:
        """A device certificate, or None when it is not registered."""

    async def register_certificate(
        self, certificate_pem: str, *, ca_pem: str | None, status: str
    ) -> RemoteCertificate:
        """Register a device certificate (with its CA, unless ``ca_pem`` is None)."""

    async def set_certificate_status(
        self, certificate_id: str, status: str
    ) -> None: ...

    async def delete_certificate(self, certificate_id: str) -> None: ...

    async def ensure_thing(self, name: str, thing_group: str | None) -> None:
        """Create the thing unless it exists; add it to the group."""

    async def delete_thing(self, name: str) -> None:
        """Delete the thing if it exists and holds no principal."""

    async def attach_principal(self, thing: str, arn: str) -> None: ...

    async def detach_principal(self, thing: str, arn: str) -> None: ...

    async def principal_things(self, arn: str) -> list[str]: ...

    async def attach_policy(self, policy: str, arn: str) -> None: ...

    async def detach_policy(self, policy: str, arn: str) -> None: ...

    async def principal_policies(self, arn: str) -> list[str]: ...

    async def state(self, ca_ids: Sequence[str]) -> RemoteState:
        """The statuses of these CA certificates, and every device certificate and
        thing the account lists."""

    async def close(self) -> None: ...
