"""OCSP and CRLs: our validation authority against OpenBao's pki/ocsp, on this machine.

Starts a CA worker and a VA (fresh database and bus names) and an OpenBao dev server
(plain HTTP, like the VA: OCSP responses are signed objects), each with a P-256 CA and
``--certs`` issued certificates. Then, in the same run:

1. OCSP responses/s, p50/p99, with keep-alive and with a new connection per request, at
   each concurrency (POST, no nonce: the RFC 5019 profile), with the ratio to OpenBao;
2. the time from a ``certificate.revoke`` accepted to the responder answering
   ``revoked``, p50/p99 over ``--revocations`` revocations;
3. the time to build and sign a full CRL of 100,000 revoked entries: in process
   (``ca_worker.revocation.build_crl``) and through the CA worker (``crl.sign``: read
   the rows, build, sign, publish).

    .venv/bin/python bench/ocsp.py [--count 3000] [--concurrency 8,32]
        [--revocations 200] [--crl-entries 100000] [--systems lamassu,openbao]
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/ocsp.py`` puts bench/ first on sys.path, where bench/engines.py would
# shadow the ``engines`` package: use the repository root instead (``bench.enroll``).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from bench.enroll import Processes, Result, free_port
from ca_worker.issuance import Issuer, build_ca_certificate
from ca_worker.revocation import RevokedEntry, build_crl
from contracts.ca import (
    CAView,
    CertificateView,
    CreateCA,
    ListCAs,
    RevocationReason,
    RevokeCertificate,
    SignCertificate,
)
from contracts.envelope import new_message
from contracts.names import Topology
from contracts.va import SignCRL
from runtime.bus import Bus
from runtime.topology import remove_topology

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN = os.environ.get(
    "PKI_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


def _csr_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uuid.uuid4().hex[:12])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name)
    return (
        csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    )


def ocsp_body(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    request = ocsp.OCSPRequestBuilder().add_certificate(
        certificate,
        issuer,
        hashes.SHA1(),  # noqa: S303 - the CertID hash of RFC 5019 §2.1.1
    )
    return request.build().public_bytes(serialization.Encoding.DER)


async def call(bus: Bus, request: Any) -> dict[str, Any]:
    message = new_message(source="bench", data=request, now=datetime.now(UTC))
    reply = await bus.request(message, timeout=120)
    if not reply.ok:
        raise RuntimeError(f"{request.TYPE}: {reply.error}")
    if not isinstance(reply.result, dict):
        raise TypeError(f"{request.TYPE}: the reply has no result")
    return reply.result


@dataclass
class Target:
    """A responder under test: where to POST, what to ask, whose CPU to count."""

    url: str
    bodies: list[bytes]
    processes: Processes


# --- our stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    target: Target
    bus: Bus
    pool: asyncpg.Pool
    ca: CAView
    issuer: x509.Certificate
    certificates: list[x509.Certificate]
    serials: list[str]


@contextlib.asynccontextmanager
async def lamassu_stack(workdir: Path, certs: int) -> AsyncIterator[Stack]:
    """A CA worker and a VA; a P-256 CA with ``certs`` certificates, answered good."""
    database = f"lamassu_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    port = free_port()
    env = dict(os.environ)
    env.update(
        POSTGRES_DATABASE=database,
        AMQP_URL=AMQP_URL,
        AMQP_PREFIX=prefix,
        GOPEM_DATA=str(workdir / "keys"),
        VA_KEYS=str(workdir / "va-keys"),
        VA_HOST="127.0.0.1",
        VA_PORT=str(port),
        VA_URL=f"http://127.0.0.1:{port}",
        SWEEP_SCHEDULE="off",
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warning"),
        LOG_FORMAT="json",
    )
    log = (workdir / "services.log").open("ab")
    names = ["ca_worker", "va_worker"]
    children = [
        subprocess.Popen([PYTHON, "-m", n], env=env, cwd=ROOT, stdout=log, stderr=log)
        for n in names
    ]
    topology = Topology(prefix)
    bus: Bus | None = None
    pool: asyncpg.Pool | None = None
    try:
        bus = await _connect(topology)
        pool = await asyncpg.create_pool(
            f"postgresql://postgres@127.0.0.1:5432/{database}", min_size=1, max_size=2
        )
        assert pool is not None  # noqa: S101 - create_pool returns the pool
        ca = CAView.model_validate(await call(bus, CreateCA(name="bench-ca")))
        issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
        views = [
            CertificateView.model_validate(
                await call(bus, SignCertificate(ca="bench-ca", csr_pem=_csr_pem()))
            )
            for _ in range(certs)
        ]
        certificates = [
            x509.load_pem_x509_certificate(v.certificate_pem.encode()) for v in views
        ]
        bodies = [ocsp_body(c, issuer) for c in certificates]
        url = f"http://127.0.0.1:{port}/ocsp"
        await _until_good(url, bodies[-1])

        def processes() -> dict[str, list[int]]:
            # Serving touches neither the broker nor the database.
            return {"va_worker": [children[1].pid]}

        yield Stack(
            Target(url, bodies, processes),
            bus,
            pool,
            ca,
            issuer,
            certificates,
            [v.serial for v in views],
        )
    finally:
        if bus is not None:
            await bus.close()
        if pool is not None:
            await pool.close()
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
        await remove_topology(AMQP_URL, topology, topology.worker_queues())


async def _connect(topology: Topology) -> Bus:
    deadline = time.monotonic() + 90
    while True:
        try:
            bus = await Bus.connect(AMQP_URL, topology)
            await bus.request(
                new_message(
                    source="bench",
                    data=ListCAs(),
                    now=datetime.now(UTC),
                ),
                timeout=2,
            )
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return bus


async def _status(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> ocsp.OCSPCertStatus | None:
    async with session.post(url, data=body, headers=OCSP_REQUEST) as response:
        answer = ocsp.load_der_ocsp_response(await response.read())
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return None
    return answer.certificate_status


async def _until_good(url: str, body: bytes) -> None:
    """Until the VA has its responder certificate (the CA worker issues it)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(90):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                if await _status(session, url, body) is ocsp.OCSPCertStatus.GOOD:
                    return
            await asyncio.sleep(0.05)


