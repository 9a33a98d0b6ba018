"""Nothing lost, nothing stuck: routine infrastructure faults during 300 enrollments.

Every service runs as its own process against a RabbitMQ node and a PostgreSQL cluster
of this suite's own (``infra.py``), never the machine's shared ones. Clients enroll
concurrently over mTLS and, as RFC 7030 §4.2.3 has a device do, send the same request
again after a 202 or a 503 (and after a refused connection). Midway, one fault is
injected; once it is over, every client must end with exactly one certificate, every
certificate with its event and its device row, every outbox empty, no message
dead-lettered, and no HTTP 500 ever returned. The time from the fault's end to the next
200 is reported at the end of the run (counts are asserted, timings only reported).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.ca import CreateCA
from contracts.dms import CreateDMS, DMSView
from contracts.names import Topology
from runtime.bus import Bus
from runtime.topology import remove_topology
from tests import est_client
from tests.conftest import missing_backend
from tests.faults.infra import OwnPostgres, OwnRabbit, free_port, missing_tools
from tests.pki import call, csr_pem, make_csr

pytestmark = [
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    # Starting a RabbitMQ node and a PostgreSQL cluster, then 300 enrollments through
    # a fault, takes longer than the suite's default 60 s on a busy 2-core machine.
    pytest.mark.timeout(600),
]

CLIENTS = int(os.environ.get("FAULT_CLIENTS", "300"))
# A third of the clients start at once; the fault begins at their first certificate,
# while the rest of them are in flight, and the other two thirds start right after it
# began, so that every fault meets both requests in flight and requests arriving.
EARLY = CLIENTS // 3
SERVICES = ("ca_worker", "dms_worker", "device_worker", "est_gateway")
# What a device waits before it tries again after a refused connection, and at most
# after a Retry-After (the gateway sends 1 s here): the device's pace, not the test's.
DEVICE_PAUSE = 0.25
RECOVERY = pytest.StashKey[list[tuple[str, float, dict[str, int]]]]()


@pytest.fixture(scope="module")
def infra() -> Iterator[tuple[OwnRabbit, OwnPostgres]]:
    """This module's own RabbitMQ node and PostgreSQL cluster."""
    missing = missing_tools()
    if missing is not None:
        missing_backend(missing)
    base = Path(tempfile.mkdtemp(prefix="lamassu-faults-"))
    base.chmod(0o755)  # the servers run as their own users
    try:
        with OwnRabbit.running(base) as rabbit, OwnPostgres.running(base) as postgres:
            yield rabbit, postgres
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@dataclass
class Stack:
    """The four services as processes, on the suite's own broker and database."""

    rabbit: OwnRabbit
    postgres: OwnPostgres
    directory: Path
    database: str
    prefix: str
    port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    keep: bool = False  # a failed run's logs stay for a person to read

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            POSTGRES_HOSTNAME="127.0.0.1",
            POSTGRES_PORT=str(self.postgres.port),
            POSTGRES_USERNAME="postgres",
            POSTGRES_DATABASE=self.database,
            AMQP_URL=self.rabbit.url,
            AMQP_PREFIX=self.prefix,
            LOG_FORMAT="json",
            GOPEM_DATA=str(self.directory / "keys"),
            SWEEP_SCHEDULE="off",
            EST_HOST="127.0.0.1",
            EST_PORT=str(self.port),
            EST_TLS_DIR=str(self.directory / "tls"),
            EST_WAIT_SECONDS="2",
            EST_RETRY_AFTER_SECONDS="1",
        )
        return env

    def start(self, name: str) -> None:
        with (self.directory / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", name],
                env=self.env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def log_tail(self) -> str:
        """The last lines each service logged, less the client library's reconnects."""
        noise = ("Reconnecting", "creating transport")
        return "\n".join(
            f"--- {name}\n"
            + "\n".join(
                [
                    line
                    for line in (self.directory / f"{name}.log")
                    .read_text()
                    .splitlines()
                    if not any(n in line for n in noise)
                ][-15:]
            )
            for name in self.processes
        )

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1",
            port=self.postgres.port,
            user="postgres",
            database=self.database,
        )


