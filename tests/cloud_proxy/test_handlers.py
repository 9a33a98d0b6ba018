"""The proxy's handlers and store without a broker: a real Store on a transaction that is
rolled back, a fixed ``now``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from cloud_proxy.errors import UnknownConnector
from cloud_proxy.handlers import (
    CloudContext,
    CloudDeps,
    connect_ca,
    get_status,
    reconcile,
    record_ca,
    record_certificate,
    record_certificate_status,
    record_decommission,
)
from cloud_proxy.items import Items
from cloud_proxy.store import Store
from contracts.ca import (
    CAView,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
)
from contracts.cloud import CloudStatus, ConnectCA, GetCloudStatus, Reconcile, SyncKind
from contracts.devices import DeviceStatus, DeviceView
from contracts.keys import KeyType
from runtime.db import discover_migrations, migrate
from tests.cloud_proxy.test_sync import CA_PEM, DEVICE_PEM
from tests.conftest import Backends, isolated_backends

pytestmark = [pytest.mark.postgres]

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DEPS = CloudDeps(store=Store(), items=Items(), connectors=frozenset({"aws-main"}))


@pytest.fixture(scope="module")
def own_backends() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture(scope="module")
async def pool(own_backends: Backends) -> AsyncIterator[asyncpg.Pool]:
    found = await own_backends.pool()
    await migrate(found, "cloud", discover_migrations("cloud_proxy"))
    yield found
    await found.close()


@pytest.fixture
async def ctx(pool: asyncpg.Pool) -> AsyncIterator[CloudContext]:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield CloudContext(conn, NOW, DEPS)
        finally:
            await transaction.rollback()


def ca_view(status: CertificateStatus = CertificateStatus.ACTIVE) -> CAView:
    return CAView(
        name="root",
        parent=None,
        internal=False,
        key_type=KeyType.EC_P256,
        key_id="k",
        engine="gopem",
        serial="01",
        subject="CN=root",
        status=status,
        not_before=NOW,
        not_after=NOW + timedelta(days=3650),
        certificate_pem=CA_PEM,
    )


def certificate(serial: str = "0a", **changes: object) -> CertificateView:
    values: dict[str, object] = {
        "serial": serial,
        "ca": "root",
        "subject": "CN=sensor.1",
        "issuer": "CN=root",
        "status": CertificateStatus.ACTIVE,
        "not_before": NOW,
        "not_after": NOW + timedelta(days=365),
        "csr_fingerprint": "f",
        "certificate_pem": DEVICE_PEM,
        "device_id": "sensor.1",
        "slot": "default",
    }
    values.update(changes)
    return CertificateView(**values)


async def items(ctx: CloudContext) -> dict[tuple[str, str], tuple[str, int]]:
    rows = await ctx.conn.fetch("SELECT kind, key, state, version FROM cloud.items")
    return {(r["kind"], r["key"]): (r["state"], r["version"]) for r in rows}


async def test_connect_makes_ca_and_known_certificates_due(ctx: CloudContext) -> None:
    """Connecting a CA: its item and one per device certificate, due now."""
    await record_ca(ca_view(), ctx)
    await record_certificate(certificate(), ctx)
    await record_certificate(certificate("0b", device_id=None), ctx)  # not a device's
    assert {} == await items(ctx)
    outcome = await connect_ca(ConnectCA(ca="root", connector="aws-main"), ctx)
    assert outcome.result is not None
    assert {
        ("ca", "root"): ("pending", 1),
        ("certificate", "0a"): ("pending", 1),
    } == await items(ctx)
    claimed = await DEPS.items.claim(
        ctx.conn, NOW, NOW + timedelta(minutes=5), ["aws-main"], 10
    )
    assert [SyncKind.CA, SyncKind.CERTIFICATE] == [item.kind for item in claimed]
    assert [] == await DEPS.items.claim(
        ctx.conn, NOW, NOW + timedelta(minutes=5), ["aws-main"], 10
    )


async def test_statuses_only_move_forward(ctx: CloudContext) -> None:
    """A late certificate.create does not take a revoked certificate back."""
    await record_ca(ca_view(), ctx)
    await record_certificate(certificate(), ctx)
    revoked = certificate(status=CertificateStatus.REVOKED)
    await record_certificate_status(
        CertificateStatusUpdate(previous=certificate(), updated=revoked), ctx
    )
    await record_certificate(certificate(), ctx)
    status = await ctx.conn.fetchval(
        "SELECT status FROM cloud.certificates WHERE serial = '0a'"
    )
    assert "REVOKED" == status


async def test_a_change_during_a_sync_keeps_the_item_due(ctx: CloudContext) -> None:
    """synced() and failed() of a claim made before a change record nothing."""
    await record_ca(ca_view(), ctx)
    await record_certificate(certificate(), ctx)
    await connect_ca(ConnectCA(ca="root", connector="aws-main"), ctx)
    store = DEPS.items
    claimed = await store.claim(ctx.conn, NOW, NOW, ["aws-main"], 10)
    certificate_item = next(i for i in claimed if i.kind is SyncKind.CERTIFICATE)
    await record_certificate(
        certificate(replaces=None, status=CertificateStatus.EXPIRED), ctx
    )
    assert not await store.synced(ctx.conn, certificate_item, NOW)
    assert None is await store.failed(ctx.conn, certificate_item, "x", NOW, NOW)
    assert ("pending", 2) == (await items(ctx))[("certificate", "0a")]
    ca_item = next(i for i in claimed if i.kind is SyncKind.CA)
    assert True is await store.failed(ctx.conn, ca_item, "down", NOW, NOW)
    again = next(
        i
        for i in await store.claim(ctx.conn, NOW, NOW, ["aws-main"], 10)
        if i.kind is SyncKind.CA
    )
    assert False is await store.failed(ctx.conn, again, "still down", NOW, NOW)
    reply = (await get_status(GetCloudStatus(connector="aws-main"), ctx)).result
    assert isinstance(reply, CloudStatus)
    (found,) = reply.items
    assert (0, 1, 1, "still down") == (
        found.synced,
        found.pending,
        found.failed,
        found.last_error,
    )


async def test_reenrollment_and_decommission_touch_the_old_certificate(
    ctx: CloudContext,
) -> None:
    """The replaced certificate and every certificate of a decommissioned device
    become due again."""
    await record_ca(ca_view(), ctx)
    await record_certificate(certificate(), ctx)
    await connect_ca(ConnectCA(ca="root", connector="aws-main"), ctx)
    await DEPS.items.claim(ctx.conn, NOW, NOW, ["aws-main"], 10)
    await record_certificate(certificate("0c", replaces="0a"), ctx)
    found = await items(ctx)
    assert ("pending", 2) == found[("certificate", "0a")]
    assert ("pending", 1) == found[("certificate", "0c")]
    await record_decommission(
        DeviceView(
            id="sensor.1",
            dms=None,
            status=DeviceStatus.DECOMMISSIONED,
            slots=[],
            created_at=NOW,
            decommissioned_at=NOW,
        ),
        ctx,
    )
    found = await items(ctx)
    assert (3, 2) == (found[("certificate", "0a")][1], found[("certificate", "0c")][1])


@pytest.mark.parametrize(
    "request_",
    [
        ConnectCA(ca="root", connector="aws-elsewhere"),
        Reconcile(connector="aws-elsewhere"),
        GetCloudStatus(connector="aws-elsewhere"),
    ],
    ids=["connect", "reconcile", "status"],
)
async def test_unknown_connector_is_refused(
    ctx: CloudContext, request_: object
) -> None:
    handler = {ConnectCA: connect_ca, Reconcile: reconcile, GetCloudStatus: get_status}[
        type(request_)  # type: ignore[index]
    ]
    with pytest.raises(UnknownConnector, match="configured: aws-main"):
        await handler(request_, ctx)  # type: ignore[operator]
    assert {} == await items(ctx)
