"""Enrollment throughput: our EST pipeline against OpenBao's pki/sign, on this machine.

Starts its own CA, DMS and device workers and EST gateway (fresh database and bus names),
and an OpenBao dev server with a TLS listener whose PKI role stores certificates. Then,
at each concurrency, runs a fixed number of enrollments with a new TLS connection per
request and with keep-alive, and prints enrollments/s, p50/p99 latency and the ratio.

    .venv/bin/python bench/enroll.py [--count 300] [--concurrency 1,8,32] [--gateways N]
        [--systems lamassu,openbao] [--modes new,keep-alive] [--shared-identity]

Our services run under their own broker identities (``lamassu bus setup`` in a vhost
of the run, with rabbitmqctl), as deployed; ``--shared-identity`` runs them all as
AMQP_URL's user instead (no sender checks), the set-up before issue 13.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/enroll.py`` puts bench/ first on sys.path, where bench/engines.py would
# shadow the ``engines`` package: drop that entry before importing the project.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import uvloop
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contracts.names import Topology
from contracts.senders import IDENTITIES
from est_gateway.tls import ServerCredentials, server_context
from lamassu_cli.credentials import read_env
from lamassu_cli.up import IDENTITY_OF
from runtime.topology import remove_topology

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN = os.environ.get(
    "PKI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def csr_bodies(count: int) -> list[bytes]:
    """Base64 DER CSRs, made before timing starts."""
    bodies = []
    for _ in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"bench-{uuid.uuid4().hex[:12]}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256())
        )
        bodies.append(base64.encodebytes(csr.public_bytes(serialization.Encoding.DER)))
    return bodies


@dataclass
class Result:
    label: str
    concurrency: int
    count: int
    seconds: float
    latencies: list[float]
    failures: int
    # CPU seconds each process group spent during the run (client included).
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# Process groups to account CPU to: name -> pids, looked up at each reading.
Processes = Callable[[], dict[str, list[int]]]


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (proc(5): utime, stime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def named(command: str) -> list[int]:
    """Every process whose command name (proc(5) comm) is ``command``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
    return found


def _cpu_reading(processes: Processes) -> dict[str, dict[int, float]]:
    return {
        name: {pid: _cpu_seconds(pid) for pid in pids}
        for name, pids in processes().items()
    }


def _cpu_spent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds per group between two readings; a process born since counts whole."""
    return {
        name: sum(
            seconds - before.get(name, {}).get(pid, 0.0)
            for pid, seconds in pids.items()
        )
        for name, pids in after.items()
    }


async def drive(  # noqa: PLR0917 - a benchmark knob list
    label: str,
    concurrency: int,
    jobs: list[bytes],
    send: Callable[[aiohttp.ClientSession, bytes], Awaitable[bool]],
    session_factory: Callable[[], aiohttp.ClientSession],
    processes: Processes,
) -> Result:
    """Run ``jobs`` with ``concurrency`` workers, each with its own client session."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        async with session_factory() as session:
            while not queue.empty():
                job = queue.get_nowait()
                started = time.perf_counter()
                ok = await send(session, job)
                latencies.append(time.perf_counter() - started)
                failures += not ok

    cpu_before = _cpu_reading(processes)
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu = {"client": time.process_time() - client_before}
    cpu |= _cpu_spent(cpu_before, _cpu_reading(processes))
    return Result(label, concurrency, len(jobs), seconds, latencies, failures, cpu)


