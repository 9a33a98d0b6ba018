"""A CA whose key is not in its engine is a clear state, not a retry loop.

The CA worker is started with GOPEM_DATA pointing at an empty directory, while the
database holds CAs whose keys were made in another one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from structlog.testing import capture_logs

from ca_worker.__main__ import serve as serve_ca
from contracts.ca import CreateCA, ListCAs, SignCertificate
from contracts.dms import CreateDMS
from contracts.errors import ErrorCode
from contracts.names import Topology
from runtime.bus import Bus
from tests.conftest import (
    AMQP_URL,
    Backends,
    ca_settings,
    isolated_backends,
    running,
    wait_until_answered,
    worker_running,
)
from tests.pki import call, csr_pem, make_csr

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


@pytest.fixture
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


async def test_a_ca_whose_key_is_missing_is_refused_at_once(
    own_backends: Backends, tmp_path: Path
) -> None:
    """Reported at start; its signing requests, and a DMS creation that needs the
    internal CA, are answered at once with `unavailable` naming the CA and the engine;
    nothing is retried or dead-lettered."""
    backends = own_backends
    bus = await Bus.connect(AMQP_URL, Topology(backends.prefix))
    try:
        async with running(serve_ca, ca_settings(backends, tmp_path / "a")) as task:
            await wait_until_answered(bus, task)
            assert (await call(bus, CreateCA(name="keyless-ca"))).ok
        with capture_logs() as logs:
            empty = ca_settings(backends, tmp_path / "b")
            async with (
                running(serve_ca, empty) as task,
                worker_running("dms_worker", "dms", backends),
            ):
                await wait_until_answered(bus, task)
                _, csr = make_csr("device-0001")
                signed = await call(
                    bus, SignCertificate(ca="keyless-ca", csr_pem=csr_pem(csr)), 10
                )
                _, dms_csr = make_csr("dms-0001")
                dms = await call(
                    bus,
                    CreateDMS(
                        name="dms-0001",
                        authorized_cas=["keyless-ca"],
                        csr_pem=csr_pem(dms_csr),
                    ),
                    10,
                )
                # A later message is answered too: the worker is not busy retrying.
                assert (await call(bus, ListCAs())).ok
                dead = await _dead_letters(backends)
    finally:
        await bus.close()

    assert signed.error is not None
    assert ErrorCode.UNAVAILABLE == signed.error.code
    assert "'keyless-ca'" in signed.error.message
    assert "'gopem'" in signed.error.message
    assert dms.error is not None
    assert ErrorCode.UNAVAILABLE == dms.error.code
    assert "LAMASSU-DMS-MANAGER" in dms.error.message
    missing = {e["ca"] for e in logs if e["event"] == "ca_key_missing"}
    assert {"keyless-ca", "LAMASSU-DMS-MANAGER"} == missing
    retried = [e for e in logs if e["event"] in {"batch_retrying", "handler_crashed"}]
    assert [] == retried
    assert {"ca.commands.dead": 0, "dms.commands.dead": 0} == dead


async def _dead_letters(backends: Backends) -> dict[str, int]:
    topology = Topology(backends.prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        counts = {}
        for worker in ("ca", "dms"):
            name = f"{topology.queue(worker, 'commands')}.dead"
            queue = await channel.declare_queue(name, passive=True)
            counts[f"{worker}.commands.dead"] = int(
                queue.declaration_result.message_count or 0
            )
        return counts