# --- OpenBao -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def openbao(workdir: Path, certs: int) -> AsyncIterator[Target]:
    """An OpenBao dev server on plain HTTP with a P-256 root and ``certs`` stored
    certificates (as bench/enroll.py starts it, without the TLS listener)."""
    bao = shutil.which("bao") or str(ROOT / ".venv" / "bin" / "bao")
    port = free_port()
    log = (workdir / "bao.log").open("ab")
    process = subprocess.Popen(
        [
            bao,
            "server",
            "-dev",
            "-dev-root-token-id=bench",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"X-Vault-Token": "bench"}) as session:
            async with asyncio.timeout(60):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{url}/v1/sys/health") as response:
                            if response.status == 200:
                                break
                    await asyncio.sleep(0.1)
            setup = [
                ("/v1/sys/mounts/pki", {"type": "pki"}),
                ("/v1/sys/mounts/pki/tune", {"max_lease_ttl": "87600h"}),
                (
                    "/v1/pki/root/generate/internal",
                    {"common_name": "bao-bench-root", "key_type": "ec", "ttl": "8760h"},
                ),
                (
                    "/v1/pki/roles/device",
                    {"allow_any_name": True, "key_type": "any", "no_store": False},
                ),
            ]
            for path, body in setup:
                async with session.post(f"{url}{path}", json=body) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"{path}: {await response.text()}")
            async with session.get(f"{url}/v1/pki/ca/pem") as response:
                issuer = x509.load_pem_x509_certificate(await response.read())
            bodies = []
            for _ in range(certs):
                async with session.post(
                    f"{url}/v1/pki/sign/device",
                    json={"csr": _csr_pem(), "common_name": "device"},
                ) as response:
                    pem = (await response.json())["data"]["certificate"]
                bodies.append(
                    ocsp_body(x509.load_pem_x509_certificate(pem.encode()), issuer)
                )
        target = Target(
            f"{url}/v1/pki/ocsp", bodies, lambda: {"openbao": [process.pid]}
        )
        await _until_good(target.url, bodies[-1])
        yield target
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# --- measurements ------------------------------------------------------------------------


