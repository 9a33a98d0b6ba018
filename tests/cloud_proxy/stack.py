"""The stack the cloud proxy's end-to-end tests run on, and their steps: the real
workers, the EST gateway, the proxy, and a local AWS IoT endpoint (moto server).

Nothing sleeps: each step waits, under a deadline, for what AWS lists or for an event.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud_proxy.__main__ import serve as serve_cloud
from cloud_proxy.settings import Settings as CloudSettings
from cloud_proxy.sync import certificate_id
from contracts.ca import CAView
from contracts.cloud import CloudStatus, ConnectCA, GetCloudStatus
from runtime.bus import Bus
from tests.cloud_proxy.local_iot import LocalIot
from tests.conftest import AMQP_URL, Backends
from tests.est_gateway.test_gateway import (
    Identity,
    Stage,
    new_stage,
    openssl_csr,
    single_certificate,
)
from tests.pki import EventLog, call

CONNECTOR = "aws-main"
POLICY = "lamassu-devices"
GROUP = "factory-line-1"


@dataclass
class World:
    bus: Bus
    events: EventLog
    gateway: Any
    directory: Path
    iot: LocalIot

    async def stage(self) -> Stage:
        return await new_stage(self.bus, self.gateway, self.directory)


def cloud_settings(backends: Backends, iot: LocalIot, **overrides: object) -> Any:
    values: dict[str, object] = {
        "postgres_hostname": backends.pg_host,
        "postgres_port": backends.pg_port,
        "postgres_username": backends.pg_user,
        "postgres_database": backends.database,
        "amqp_url": AMQP_URL,
        "amqp_prefix": backends.prefix,
        "cloud_connectors": CONNECTOR,
        "cloud_aws_endpoint_url": iot.url,
        "cloud_aws_region": "eu-west-1",
        "cloud_aws_max_attempts": 1,
        "cloud_retry_base_seconds": 0.2,
        "cloud_retry_max_seconds": 1.0,
        "cloud_reconcile_schedule": "off",
    }
    values.update(overrides)
    return CloudSettings(**values)  # type: ignore[arg-type]


async def serve_cloud_default(settings: Any, stop: asyncio.Event) -> None:
    await serve_cloud(settings, stop)


async def serve_ca_default(settings: Any, stop: asyncio.Event) -> None:
    from ca_worker.__main__ import serve

    await serve(settings, stop)


# --- steps -----------------------------------------------------------------------------


async def until(check: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll what AWS shows (a blocking boto3 call) until ``check`` is truthy."""
    async with asyncio.timeout(timeout):
        while not (found := check()):
            await asyncio.sleep(0.05)
        return found


async def connect(world: World, ca: CAView, **options: Any) -> None:
    reply = await call(world.bus, ConnectCA(ca=ca.name, connector=CONNECTOR, **options))
    assert reply.ok, reply.error
    ca_id = certificate_id(ca.certificate_pem)
    assert "ACTIVE" == await until(lambda: world.iot.ca_status(ca_id))


async def enroll(
    world: World, stage: Stage, device_id: str
) -> tuple[x509.Certificate, Identity]:
    body, key = openssl_csr(stage.directory, device_id)
    status, _, payload = await stage.est.enroll(stage.ca.name, body, stage.dms_identity)
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity = Identity(stage.directory / f"{device_id}.pem", key)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, identity


async def reenroll(
    stage: Stage, device_id: str, identity: Identity
) -> x509.Certificate:
    body, _ = openssl_csr(stage.directory, device_id, key=identity.key)
    status, _, payload = await stage.est.enroll(
        stage.ca.name, body, identity, "simplereenroll"
    )
    assert 200 == status, payload
    certificate = single_certificate(payload)
    identity.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def aws_id(certificate: x509.Certificate) -> str:
    return certificate_id(certificate.public_bytes(serialization.Encoding.PEM).decode())


def serial(certificate: x509.Certificate) -> str:
    text = format(certificate.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


def arn_of(world: World, certificate: x509.Certificate) -> str:
    found = world.iot.client().describe_certificate(certificateId=aws_id(certificate))
    return str(found["certificateDescription"]["certificateArn"])


async def status(world: World) -> Any:
    reply = await call(world.bus, GetCloudStatus(connector=CONNECTOR))
    assert reply.ok, reply.error
    return CloudStatus.model_validate(reply.result).items[0]


async def settled(world: World) -> Any:
    """The connector's status once nothing is pending or failed."""
    async with asyncio.timeout(20):
        while True:
            found = await status(world)
            if found.pending == 0 and found.failed == 0:
                return found
            await asyncio.sleep(0.05)


# --- the walks -------------------------------------------------------------------------


async def lamassu(backends: Backends, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lamassu_cli",
        *args,
        env=backends.env(LOG_LEVEL="warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        args, process.returncode, out.decode(), err.decode()
    )
