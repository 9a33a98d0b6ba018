"""The cloud proxy end to end: devices enroll over EST through the real workers, and a
local AWS IoT endpoint (moto server) shows what AWS would see after each step, after
an outage, and after changes made behind the proxy's back.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography import x509

from cloud_proxy.sync import certificate_id
from contracts.ca import RevokeCertificate
from contracts.cloud import Reconcile
from contracts.devices import DecommissionDevice
from tests.cloud_proxy.stack import (
    CONNECTOR,
    GROUP,
    POLICY,
    World,
    arn_of,
    aws_id,
    cloud_settings,
    connect,
    enroll,
    reenroll,
    serial,
    serve_cloud_default,
    settled,
    status,
    until,
)
from tests.conftest import (
    Backends,
    running,
)
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_lifecycle_reaches_aws(world: World) -> None:
    """CA registered; an EST enrollment makes thing and ACTIVE certificate (policy,
    group); re-enrollment activates the new one and deactivates the old; revocation
    sets REVOKED; decommissioning leaves nothing of the device."""
    stage = await world.stage()
    await connect(world, stage.ca, policy=POLICY, thing_group=GROUP)
    # BYO-CA: the ownership proof was signed by the CA worker, with the CA's key.
    (proof,) = await until(
        lambda: [
            e.data
            for e in world.events.events
            if e.type == "certificate.create"
            and e.data["ca"] == stage.ca.name
            and e.data["device_id"] is None
        ]
    )
    issued = x509.load_pem_x509_certificate(proof["certificate_pem"].encode())
    issued.verify_directly_issued_by(
        x509.load_pem_x509_certificate(stage.ca.certificate_pem.encode())
    )
    device_id = unique("sensor")

    first, identity = await enroll(world, stage, device_id)
    assert "ACTIVE" == await until(lambda: world.iot.certificate_status(aws_id(first)))
    await settled(world)
    assert [arn_of(world, first)] == world.iot.thing_principals(device_id)
    assert [POLICY] == world.iot.policies(arn_of(world, first))
    assert [GROUP] == world.iot.thing_groups(device_id)
    ca_id = certificate_id(stage.ca.certificate_pem)
    assert [aws_id(first)] == world.iot.certificates_by_ca(ca_id)

    second = await reenroll(stage, device_id, identity)
    # The DMS revokes what a renewal supersedes (revoke-on-reenroll, on by default):
    # AWS stops accepting the old certificate for good, not just for now (INACTIVE).
    assert "REVOKED" == await until(
        lambda: world.iot.certificate_status(aws_id(first)) == "REVOKED" and "REVOKED"
    )
    assert "ACTIVE" == world.iot.certificate_status(aws_id(second))

    reply = await call(world.bus, RevokeCertificate(serial=serial(second)))
    assert reply.ok, reply.error
    assert await until(
        lambda: world.iot.certificate_status(aws_id(second)) == "REVOKED"
    )

    reply = await call(world.bus, DecommissionDevice(id=device_id))
    assert reply.ok, reply.error
    assert await until(lambda: world.iot.thing_principals(device_id) is None)
    assert None is world.iot.certificate_status(aws_id(first))
    assert None is world.iot.certificate_status(aws_id(second))
    assert [] == world.iot.certificates_by_ca(ca_id)
    done = await settled(world)
    assert done.synced >= 3


async def test_outage_heals_without_duplicates(world: World) -> None:
    """With the endpoint down, an enrollment and a revocation fail to sync and say so
    (cloud.sync.failed, status); once it is back, reconciliation converges and AWS
    holds each certificate and thing once."""
    stage = await world.stage()
    await connect(world, stage.ca, policy=POLICY)
    ca_id = certificate_id(stage.ca.certificate_pem)
    kept_id, gone_id = unique("kept"), unique("gone")
    gone, _ = await enroll(world, stage, gone_id)
    assert await until(lambda: world.iot.certificate_status(aws_id(gone)) == "ACTIVE")
    await settled(world)  # its thing too, before the outage
    assert [arn_of(world, gone)] == world.iot.thing_principals(gone_id)

    world.iot.stop()
    try:
        kept, _ = await enroll(world, stage, kept_id)
        reply = await call(world.bus, RevokeCertificate(serial=serial(gone)))
        assert reply.ok, reply.error
        failed = await world.events.wait_for(
            "cloud.sync.failed",
            f"cloud/{CONNECTOR}/certificate/{serial(kept)}",
            timeout=20,
        )
        assert "Could not connect" in failed.data["error"]
        async with asyncio.timeout(20):
            while (found := await status(world)).failed == 0:
                await asyncio.sleep(0.05)
        assert found.last_error is not None
    finally:
        world.iot.start()

    reply = await call(world.bus, Reconcile(connector=CONNECTOR))
    assert reply.ok, reply.error
    assert await until(lambda: world.iot.certificate_status(aws_id(kept)) == "ACTIVE")
    assert await until(lambda: world.iot.certificate_status(aws_id(gone)) == "REVOKED")
    await settled(world)
    assert sorted([aws_id(kept), aws_id(gone)]) == sorted(
        world.iot.certificates_by_ca(ca_id)
    )
    assert [arn_of(world, kept)] == world.iot.thing_principals(kept_id)
    assert 1 == world.iot.things().count(kept_id)
    assert 1 == world.iot.things().count(gone_id)


async def test_reconciliation_repairs_changes_behind_its_back(world: World) -> None:
    """A certificate deactivated and a thing's principal detached in AWS by hand (a
    lost event, say) are put back by a reconciliation."""
    stage = await world.stage()
    await connect(world, stage.ca, policy=POLICY)
    device_id = unique("drift")
    certificate, _ = await enroll(world, stage, device_id)
    assert await until(lambda: world.iot.thing_principals(device_id))
    await settled(world)
    client = world.iot.client()
    arn = arn_of(world, certificate)
    client.update_certificate(certificateId=aws_id(certificate), newStatus="INACTIVE")
    client.detach_thing_principal(thingName=device_id, principal=arn)
    client.delete_thing(thingName=device_id)

    reply = await call(world.bus, Reconcile())
    assert reply.ok, reply.error
    assert await until(
        lambda: world.iot.certificate_status(aws_id(certificate)) == "ACTIVE"
    )
    assert [arn] == await until(lambda: world.iot.thing_principals(device_id))
    found = await settled(world)
    assert found.last_reconciled_at is not None


async def test_connect_after_enrollment_backfills(world: World) -> None:
    """A CA connected after its devices enrolled: the proxy reads what it missed from
    the CA worker and registers those devices too."""
    stage = await world.stage()
    device_id = unique("early")
    certificate, _ = await enroll(world, stage, device_id)
    await connect(world, stage.ca, mode="sni-only")
    assert await until(
        lambda: world.iot.certificate_status(aws_id(certificate)) == "ACTIVE"
    )
    assert [arn_of(world, certificate)] == await until(
        lambda: world.iot.thing_principals(device_id)
    )
    # SNI_ONLY: the device certificate is registered without its CA.
    assert [] == world.iot.certificates_by_ca(certificate_id(stage.ca.certificate_pem))


async def test_jitp_registers_the_template_and_blocks_revoked(world: World) -> None:
    """JITP: the CA carries a provisioning template; live certificates are left for
    AWS to register at first connection, a revoked one is registered REVOKED."""
    stage = await world.stage()
    await connect(world, stage.ca, mode="jitp", policy=POLICY, thing_group=GROUP)
    ca_id = certificate_id(stage.ca.certificate_pem)
    found = world.iot.client().describe_ca_certificate(certificateId=ca_id)
    assert POLICY in found["registrationConfig"]["templateBody"]
    device_id = unique("jitp")
    certificate, _ = await enroll(world, stage, device_id)
    reply = await call(world.bus, RevokeCertificate(serial=serial(certificate)))
    assert reply.ok, reply.error
    assert await until(
        lambda: world.iot.certificate_status(aws_id(certificate)) == "REVOKED"
    )
    assert world.iot.thing_principals(device_id) is None


async def test_scheduled_reconciliation_by_a_second_replica(
    world: World, own_backends: Backends
) -> None:
    """A replica with a schedule claims the current period at start and reconciles:
    an item changed in AWS behind the proxy's back is put back, by either replica."""
    stage = await world.stage()
    await connect(world, stage.ca)
    device_id = unique("scheduled")
    certificate, _ = await enroll(world, stage, device_id)
    assert await until(lambda: world.iot.thing_principals(device_id))
    before = (await settled(world)).last_reconciled_at
    world.iot.client().update_certificate(
        certificateId=aws_id(certificate), newStatus="INACTIVE"
    )
    replica = cloud_settings(own_backends, world.iot, cloud_reconcile_schedule="1d")
    async with running(serve_cloud_default, replica):
        assert await until(
            lambda: world.iot.certificate_status(aws_id(certificate)) == "ACTIVE"
        )
        found = await settled(world)
    assert found.last_reconciled_at is not None
    assert before is None or found.last_reconciled_at > before