class _HTTP:
    """A minimal HTTP/1.1 client for the load (POST, Content-Length bodies): aiohttp's
    client costs more CPU per request than the responders measured, on the same two
    cores, so it would measure itself. ``close`` sends ``Connection: close`` and opens
    a new connection for each request."""

    def __init__(self, url: str, *, close: bool) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/ocsp-request\r\n"
            + ("Connection: close\r\n" if close else "")
        ).encode()
        self._close = close
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> bool:
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if self._close:
            await self.aclose()
        return head.startswith(b"HTTP/1.1 200")

    async def aclose(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _drive(
    label: str, level: int, jobs: list[bytes], target: Target, *, close: bool
) -> Result:
    """``jobs`` over ``level`` connections (or connection slots, with ``close``)."""
    queue = list(reversed(jobs))
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        client = _HTTP(target.url, close=close)
        try:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                ok = await client.post(body)
                latencies.append(time.perf_counter() - started)
                failures += not ok
        finally:
            await client.aclose()

    before = _cpu(target.processes)
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level)))
    seconds = time.perf_counter() - started
    after = _cpu(target.processes)
    cpu = {"client": time.process_time() - client_before}
    cpu |= {name: after[name] - before.get(name, 0.0) for name in after}
    return Result(label, level, len(jobs), seconds, latencies, failures, cpu)


def _cpu(processes: Processes) -> dict[str, float]:
    """CPU seconds so far of each process group (proc(5) utime + stime)."""
    found = {}
    for name, pids in processes().items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        found[name] = total
    return found


async def throughput(
    system: str, target: Target, args: argparse.Namespace
) -> list[Result]:
    """Responses/s at each concurrency, keep-alive and a new connection per request."""
    results = []
    for level in args.levels:
        for mode, close in (("keep-alive", False), ("new conn", True)):
            jobs = [random.choice(target.bodies) for _ in range(args.count)]
            result = await _drive(f"{system} {mode}", level, jobs, target, close=close)
            print(f"# {result.label} c={level}: {result.rate:.0f}/s", file=sys.stderr)
            results.append(result)
    return results


async def revocation_latency(stack: Stack, count: int) -> list[float]:
    """Seconds from each certificate.revoke's reply to the first ``revoked`` answer."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        for serial, body in list(zip(stack.serials, stack.target.bodies, strict=True))[
            :count
        ]:
            await call(stack.bus, RevokeCertificate(serial=serial))
            accepted = time.perf_counter()
            async with asyncio.timeout(30):
                # Polling is the measurement: how soon a relying party sees it.
                while True:
                    status = await _status(session, stack.target.url, body)
                    if status is ocsp.OCSPCertStatus.REVOKED:
                        break
                    await asyncio.sleep(0.001)
            latencies.append(time.perf_counter() - accepted)
    return latencies


def crl_in_process(entries: int) -> float:
    """Seconds to build and sign a full CRL of ``entries`` with a P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    ca = build_ca_certificate(
        name="bench",
        public_key=key.public_key(),
        issuer=None,
        self_signer=key,
        serial=1,
        now=now,
        validity=timedelta(days=30),
    )
    revoked = [
        RevokedEntry(random.getrandbits(127) + 1, now, RevocationReason.KEY_COMPROMISE)
        for _ in range(entries)
    ]
    started = time.perf_counter()
    crl = build_crl(
        issuer=Issuer(ca, key),
        number=1,
        entries=revoked,
        this_update=now,
        next_update=now + timedelta(days=7),
    )
    crl.public_bytes(serialization.Encoding.DER)
    return time.perf_counter() - started


