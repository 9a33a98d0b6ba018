"""A real expiry sweep of the CA worker, gathered by a digest subscription into one
message: the CA worker, the alerts worker, RabbitMQ and PostgreSQL, all real."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from contracts.alerts import Subscribe, SubscriptionView
from contracts.ca import CreateCA, SignCertificate, UpdateCA
from contracts.sweeps import GetSweep, RunSweep, SweepView
from runtime.bus import Bus
from tests.alerts_worker.conftest import Alerts
from tests.alerts_worker.receivers import HttpReceiver
from tests.pki import call, csr_pem, make_csr, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def ok(bus: Bus, request: Any) -> dict[str, Any]:
    reply = await call(bus, request, timeout=30)
    assert reply.ok, reply.error
    assert isinstance(reply.result, dict)
    return reply.result


async def test_a_sweeps_warnings_arrive_as_one_digest(alerts: Alerts, bus: Bus) -> None:
    """Five certificates a sweep moves to ABOUT_TO_EXPIRE are one webhook at period end."""
    receiver = HttpReceiver()
    await receiver.start()
    ca = unique("alerts-sweep")
    await ok(bus, CreateCA(name=ca))
    for i in range(5):
        await ok(bus, SignCertificate(ca=ca, csr_pem=csr_pem(make_csr(f"dev-{i}")[1])))
    sub = SubscriptionView.model_validate(
        await ok(
            bus,
            Subscribe(
                event="certificate.status.update",
                condition=f'data.updated.ca == "{ca}" && '
                'data.updated.status == "ABOUT_TO_EXPIRE"',
                channel="webhook",
                target=receiver.url,
                digest="1h",
            ),
        )
    )
    # Just past an hour boundary on the alerts worker's clock: one period holds it all.
    now = alerts.clock()
    shift = now.replace(minute=0, second=1, microsecond=0) + timedelta(hours=1) - now
    alerts.clock.offset += shift
    moved = shift
    try:
        # A longer warning period than the certificates' 365 days: all five are due.
        await ok(bus, UpdateCA(name=ca, about_to_expire_days=400))
        sweep = SweepView.model_validate(await ok(bus, RunSweep()))
        async with asyncio.timeout(20):
            while sweep.shards_done < sweep.shards:
                await asyncio.sleep(0.05)
                sweep = SweepView.model_validate(await ok(bus, GetSweep(id=sweep.id)))
            while 5 > await alerts.db.fetchval(
                "SELECT count(*) FROM alerts.digest_items WHERE subscription_id = $1",
                sub.id,
            ):
                await asyncio.sleep(0.05)
        assert [] == receiver.received
        alerts.clock.offset += timedelta(hours=1)
        moved += timedelta(hours=1)
        [got] = await receiver.wait_for(1)
    finally:
        alerts.clock.offset -= moved
        await receiver.stop()
        await alerts.db.execute("DELETE FROM alerts.subscriptions")

    data = json.loads(got.body)["data"]
    assert 5 == data["total"]
    assert [{"ca": ca, "status": "ABOUT_TO_EXPIRE", "count": 5}] == data["counts"]
    assert {"ACTIVE"} == {item["previous_status"] for item in data["items"]}
