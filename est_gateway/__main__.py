"""``python -m est_gateway``: the gateway's wiring, and the two followers that keep its
state current from the bus: the client trust store from CA events and the DMSs'
proof-of-possession policy from DMS events (each subscribes first, then lists)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from contracts.ca import CACreated, CAs, CAStatusUpdate, CAView, ListCAs
from contracts.dms import DMSCreated, DMSs, DMSUpdate, DMSView, ListDMSs
from contracts.envelope import CloudEvent, new_message
from contracts.names import Topology
from est_gateway.app import SOURCE, GatewayDeps, create_app
from est_gateway.metrics import GatewayMetrics
from est_gateway.pop import PopPolicy
from est_gateway.server import EstSite, quiet_client_disconnects
from est_gateway.settings import Settings
from est_gateway.tls import ServerCredentials, server_context
from est_gateway.trust import TrustStore
from runtime.admin import AdminServer, Check, serve_admin
from runtime.bus import Bus, BusUnavailable, Consumer, RequestTimeout
from runtime.service import run_service
from runtime.supervise import Supervisor

__all__ = ["main", "serve"]

log = structlog.get_logger("est_gateway")


def _follower(
    bus: Bus, ignored: str, apply: Mapping[str, Callable[[Any], None]]
) -> Consumer:
    """A consumer of the events the gateway follows: each is applied by its type once
    its sender is checked (DESIGN §2a: a forged CA event would put a rogue root into
    the client trust); one it cannot read is logged as ``ignored`` and dropped."""

    async def on_event(message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=False):
            try:
                event = CloudEvent.model_validate_json(message.body)
                refusal = bus.sender_refusal(message, event.type)
                if refusal is not None:
                    log.warning(
                        "sender_refused",
                        sender=message.user_id,
                        type=event.type,
                        id=event.id,
                        reason=refusal,
                    )
                elif event.type in apply:
                    apply[event.type](event.data)
            except ValidationError as exc:
                log.warning(ignored, error=str(exc).splitlines()[0])

    return on_event


async def _follow_cas(bus: Bus, trust: TrustStore) -> None:
    """Keep the trust store current: subscribe first, then read the list, so nothing is missed."""

    on_event = _follower(
        bus,
        "ca_event_ignored",
        {
            CACreated.TYPE: lambda data: trust.add(CAView.model_validate(data)),
            CAStatusUpdate.TYPE: lambda data: trust.add(
                CAStatusUpdate.model_validate(data).updated
            ),
        },
    )
    await bus.subscribe("ca.#", on_event)
    await _list_cas(bus, trust, wait=120)


async def _list_cas(bus: Bus, trust: TrustStore, *, wait: float) -> None:
    """Add every CA the CA worker lists, retrying for ``wait`` seconds."""
    query = new_message(source=SOURCE, data=ListCAs(), now=datetime.now(UTC))
    async with asyncio.timeout(wait):
        while True:
            try:
                reply = await bus.request(query, timeout=5)
            except (BusUnavailable, RequestTimeout):
                log.info("waiting_for_ca_worker")
                await asyncio.sleep(1)
                continue
            if reply.ok:
                for view in CAs.model_validate(reply.result).items:
                    trust.add(view)
                return
            raise BusUnavailable(f"ca.list refused: {reply.error}")


def _catch_up_after_reconnect(
    bus: Bus, trust: TrustStore
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A loop that lists the CAs again each time the broker connection comes back:
    CA events published while it was away never reached the subscription."""
    reconnected = asyncio.Event()
    bus.on_reconnect(reconnected.set)

    async def loop() -> None:
        while True:
            await reconnected.wait()
            reconnected.clear()
            await _list_cas(bus, trust, wait=300)
            log.info("trust_refreshed")

    return loop


async def _follow_dmss(bus: Bus, policy: PopPolicy) -> None:
    """Which DMSs require proof-of-possession linking (for /csrattrs): subscribe
    first, then read the list (``_list_dmss``), so nothing is missed."""

    on_event = _follower(
        bus,
        "dms_event_ignored",
        {
            DMSCreated.TYPE: lambda data: policy.learn(DMSView.model_validate(data)),
            DMSUpdate.TYPE: lambda data: policy.learn(
                DMSUpdate.model_validate(data).updated
            ),
        },
    )

    # Not dms.#: that would bring every enrollment's dms.enroll to the gateway.
    for type_ in (DMSCreated.TYPE, DMSUpdate.TYPE):
        await bus.subscribe(type_, on_event)


