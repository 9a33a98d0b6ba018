"""AWS IoT Core behind ``CloudProvider``, on aiobotocore (async botocore).

Credentials and region come from the standard AWS chain (environment, shared config
and credentials files, container or instance roles); a connector may name a profile of
the shared config. ``endpoint_url`` points the client elsewhere (tests, air-gapped
sites). botocore's "standard" retry mode retries throttling and 5xx with exponential
backoff and jitter; what still fails is translated here, in ``_translated``, into
``ProviderUnavailable`` or ``ProviderRefused``.

Quirks: a certificate id is the SHA-256 of the DER certificate; a certificate must
be detached from things and policies and not ACTIVE before it can be deleted; a thing
can be deleted only once no principal is attached to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import Any, Literal, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from types_aiobotocore_iot.client import IoTClient

from cloud_proxy.errors import ProviderRefused, ProviderUnavailable
from cloud_proxy.sync import RemoteCertificate, RemoteState

__all__ = ["AwsIotProvider"]

# Error codes worth another try later (AWS IoT API reference, "Common errors").
_RETRYABLE = {
    "ThrottlingException",
    "Throttling",
    "ServiceUnavailableException",
    "InternalFailureException",
    "InternalException",
    "LimitExceededException",
    "RequestTimeout",
}
_NOT_FOUND = "ResourceNotFoundException"
_EXISTS = "ResourceAlreadyExistsException"
_PAGE = 250  # the largest page the IoT list calls accept


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translated(call: str) -> Iterator[None]:
    """botocore's exceptions, as the proxy's two kinds, with one line of reason."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        message = exc.response.get("Error", {}).get("Message", "") or code
        line = f"{call}: {code}: {message}".replace("\n", " ")
        if code in _RETRYABLE or status >= 500:
            raise ProviderUnavailable(line) from None
        raise ProviderRefused(line) from None
    except (BotoConnectionError, HTTPClientError) as exc:
        raise ProviderUnavailable(f"{call}: {exc}") from None
    except BotoCoreError as exc:  # no credentials, no region, a bad parameter
        raise ProviderRefused(f"{call}: {exc}") from None