async def crl_through_ca_worker(stack: Stack, entries: int) -> tuple[float, int]:
    """Seconds for ``crl.sign`` of the CA once it has ``entries`` revoked rows (written
    straight into schema ca, as months of revocations would have left them: revoked
    before the last full CRL, so the delta signed with it lists none of them)."""
    now = datetime.now(UTC) - timedelta(days=1)
    rows = [
        (
            format(random.getrandbits(120) | 1 << 120, "x"),
            stack.ca.name,
            "CN=bench",
            stack.ca.subject,
            "REVOKED",
            now,
            now + timedelta(days=365),
            now,
            RevocationReason.KEY_COMPROMISE.value,
            "bench",
            b"\x30",
        )
        for _ in range(entries)
    ]
    columns = [
        "serial",
        "ca",
        "subject",
        "issuer",
        "status",
        "not_before",
        "not_after",
        "revoked_at",
        "revocation_reason",
        "csr_fingerprint",
        "certificate_der",
    ]
    async with stack.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "certificates", schema_name="ca", records=rows, columns=columns
        )
    started = time.perf_counter()
    view = await call(stack.bus, SignCRL(ca=stack.ca.name))
    return time.perf_counter() - started, int(view["entries"])


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(
    results: list[Result],
    revocations: list[float],
    crl: dict[str, float],
    args: argparse.Namespace,
) -> None:
    print(
        f"\nOCSP on this machine ({os.cpu_count()} cores), {args.count} requests per "
        f"row, {args.certs} certificates, P-256 CAs, {datetime.now(UTC):%Y-%m-%d}"
    )
    print(
        f"{'responder':<22}{'conc':>5}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
    )
    for r in results:
        print(
            f"{r.label:<22}{r.concurrency:>5}{r.rate:>9.0f}{r.percentile(0.5):>9.2f}"
            f"{r.percentile(0.99):>9.2f}{r.failures:>8}"
        )
    print("\nserver CPU per response, ms (user + system)")
    for r in results:
        parts = "  ".join(
            f"{n} {1000 * s / r.count:.3f}" for n, s in r.cpu.items() if n != "client"
        )
        print(f"  {r.label:<22} c={r.concurrency:<3} {parts}")
    pairs = [
        (m, t)
        for m in results
        for t in results
        if m.label.startswith("lamassu ")
        and t.label.startswith("openbao ")
        and m.concurrency == t.concurrency
        and m.label.removeprefix("lamassu ") == t.label.removeprefix("openbao ")
    ]
    if pairs:
        print("\nratio lamassu / openbao (per s)")
    for m, t in pairs:
        mode = m.label.removeprefix("lamassu ")
        print(f"  c={m.concurrency:<3} {mode:<12} {m.rate / t.rate:5.2f}x")
    if revocations:
        print(
            f"\ncertificate.revoke accepted -> OCSP revoked, {len(revocations)} "
            f"revocations: p50 {_ms(revocations, 0.5):.1f} ms, "
            f"p99 {_ms(revocations, 0.99):.1f} ms, max {max(revocations) * 1000:.1f} ms"
        )
    for label, seconds in crl.items():
        print(f"full CRL of {args.crl_entries} entries, {label}: {seconds:.2f} s")
    print(
        json.dumps(
            {
                "rows": [
                    {
                        "responder": r.label,
                        "concurrency": r.concurrency,
                        "per_s": round(r.rate),
                        "p50_ms": round(r.percentile(0.5), 2),
                        "p99_ms": round(r.percentile(0.99), 2),
                        "failed": r.failures,
                    }
                    for r in results
                ],
                "revocation_ms": {
                    "p50": round(_ms(revocations, 0.5), 1) if revocations else None,
                    "p99": round(_ms(revocations, 0.99), 1) if revocations else None,
                },
                "crl_seconds": {k: round(v, 3) for k, v in crl.items()},
            }
        )
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="requests per row")
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--certs", type=int, default=250, help="certificates per CA")
    parser.add_argument("--revocations", type=int, default=200)
    parser.add_argument("--crl-entries", type=int, default=100_000)
    parser.add_argument("--systems", default="lamassu,openbao")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.certs = max(args.certs, args.revocations)
    systems = args.systems.split(",")
    results: list[Result] = []
    revocations: list[float] = []
    crl: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lamassu-bench-") as tmp:
        if "openbao" in systems:
            async with openbao(Path(tmp), args.certs) as target:
                results += await throughput("openbao", target, args)
        if "lamassu" in systems:
            async with lamassu_stack(Path(tmp), args.certs) as stack:
                results += await throughput("lamassu", stack.target, args)
                revocations = await revocation_latency(stack, args.revocations)
                if args.crl_entries:
                    seconds, entries = await crl_through_ca_worker(
                        stack, args.crl_entries
                    )
                    crl[f"crl.sign through the CA worker ({entries} entries)"] = seconds
    if args.crl_entries:
        crl["build and sign in process"] = crl_in_process(args.crl_entries)
    report(results, revocations, crl, args)


if __name__ == "__main__":
    # kill and timeout clean up as Ctrl-C does: the workers this started are stopped
    # and its database and queues removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    uvloop.run(main())