async def _list_dmss(bus: Bus, policy: PopPolicy) -> None:
    """Learn the DMSs that exist already; in the background, as the DMS worker may
    start after the gateway."""
    after: str | None = None
    while True:
        query = new_message(
            source=SOURCE,
            data=ListDMSs(limit=1000, after=after),
            now=datetime.now(UTC),
        )
        try:
            reply = await bus.request(query, timeout=30)
        except (BusUnavailable, RequestTimeout):
            # Not fatal: /csrattrs learns each DMS from its next event.
            log.warning("dms_list_unanswered")
            return
        if not reply.ok:
            log.warning("dms_list_refused", error=str(reply.error))
            return
        page = DMSs.model_validate(reply.result).items
        for view in page:
            policy.learn(view)
        if len(page) < 1000:
            return
        after = page[-1].name


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serve HTTPS until ``stop`` is set."""
    if settings.est_tls_cert_file and settings.est_tls_key_file:
        credentials = ServerCredentials(
            settings.est_tls_cert_file, settings.est_tls_key_file
        )
    else:
        credentials = ServerCredentials.load_or_create(
            settings.est_tls_dir, settings.est_server_names
        )
    context = server_context(
        credentials, session_tickets=settings.est_tls_session_tickets
    )
    settings.est_tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    trust = TrustStore(context, settings.est_tls_dir / "client-trust.pem")
    bus = await Bus.connect(
        settings.amqp_url.get_secret_value(), Topology(settings.amqp_prefix)
    )
    runner: web.AppRunner | None = None
    admin: web.AppRunner | None = None
    supervisor = Supervisor()
    bus.warn_if_unchecked()
    registry = CollectorRegistry()
    try:
        await _follow_cas(bus, trust)
        supervisor.start("trust-catch-up", _catch_up_after_reconnect(bus, trust))
        deps = GatewayDeps(settings, bus, trust, metrics=GatewayMetrics(registry))
        await _follow_dmss(bus, deps.pop)
        supervisor.start("dms-listing", lambda: _list_dmss(bus, deps.pop))
        runner = web.AppRunner(
            create_app(deps),
            access_log=None,
            keepalive_timeout=settings.est_idle_timeout_seconds,
        )
        await runner.setup()
        site = EstSite(
            runner,
            settings.est_host,
            settings.est_port,
            ssl_context=context,
            handshake_timeout=settings.est_handshake_timeout_seconds,
            max_connections=settings.est_max_connections,
        )
        await site.start()
        # Its own port, never the EST one: the endpoints are not for devices.
        admin = await serve_admin(
            AdminServer(registry, _readiness(bus, supervisor)), settings, "est_gateway"
        )
        log.info(
            "est_gateway_started",
            url=f"https://{settings.est_server_names[0]}:{settings.est_port}/.well-known/est/",
            server_certificate=str(credentials.cert_file),
            client_trust_bundle=str(settings.est_tls_dir / "client-trust.pem"),
        )
        await supervisor.watch(stop)
    finally:
        if admin is not None:
            await admin.cleanup()
        await supervisor.close()
        if runner is not None:
            await runner.cleanup()
        await bus.close()
        log.info("est_gateway_stopped")


def _readiness(bus: Bus, supervisor: Supervisor) -> dict[str, Check]:
    async def bus_connected() -> str | None:
        return None if bus.connected else "not connected to the broker"

    async def consumers() -> str | None:
        detached = bus.detached()  # the CA events it follows
        return f"not consuming: {', '.join(detached)}" if detached else None

    async def tasks() -> str | None:
        dead = sorted(name for name, up in supervisor.alive().items() if not up)
        return f"not running: {', '.join(dead)}" if dead else None

    return {"bus": bus_connected, "consumers": consumers, "tasks": tasks}


def main() -> None:
    quiet_client_disconnects()
    run_service("est_gateway", Settings, serve)


if __name__ == "__main__":
    main()