# --- our PKI --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lamassu_stack(
    workdir: Path, gateways: int = 1, *, identities: bool = True
) -> AsyncIterator[tuple[dict[str, str], Processes]]:
    """The PKI's processes; ``gateways`` EST gateway processes share the port."""
    database = f"lamassu_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    port = free_port()
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    env = dict(os.environ)
    env.update(
        POSTGRES_DATABASE=database,
        AMQP_URL=AMQP_URL,
        AMQP_PREFIX=prefix,
        GOPEM_DATA=str(workdir / "keys"),
        EST_TLS_DIR=str(workdir / "tls"),
        EST_PORT=str(port),
        EST_HOST="127.0.0.1",
        EST_WAIT_SECONDS="60",
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warning"),
        LOG_FORMAT="json",
        # No admin servers: their default ports belong to whatever else runs here,
        # and several gateway processes would share one.
        ADMIN_PORT="0",
    )
    log = (workdir / "services.log").open("ab")
    services = ["ca_worker", "dms_worker", "device_worker"] + ["est_gateway"] * gateways
    vhost = f"bench-{prefix.rstrip('.')}"
    own = dict.fromkeys(services, env)
    if identities:
        own, env = _identities(workdir, env, vhost, prefix, services)
    children = [
        subprocess.Popen(
            [PYTHON, "-m", name], env=own[name], cwd=ROOT, stdout=log, stderr=log
        )
        for name in services
    ]
    try:
        lamassu = [PYTHON, "-m", "lamassu_cli"]
        subprocess.run(
            [*lamassu, "wait", "--timeout", "90"], env=env, check=True, cwd=ROOT
        )
        subprocess.run(
            [*lamassu, "ca", "create", "--name", "bench-ca"],
            env=env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                *lamassu,
                "dms",
                "create",
                "--name",
                "bench-dms",
                "--authorized-ca",
                "bench-ca",
                "--out",
                str(workdir),
            ],
            env=env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not (workdir / "tls" / "server.pem").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start; see services.log")
            await asyncio.sleep(0.1)
        env["URL"] = f"https://127.0.0.1:{port}/.well-known/est/bench-ca/simpleenroll"

        def processes() -> dict[str, list[int]]:
            groups: dict[str, list[int]] = {}
            for name, child in zip(services, children, strict=True):
                groups.setdefault(name, []).append(child.pid)
            return groups | {
                "rabbitmq": named("beam.smp"),
                "postgres": named("postgres"),
            }

        yield env, processes
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        log.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        if identities:
            users = [["delete_user", f"{prefix}{role}"] for role in IDENTITIES]
            for command in (["delete_vhost", vhost], *users):
                subprocess.run(
                    ["rabbitmqctl", "-q", *command], check=False, capture_output=True
                )
        else:
            topology = Topology(prefix)
            await remove_topology(AMQP_URL, topology, topology.worker_queues())