@contextlib.asynccontextmanager
async def stack_running(
    rabbit: OwnRabbit, postgres: OwnPostgres
) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:8]
    directory = Path(tempfile.mkdtemp(prefix=f"faults-{run}-"))
    stack = Stack(
        rabbit, postgres, directory, f"faults_{run}", f"faults-{run}.", free_port()
    )
    await _admin(postgres, f'CREATE DATABASE "{stack.database}"')
    try:
        for name in SERVICES:
            stack.start(name)
        yield stack
    finally:
        stack.stop_all()
        topology = Topology(stack.prefix)
        with contextlib.suppress(Exception):
            await remove_topology(rabbit.url, topology, topology.worker_queues())
        # A new connection: the fault may have restarted the cluster meanwhile.
        await _admin(
            postgres, f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)'
        )
        if not stack.keep:
            subprocess.run(["rm", "-rf", str(directory)], check=False)


async def _admin(postgres: OwnPostgres, sql: str) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", database="postgres"
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Results:
    """What the clients saw."""

    serials: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    refused_connections: int = 0
    successes: list[float] = field(default_factory=list)  # monotonic times of 200s
    disturbed: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # opened by the fault
    counted: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for_successes(self, count: int) -> None:
        async with self.counted:
            await self.counted.wait_for(lambda: len(self.serials) >= count)


def device_csr(device_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


async def _prepare(stack: Stack) -> ssl.SSLContext:
    """Wait for the services, make a CA and a DMS; the DMS's client TLS context."""
    bus = await Bus.connect(stack.rabbit.url, Topology(stack.prefix))
    try:
        async with asyncio.timeout(90):
            for worker in ("ca", "dms", "devices"):
                queue = bus.topology.queue(worker, "commands")
                while not await bus.consumer_count(queue):
                    await asyncio.sleep(0.1)
        assert (await call(bus, CreateCA(name="fault-ca"))).ok
        key, csr = make_csr("fault-dms")
        reply = await call(
            bus,
            CreateDMS(
                name="fault-dms", authorized_cas=["fault-ca"], csr_pem=csr_pem(csr)
            ),
            timeout=30,
        )
        assert reply.ok, reply.error
    finally:
        await bus.close()
    (stack.directory / "dms.pem").write_text(
        DMSView.model_validate(reply.result).certificate_pem
    )
    (stack.directory / "dms.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_pem = stack.directory / "tls" / "server.pem"
    async with asyncio.timeout(60):
        while not server_pem.exists():
            await asyncio.sleep(0.05)
    context = ssl.create_default_context(cafile=str(server_pem))
    context.load_cert_chain(stack.directory / "dms.pem", stack.directory / "dms.key")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        asyncio.timeout(60),
    ):
        while True:  # the gateway learns the CA from its event
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(
                    f"https://127.0.0.1:{stack.port}/.well-known/est/fault-ca/cacerts"
                ) as response:
                    if response.status == 200:
                        return context
            await asyncio.sleep(0.05)


async def _enroll_all(
    stack: Stack,
    context: ssl.SSLContext,
    fault: Callable[[Stack, Results], Awaitable[float]],
) -> tuple[Results, float]:
    """Run the clients; inject the fault at the first certificate. Returns what the
    clients saw and when the fault ended (monotonic)."""
    results = Results()
    url = f"https://127.0.0.1:{stack.port}/.well-known/est/fault-ca/simpleenroll"

    async def client(session: aiohttp.ClientSession, index: int) -> None:
        device_id = f"fault-device-{index:04d}"
        body = device_csr(device_id)
        if index >= EARLY:
            await results.gate.wait()
        while True:
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/pkcs10"}
                ) as response:
                    payload = await response.read()
                    status = response.status
                    retry_after = float(response.headers.get("Retry-After", "0") or 0)
            except (aiohttp.ClientError, OSError, TimeoutError):
                results.refused_connections += 1
                results.disturbed.set()
                await asyncio.sleep(DEVICE_PAUSE)
                continue
            results.statuses[status] += 1
            if status == 200:
                serial = est_client.decode_certs_only(payload)[0].serial_number
                async with results.counted:
                    results.serials[device_id] = serial
                    results.successes.append(time.monotonic())
                    results.counted.notify_all()
                return
            if status not in {202, 503}:
                return  # counted in statuses; the assertions name it
            results.disturbed.set()
            await asyncio.sleep(min(retry_after, DEVICE_PAUSE))

    connector = aiohttp.TCPConnector(ssl=context, force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        asyncio.timeout(300),
    ):
        clients = [asyncio.create_task(client(session, i)) for i in range(CLIENTS)]
        await results.wait_for_successes(1)
        fault_over = await fault(stack, results)
        await asyncio.gather(*clients)
    return results, fault_over


async def _until_disturbed(results: Results) -> None:
    """The fault has begun: let the other clients in; it lasts until some client
    has noticed it (deadline: 30 s)."""
    results.disturbed.clear()
    results.gate.set()
    async with asyncio.timeout(30):
        await results.disturbed.wait()


