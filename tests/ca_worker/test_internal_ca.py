"""LAMASSU-DMS-MANAGER is protected (issue 14): revoking it, which revokes every DMS,
or turning off its expiry warning needs ``force``; the CLI asks before destructive
commands unless ``--yes``.

The forced revocation runs on its own backends (it disables every DMS); the refusals
run on the session's, which they leave as they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ca_worker.__main__ import serve as serve_ca
from contracts.ca import (
    INTERNAL_CA,
    CAView,
    CertificateStatus,
    CreateCA,
    GetCA,
    RevokeCA,
    UpdateCA,
)
from contracts.dms import CreateDMS, DMSStatus, DMSView, GetDMS
from contracts.errors import ErrorCode
from contracts.names import Topology
from runtime.bus import Bus
from tests.cli.test_cli import lamassu
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    isolated_backends,
    running,
    wait_until_answered,
    worker_running,
)
from tests.pki import call, csr_pem, make_csr, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture
async def own_bus(own_backends: Backends, tmp_path: Path) -> AsyncIterator[Bus]:
    settings = ca_settings(own_backends, tmp_path / "keys", sweep_schedule="off")
    async with running(serve_ca, settings) as task:
        found = await Bus.connect(AMQP_URL, Topology(own_backends.prefix))
        try:
            await wait_until_answered(found, task)
            async with worker_running("dms_worker", "dms", own_backends):
                yield found
        finally:
            await found.close()


async def internal(bus: Bus) -> CAView:
    reply = await call(bus, GetCA(name=INTERNAL_CA))
    assert reply.ok, reply.error
    return CAView.model_validate(reply.result)


async def test_revoking_the_internal_ca_needs_force(own_bus: Bus) -> None:
    """Without force: forbidden, naming what it would do; nothing changes. With force:
    revoked, and the DMS with it."""
    _, request = make_csr("forced-dms")
    created = await call(
        own_bus,
        CreateDMS(
            name="forced-dms",
            authorized_cas=[(await _any_ca(own_bus)).name],
            csr_pem=csr_pem(request),
        ),
    )
    assert created.ok, created.error

    refused = await call(own_bus, RevokeCA(name=INTERNAL_CA))
    assert refused.error is not None
    assert ErrorCode.FORBIDDEN is refused.error.code
    assert "revoking it revokes every DMS" in refused.error.message
    assert "force" in refused.error.message
    assert CertificateStatus.ACTIVE is (await internal(own_bus)).status

    forced = await call(own_bus, RevokeCA(name=INTERNAL_CA, force=True))
    assert forced.ok, forced.error
    assert CertificateStatus.REVOKED is (await internal(own_bus)).status

    async def dms_revoked() -> bool:
        reply = await call(own_bus, GetDMS(name="forced-dms"))
        return reply.ok and DMSView.model_validate(reply.result).status is (
            DMSStatus.REVOKED
        )

    async with asyncio.timeout(15):
        while not await dms_revoked():
            await asyncio.sleep(0.05)


async def _any_ca(bus: Bus) -> CAView:
    reply = await call(bus, CreateCA(name=unique("plain")))
    assert reply.ok, reply.error
    return CAView.model_validate(reply.result)


async def test_turning_off_the_internal_ca_warning_needs_force(
    bus: Bus,
) -> None:
    """about_to_expire 0d on the internal CA: forbidden without force; other values
    and other CAs need none."""
    before = await internal(bus)
    refused = await call(bus, UpdateCA(name=INTERNAL_CA, about_to_expire_days=0))
    assert refused.error is not None
    assert ErrorCode.FORBIDDEN is refused.error.code
    assert "expire unnoticed" in refused.error.message
    assert before == await internal(bus)
    longer = await call(bus, UpdateCA(name=INTERNAL_CA, about_to_expire_days=90))
    assert longer.ok, longer.error
    back = await call(
        bus,
        UpdateCA(name=INTERNAL_CA, about_to_expire_days=before.about_to_expire_days),
    )
    assert back.ok, back.error


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ca", "revoke", INTERNAL_CA], 2, "Not confirmed: pass --yes"),
        (["ca", "revoke", INTERNAL_CA, "--yes"], 1, "error: forbidden:"),
        (["cert", "revoke", "0a0a"], 2, "Revoke certificate 0a0a? Not confirmed"),
        (["dms", "revoke", "nope"], 2, "Not confirmed: pass --yes"),
        (["device", "decommission", "nope"], 2, "Not confirmed: pass --yes"),
        (["device", "decommission", "nope", "--yes"], 1, "error: not_found:"),
    ],
    ids=[
        "ca-revoke-unconfirmed",
        "internal-ca-without-force",
        "cert-revoke-unconfirmed",
        "dms-revoke-unconfirmed",
        "decommission-unconfirmed",
        "decommission-confirmed",
    ],
)
async def test_destructive_commands_ask_first(
    backends: Backends,
    ca_service: object,
    dms_service: None,
    device_service: None,
    *,
    args: list[str],
    code: int,
    message: str,
) -> None:
    """Without a terminal only --yes confirms; the PKI is not asked otherwise, and the
    internal CA still needs --force after --yes."""
    result = await lamassu(backends, *args)
    assert code == result.returncode, result.stderr
    assert message in result.stderr
    assert 1 == len(result.stderr.strip().splitlines())