def _identities(
    workdir: Path, env: dict[str, str], vhost: str, prefix: str, services: list[str]
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``lamassu bus setup`` for this run; each service's environment, and the
    admin's (for the CLI)."""
    credentials = workdir / "credentials"
    broker = urlsplit(AMQP_URL)
    subprocess.run(
        [
            PYTHON, "-m", "lamassu_cli", "bus", "setup",
            "--vhost", vhost, "--prefix", prefix, "--credentials", str(credentials),
            "--host", broker.hostname or "127.0.0.1", "--port", str(broker.port or 5672),
        ],
        env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip

    def of(role: str) -> dict[str, str]:
        return env | read_env(credentials / f"{role}.env")

    return {name: of(IDENTITY_OF[name]) for name in services}, of("admin")


def lamassu_context(workdir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(workdir / "tls" / "server.pem"))
    context.load_cert_chain(workdir / "bench-dms.pem", workdir / "bench-dms.key")
    return context


# --- the floor: TLS and HTTP alone -------------------------------------------------------


def client_credentials(workdir: Path) -> tuple[Path, Path, Path]:
    """A P-256 issuing CA and a client certificate from it, as a DMS has: (CA file,
    client certificate file, client key file)."""
    now = datetime.now(UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        is_ca = subject == "floor-ca"
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("floor-ca"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), True)
            .sign(signer, hashes.SHA256())
        )

    ca_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    files = (
        workdir / "floor-ca.pem",
        workdir / "floor-client.pem",
        workdir / "floor.key",
    )
    pem = serialization.Encoding.PEM
    files[0].write_bytes(certificate("floor-ca", ca_key, ca_key).public_bytes(pem))
    files[1].write_bytes(
        certificate("floor-client", client_key, ca_key).public_bytes(pem)
    )
    files[2].write_bytes(
        client_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def serve_floor(workdir: Path, port: int) -> None:
    """The least an aiohttp EST gateway does: the gateway's own TLS context (P-256,
    client certificate verified), read the body, answer with a certificate-sized
    PKCS#7 body. No parsing, no bus, no signing: the ceiling for the pipeline."""
    credentials = ServerCredentials.load_or_create(workdir / "floor-tls", ["127.0.0.1"])
    context = server_context(credentials)
    context.load_verify_locations(workdir / "floor-ca.pem")
    body = base64.encodebytes(os.urandom(700))

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        if request.transport is None or not request.transport.get_extra_info(
            "peercert"
        ):
            return web.Response(status=401)
        return web.Response(
            body=body,
            headers={
                "Content-Type": "application/pkcs7-mime; smime-type=certs-only",
                "Content-Transfer-Encoding": "base64",
            },
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    # The gateway's event loop: run_service runs uvloop.
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        ssl_context=context,
        print=None,
        loop=uvloop.new_event_loop(),
    )


async def run_floor(workdir: Path, args: argparse.Namespace) -> list[Result]:
    _, cert_file, key_file = client_credentials(workdir)
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, __file__, "--serve-floor", str(workdir), str(port)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port)).close()
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the floor server did not start")
            await asyncio.sleep(0.1)
        context = ssl.create_default_context(
            cafile=str(workdir / "floor-tls" / "server.pem")
        )
        context.load_cert_chain(cert_file, key_file)
        url = f"https://127.0.0.1:{port}/.well-known/est/simpleenroll"
        return await measure(
            "floor",
            "new mTLS conn",
            context,
            lambda session, body: session.post(
                url, data=body, headers={"Content-Type": "application/pkcs10"}
            ),
            args,
            lambda: {"floor server": [server.pid]},
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


# --- OpenBao ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def openbao(workdir: Path) -> AsyncIterator[tuple[str, Processes]]:
    bao = shutil.which("bao") or str(ROOT / ".venv" / "bin" / "bao")
    port = free_port()
    log = (workdir / "bao.log").open("ab")
    process = subprocess.Popen(
        [
            bao,
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={workdir}",
            "-dev-root-token-id=bench",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"https://127.0.0.1:{port}"
    headers = {"X-Vault-Token": "bench"}
    try:
        connector = aiohttp.TCPConnector(ssl=False)
        async with aiohttp.ClientSession(
            connector=connector, headers=headers
        ) as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(f"{url}/v1/sys/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("OpenBao did not start; see bao.log")
                await asyncio.sleep(0.1)
            for method, path, body in [
                (
                    "POST",
                    "/v1/sys/mounts/pki",
                    {"type": "pki", "config": {"max_lease_ttl": "87600h"}},
                ),
                (
                    "POST",
                    "/v1/pki/root/generate/internal",
                    {
                        "common_name": "bao-bench-root",
                        "key_type": "ec",
                        "key_bits": 256,
                        "ttl": "87600h",
                    },
                ),
                # no_store=false: issued certificates are stored, as ours are.
                (
                    "POST",
                    "/v1/pki/roles/device",
                    {
                        "allow_any_name": True,
                        "key_type": "any",
                        "no_store": False,
                        "ttl": "8760h",
                        "enforce_hostnames": False,
                    },
                ),
            ]:
                async with session.request(
                    method, f"{url}{path}", json=body
                ) as response:
                    if response.status >= 300:
                        raise RuntimeError(
                            f"{path}: {response.status} {await response.text()}"
                        )
        yield url, lambda: {"openbao": [process.pid]}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def bao_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = (
        ssl.CERT_NONE
    )  # dev-tls self-signed; the handshake is still paid
    return context


# --- the run -------------------------------------------------------------------------------


async def measure(  # noqa: PLR0917 - a benchmark knob list
    system: str,
    new_connection: str,
    context: ssl.SSLContext,
    post: Callable[[aiohttp.ClientSession, bytes], Any],
    args: argparse.Namespace,
    processes: Processes,
    prepare: Callable[[bytes], bytes] = lambda body: body,
) -> list[Result]:
    """One system at each concurrency: a new TLS connection per request, then keep-alive.

    Both modes keep one client session per worker, so that the client spends its CPU on
    the requests, not on building sessions. ``force_close`` opens a new connection for
    each request, with a full handshake: aiohttp never offers a TLS session to resume.
    """

    async def send(session: aiohttp.ClientSession, body: bytes) -> bool:
        async with post(session, body) as response:
            await response.read()
            return bool(response.status == 200)

    def new_connections() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, force_close=True)
        )

    def keep_alive() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    modes = {
        "new": (new_connection, new_connections),
        "keep-alive": ("keep-alive", keep_alive),
    }
    results = []
    for level in args.levels:
        for mode in args.modes:
            label, factory = modes[mode]
            # Request bodies are made before the clock starts.
            jobs = [prepare(body) for body in csr_bodies(args.count)]
            print(f"# {system} {label} c={level}: started", file=sys.stderr)
            result = await drive(
                f"{system} {label}", level, jobs, send, factory, processes
            )
            print(f"# {result.label} c={level}: {result.rate:.0f}/s", file=sys.stderr)
            results.append(result)
    return results


async def run_lamassu(workdir: Path, args: argparse.Namespace) -> list[Result]:
    async with lamassu_stack(
        workdir, args.gateways, identities=not args.shared_identity
    ) as (env, processes):
        url = env["URL"]
        return await measure(
            "lamassu",
            "new mTLS conn",
            lamassu_context(workdir),
            lambda session, body: session.post(
                url, data=body, headers={"Content-Type": "application/pkcs10"}
            ),
            args,
            processes,
        )


async def run_openbao(workdir: Path, args: argparse.Namespace) -> list[Result]:
    async with openbao(workdir) as (bao_url, processes):
        sign_url = f"{bao_url}/v1/pki/sign/device"

        def bao_body(body: bytes) -> bytes:
            csr = x509.load_der_x509_csr(base64.decodebytes(body))
            pem = csr.public_bytes(serialization.Encoding.PEM).decode()
            return json.dumps({"csr": pem, "common_name": "device"}).encode()

        def bao(session: aiohttp.ClientSession, body: bytes) -> Any:
            return session.post(
                sign_url,
                data=body,
                headers={"X-Vault-Token": "bench", "Content-Type": "application/json"},
            )

        return await measure(
            "openbao", "new TLS conn", bao_context(), bao, args, processes, bao_body
        )


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nenrollments on this machine ({os.cpu_count()} cores), {args.count} per row, "
        f"{args.gateways} EST gateway process(es), {datetime.now(UTC):%Y-%m-%d}"
    )
    print(
        f"{'system':<26}{'conc':>5}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
    )
    for r in results:
        print(
            f"{r.label:<26}{r.concurrency:>5}{r.rate:>9.1f}{r.percentile(0.5):>9.1f}"
            f"{r.percentile(0.99):>9.1f}{r.failures:>8}"
        )
    print(
        "\nCPU per request, ms, by process (user + system; beam.smp is RabbitMQ, all "
        "postgres processes are PostgreSQL)"
    )
    for r in results:
        parts = "  ".join(
            f"{name} {1000 * seconds / r.count:.2f}" for name, seconds in r.cpu.items()
        )
        total = 1000 * sum(r.cpu.values()) / r.count
        print(f"  {r.label:<24} c={r.concurrency:<3} total {total:5.2f}: {parts}")
    for other in ("openbao", "floor"):
        pairs = [
            (mine, theirs)
            for mine in results
            for theirs in results
            if mine.label.startswith("lamassu ")
            and theirs.label.startswith(f"{other} ")
            and mine.concurrency == theirs.concurrency
            and mine.label.endswith("keep-alive") == theirs.label.endswith("keep-alive")
        ]
        if pairs:
            print(f"\nratio lamassu / {other} (per s)")
        for mine, theirs in pairs:
            mode = mine.label.removeprefix("lamassu ")
            print(
                f"  c={mine.concurrency:<3} {mode:<14} {mine.rate / theirs.rate:5.2f}x"
            )
    print(
        json.dumps(
            {
                "rows": [
                    {
                        "system": r.label,
                        "concurrency": r.concurrency,
                        "per_s": round(r.rate, 1),
                        "p50_ms": round(r.percentile(0.5), 1),
                        "p99_ms": round(r.percentile(0.99), 1),
                        "failed": r.failures,
                        "cpu_ms": {
                            name: round(1000 * seconds / r.count, 3)
                            for name, seconds in r.cpu.items()
                        },
                    }
                    for r in results
                ]
            }
        )
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=300, help="enrollments per measurement"
    )
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--gateways",
        type=int,
        default=int(os.environ.get("EST_WORKERS", "1")) or os.cpu_count() or 1,
        help="EST gateway processes sharing the port (default: EST_WORKERS, else 1; 0: one per core)",
    )
    parser.add_argument(
        "--systems",
        default="lamassu,openbao",
        help="comma-separated: lamassu, openbao, floor (TLS and HTTP alone, "
        "the ceiling of any aiohttp gateway here); ratios need lamassu",
    )
    parser.add_argument(
        "--modes",
        default="new,keep-alive",
        help="comma-separated: new (a new TLS connection per request), keep-alive",
    )
    parser.add_argument(
        "--shared-identity",
        action="store_true",
        help="every service as AMQP_URL's user (no sender checks): the comparison",
    )
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.modes = args.modes.split(",")
    systems = args.systems.split(",")
    runs = {"lamassu": run_lamassu, "openbao": run_openbao, "floor": run_floor}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="lamassu-bench-") as tmp:
        for system in systems:
            results += await runs[system](Path(tmp), args)
    report(results, args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-floor"]:  # run_floor's server process
        serve_floor(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        # kill and timeout clean up as Ctrl-C does: the workers this started are
        # stopped and its database and queues removed.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        asyncio.run(main())