def _kill(name: str) -> Callable[[Stack, Results], Awaitable[float]]:
    async def fault(stack: Stack, results: Results) -> float:
        stack.kill(name)
        if name == "device_worker":
            # Not on the enrollment path: enrollments go on while it is down.
            results.gate.set()
            await results.wait_for_successes(len(results.serials) + EARLY // 2)
        else:
            await _until_disturbed(results)
        stack.start(name)
        return time.monotonic()

    return fault


async def _rabbit_app(stack: Stack, results: Results) -> float:
    await asyncio.to_thread(stack.rabbit.stop_app)
    await _until_disturbed(results)
    await asyncio.to_thread(stack.rabbit.start_app)
    return time.monotonic()


async def _rabbit_node(stack: Stack, results: Results) -> float:
    await asyncio.to_thread(stack.rabbit.stop)
    await _until_disturbed(results)
    await asyncio.to_thread(stack.rabbit.start)
    return time.monotonic()


async def _postgres(stack: Stack, results: Results) -> float:
    await asyncio.to_thread(stack.postgres.stop)
    await _until_disturbed(results)
    await asyncio.to_thread(stack.postgres.start)
    return time.monotonic()


FAULTS: dict[str, Callable[[Stack, Results], Awaitable[float]]] = {
    "rabbitmq-stop-start-app": _rabbit_app,
    "rabbitmq-node-restart": _rabbit_node,
    "postgres-fast-restart": _postgres,
    **{f"kill-9-{name}": _kill(name) for name in SERVICES},
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_nothing_lost_nothing_stuck(
    infra: tuple[OwnRabbit, OwnPostgres], fault: str, request: pytest.FixtureRequest
) -> None:
    """Under the fault, every client ends with one certificate, its event and its
    device row; outboxes drain, nothing is dead-lettered, no 500 is ever returned."""
    rabbit, postgres = infra
    async with stack_running(rabbit, postgres) as stack:
        try:
            context = await _prepare(stack)
            results, fault_over = await _enroll_all(stack, context, FAULTS[fault])
            assert 0 == results.statuses[500], results.statuses
            assert set(results.statuses) <= {200, 202, 503}, results.statuses
            assert CLIENTS == len(results.serials)
            await _every_certificate_has_its_event_and_row(stack, results)
            await _nothing_dead_lettered(stack)
        except BaseException:
            stack.keep = True
            print(stack.log_tail())  # noqa: T201 - shown by pytest when it fails
            print(f"full logs kept in {stack.directory}")  # noqa: T201
            raise
    recovered = min((t for t in results.successes if t > fault_over), default=None)
    request.config.stash.setdefault(RECOVERY, []).append(
        (
            fault,
            -1.0 if recovered is None else recovered - fault_over,
            {str(k): v for k, v in sorted(results.statuses.items())}
            | {"refused": results.refused_connections},
        )
    )


async def _every_certificate_has_its_event_and_row(
    stack: Stack, results: Results
) -> None:
    conn = await stack.connect()
    try:
        rows = await conn.fetch(
            "SELECT device_id, serial FROM ca.certificates WHERE device_id IS NOT NULL"
        )
        issued = {r["device_id"]: int(r["serial"], 16) for r in rows}
        assert len(rows) == len(issued), "a device got a second certificate"
        assert results.serials == issued
        async with asyncio.timeout(90):
            while True:
                held = {
                    r["device_id"]: int(r["serial"], 16)
                    for r in await conn.fetch(
                        "SELECT device_id, serial FROM devices.slots "
                        "WHERE serial IS NOT NULL"
                    )
                }
                pending = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM ca.outbox) "
                    "+ (SELECT count(*) FROM dms.outbox) "
                    "+ (SELECT count(*) FROM devices.outbox)"
                )
                if pending == 0 and held == results.serials:
                    return
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _nothing_dead_lettered(stack: Stack) -> None:
    topology = Topology(stack.prefix)
    # The queues of the services this suite runs (the others are never declared here).
    suite_queues = tuple(topology.queue(w, "") for w in ("ca", "dms", "devices"))
    connection = await aio_pika.connect(stack.rabbit.url)
    async with connection:
        channel = await connection.channel()
        dead = {
            name: (
                await channel.declare_queue(name, passive=True)
            ).declaration_result.message_count
            for name in topology.worker_queues()
            if name.endswith(".dead") and name.startswith(suite_queues)
        }
    assert dict.fromkeys(dead, 0) == dead
