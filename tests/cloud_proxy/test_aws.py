"""The AWS IoT Core provider against a local endpoint: what it registers is what boto3
sees; missing things are None; refusals and outages are the proxy's two failures.

moto gaps the provider is designed around: ListCACertificates is not implemented (CA
statuses are described one by one) and RegisterCACertificate does not check the
verification certificate (the verification path is tested up to what AWS receives).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from cloud_proxy.aws import AwsIotProvider
from cloud_proxy.errors import ProviderRefused, ProviderUnavailable
from cloud_proxy.sync import certificate_id
from tests.cloud_proxy.local_iot import REGION, LocalIot, local_iot
from tests.cloud_proxy.test_sync import _pem


@pytest.fixture(scope="module")
def own_iot() -> Iterator[LocalIot]:
    with local_iot() as found:
        yield found


@pytest.fixture
async def provider(own_iot: LocalIot) -> AsyncIterator[AwsIotProvider]:
    opened = await AwsIotProvider.open(
        region=REGION, endpoint_url=own_iot.url, max_attempts=1
    )
    yield opened
    await opened.close()


async def test_register_attach_list_and_remove(
    provider: AwsIotProvider, own_iot: LocalIot
) -> None:
    """A CA, a device certificate with thing, principal and policy, as boto3 sees them."""
    ca_pem, device_pem = _pem("ca-under-test"), _pem("device-under-test")
    ca_id = certificate_id(ca_pem)
    assert None is await provider.ca_status(ca_id)
    assert ca_id == await provider.register_ca(
        ca_pem,
        status="ACTIVE",
        verification_pem=_pem(await provider.registration_code()),
        sni_only=False,
        template=None,
        role_arn=None,
    )
    assert "ACTIVE" == own_iot.ca_status(ca_id)

    remote = await provider.register_certificate(
        device_pem, ca_pem=ca_pem, status="ACTIVE"
    )
    assert certificate_id(device_pem) == remote.id
    assert [remote.id] == own_iot.certificates_by_ca(ca_id)
    own_iot.client().create_policy(policyName="aws-test", policyDocument="{}")
    await provider.ensure_thing("device-under-test", None)
    await provider.ensure_thing("device-under-test", None)  # idempotent
    await provider.attach_principal("device-under-test", remote.arn)
    await provider.attach_policy("aws-test", remote.arn)
    assert ["device-under-test"] == await provider.principal_things(remote.arn)
    assert ["aws-test"] == await provider.principal_policies(remote.arn)

    state = await provider.state([ca_id])
    assert {ca_id: "ACTIVE"} == dict(state.cas)
    assert "ACTIVE" == state.certificates[remote.id]
    assert "device-under-test" in state.things

    await provider.delete_thing("device-under-test")  # still holds a principal: kept
    assert [remote.arn] == own_iot.thing_principals("device-under-test")
    await provider.detach_policy("aws-test", remote.arn)
    await provider.detach_principal("device-under-test", remote.arn)
    await provider.set_certificate_status(remote.id, "INACTIVE")
    await provider.delete_certificate(remote.id)
    await provider.delete_thing("device-under-test")
    await provider.delete_thing("device-under-test")  # gone already: nothing to do
    assert None is await provider.certificate(remote.id)
    assert None is own_iot.thing_principals("device-under-test")


async def test_refusal_is_one_line(provider: AwsIotProvider) -> None:
    """The platform saying no (an unknown policy) is ProviderRefused, one line."""
    remote = await provider.register_certificate(
        _pem("refused"), ca_pem=None, status="ACTIVE"
    )
    with pytest.raises(ProviderRefused) as caught:
        await provider.attach_policy("no-such-policy", remote.arn)
    assert str(caught.value).startswith("attach_policy: ResourceNotFoundException")
    assert "\n" not in str(caught.value)


async def test_unreachable_is_unavailable() -> None:
    """Nothing listening: ProviderUnavailable, naming the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = await AwsIotProvider.open(
        region=REGION, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1
    )
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.certificate("ab" * 32)
        assert str(caught.value).startswith("describe_certificate: Could not connect")
    finally:
        await provider.close()


async def test_throttling_is_retried_then_unavailable(own_iot: LocalIot) -> None:
    """AWS throttling (HTTP 429) is retried by botocore's standard mode, each time,
    and what still fails is ProviderUnavailable."""
    calls = 0

    async def throttled(_request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(
            {"message": "Rate exceeded"},
            status=429,
            headers={"x-amzn-ErrorType": "ThrottlingException"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", throttled)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    provider = await AwsIotProvider.open(
        region=REGION, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=3
    )
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await asyncio.wait_for(provider.registration_code(), 30)
        assert "ThrottlingException" in str(caught.value)
        assert 3 == calls
    finally:
        await provider.close()
        await runner.cleanup()
    assert own_iot.url  # the module's endpoint was untouched by this test