class AwsIotProvider:
    """One AWS account and region; ``open`` makes the client, ``close`` ends it."""

    def __init__(self, client: IoTClient, stack: AsyncExitStack) -> None:
        self._client = client
        self._stack = stack

    @classmethod
    async def open(
        cls,
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_attempts: int = 3,
    ) -> AwsIotProvider:
        session = AioSession(profile=profile)
        config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=20,
        )
        stack = AsyncExitStack()
        with _translated("create_client"):
            client = await stack.enter_async_context(
                session.create_client(
                    "iot", region_name=region, endpoint_url=endpoint_url, config=config
                )
            )
        return cls(client, stack)

    async def close(self) -> None:
        await self._stack.aclose()

    # --- CA certificates -------------------------------------------------------------

    async def registration_code(self) -> str:
        with _translated("get_registration_code"):
            return (await self._client.get_registration_code())["registrationCode"]

    async def ca_status(self, ca_id: str) -> str | None:
        try:
            with _translated("describe_ca_certificate"):
                found = await self._client.describe_ca_certificate(certificateId=ca_id)
        except ProviderRefused as exc:
            if _NOT_FOUND in str(exc):
                return None
            raise
        return str(found["certificateDescription"]["status"])

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
        arguments: dict[str, Any] = {
            "caCertificate": certificate_pem,
            "setAsActive": status == "ACTIVE",
            "certificateMode": "SNI_ONLY" if sni_only else "DEFAULT",
        }
        if verification_pem is not None:
            arguments["verificationCertificate"] = verification_pem
        if template is not None:
            arguments["allowAutoRegistration"] = True
            registration: dict[str, str] = {"templateBody": template}
            if role_arn is not None:
                registration["roleArn"] = role_arn
            arguments["registrationConfig"] = registration
        with _translated("register_ca_certificate"):
            found = await self._client.register_ca_certificate(**arguments)
        return found["certificateId"]

    async def set_ca_status(self, ca_id: str, status: str) -> None:
        with _translated("update_ca_certificate"):
            await self._client.update_ca_certificate(
                certificateId=ca_id,
                newStatus=cast("Literal['ACTIVE', 'INACTIVE']", status),
            )

    # --- device certificates ---------------------------------------------------------

    async def certificate(self, certificate_id: str) -> RemoteCertificate | None:
        try:
            with _translated("describe_certificate"):
                found = await self._client.describe_certificate(
                    certificateId=certificate_id
                )
        except ProviderRefused as exc:
            if _NOT_FOUND in str(exc):
                return None
            raise
        description = found["certificateDescription"]
        return RemoteCertificate(
            description["certificateId"],
            description["certificateArn"],
            str(description["status"]),
        )

    async def register_certificate(
        self, certificate_pem: str, *, ca_pem: str | None, status: str
    ) -> RemoteCertificate:
        new_status = cast("Any", status)
        with _translated("register_certificate"):
            if ca_pem is None:
                found = await self._client.register_certificate_without_ca(
                    certificatePem=certificate_pem, status=new_status
                )
            else:
                found = await self._client.register_certificate(
                    certificatePem=certificate_pem,
                    caCertificatePem=ca_pem,
                    status=new_status,
                )
        return RemoteCertificate(
            found["certificateId"], found["certificateArn"], status
        )

    async def set_certificate_status(self, certificate_id: str, status: str) -> None:
        with _translated("update_certificate"):
            await self._client.update_certificate(
                certificateId=certificate_id, newStatus=cast("Any", status)
            )

    async def delete_certificate(self, certificate_id: str) -> None:
        with _translated("delete_certificate"):
            await self._client.delete_certificate(certificateId=certificate_id)

    # --- things, principals, policies ------------------------------------------------

    async def ensure_thing(self, name: str, thing_group: str | None) -> None:
        try:
            with _translated("describe_thing"):
                await self._client.describe_thing(thingName=name)
        except ProviderRefused as exc:
            if _NOT_FOUND not in str(exc):
                raise
            with _translated("create_thing"):
                await self._client.create_thing(thingName=name)
        if thing_group is not None:
            # AWS ignores adding a thing to a group it is in already.
            with _translated("add_thing_to_thing_group"):
                await self._client.add_thing_to_thing_group(
                    thingGroupName=thing_group, thingName=name
                )

    async def delete_thing(self, name: str) -> None:
        try:
            with _translated("list_thing_principals"):
                principals = [
                    arn
                    async for page in self._pages(
                        "list_thing_principals", thingName=name
                    )
                    for arn in page.get("principals", [])
                ]
        except ProviderRefused as exc:
            if _NOT_FOUND in str(exc):
                return
            raise
        if principals:
            return  # another slot's certificate still uses it
        try:
            with _translated("delete_thing"):
                await self._client.delete_thing(thingName=name)
        except ProviderRefused as exc:
            if _NOT_FOUND not in str(exc):
                raise

    async def attach_principal(self, thing: str, arn: str) -> None:
        with _translated("attach_thing_principal"):
            await self._client.attach_thing_principal(thingName=thing, principal=arn)

    async def detach_principal(self, thing: str, arn: str) -> None:
        with _translated("detach_thing_principal"):
            await self._client.detach_thing_principal(thingName=thing, principal=arn)

    async def principal_things(self, arn: str) -> list[str]:
        with _translated("list_principal_things"):
            return [
                name
                async for page in self._pages("list_principal_things", principal=arn)
                for name in page.get("things", [])
            ]

    async def attach_policy(self, policy: str, arn: str) -> None:
        with _translated("attach_policy"):
            await self._client.attach_policy(policyName=policy, target=arn)

    async def detach_policy(self, policy: str, arn: str) -> None:
        with _translated("detach_policy"):
            await self._client.detach_policy(policyName=policy, target=arn)

    async def principal_policies(self, arn: str) -> list[str]:
        with _translated("list_attached_policies"):
            return [
                policy["policyName"]
                async for page in self._pages("list_attached_policies", target=arn)
                for policy in page.get("policies", [])
                if "policyName" in policy
            ]

    # --- listing ---------------------------------------------------------------------

    async def state(self, ca_ids: Sequence[str]) -> RemoteState:
        # CA certificates are described one by one: a connector holds a few, and
        # ListCACertificates is missing from the local endpoint the tests use (moto).
        cas = {
            ca_id: status
            for ca_id in ca_ids
            if (status := await self.ca_status(ca_id)) is not None
        }
        with _translated("list_certificates"):
            certificates = {
                c["certificateId"]: str(c["status"])
                async for page in self._pages("list_certificates", pageSize=_PAGE)
                for c in page.get("certificates", [])
            }
        with _translated("list_things"):
            things = {
                t["thingName"]
                async for page in self._pages("list_things", maxResults=_PAGE)
                for t in page.get("things", [])
            }
        return RemoteState(cas, certificates, frozenset(things))

    async def _pages(self, operation: str, **arguments: Any) -> AsyncIterator[Any]:
        paginator: Any = self._client.get_paginator(operation)  # type: ignore[call-overload]
        async for page in paginator.paginate(**arguments):
            yield page
