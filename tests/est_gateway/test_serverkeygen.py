"""serverkeygen bounds over real HTTPS (issue 14, RFC 7030 §4.4): key types outside
P-256, P-384 and RSA 2048-4096 are refused with 400 before anything is generated,
authorization comes before key generation, and generation happens off the event loop.

CSRs are made by openssl (the RSA-8192 one once, in tests/data: generating its key
takes openssl about 17 s here).
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contracts.ca import CAView, CreateCA
from runtime.bus import Bus
from tests import est_client
from tests.conftest import Gateway
from tests.est_gateway.test_gateway import Stage, new_stage, openssl_csr
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

DATA = Path(__file__).parent.parent / "data"


def openssl_keyed_csr(directory: Path, common_name: str, newkey: list[str]) -> bytes:
    """A base64 DER CSR from ``openssl req -new`` with the given -newkey arguments."""
    der = subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            *newkey,
            "-nodes",
            "-keyout",
            str(directory / f"{uuid.uuid4().hex}.key"),
            "-subj",
            f"/CN={common_name}",
            "-outform",
            "DER",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return base64.encodebytes(der)


def rsa8192_csr() -> bytes:
    """openssl req -newkey rsa:8192 -subj /CN=big, made once (tests/data)."""
    pem = (DATA / "rsa8192.csr.pem").read_bytes()
    csr = x509.load_pem_x509_csr(pem)
    key = csr.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert 8192 == key.key_size
    return pem


@pytest.fixture
async def stage(bus: Bus, gateway: Gateway, tmp_path: Path) -> Stage:
    return await new_stage(bus, gateway, tmp_path)


async def device_certificates(db: asyncpg.Pool, device_id: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM ca.certificates WHERE device_id = $1", device_id
        )
    )


@pytest.mark.parametrize(
    ("newkey", "asked"),
    [
        (["-newkey", "rsa:512"], "RSA-512"),
        (["-newkey", "rsa:1024"], "RSA-1024"),
        (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime192v1"], "secp192r1"),
        (["-newkey", "ed25519"], "Ed25519"),
    ],
    ids=["rsa-512", "rsa-1024", "p-192", "ed25519"],
)
async def test_key_types_outside_the_set_are_400(
    stage: Stage, db: asyncpg.Pool, newkey: list[str], asked: str
) -> None:
    """A CSR naming a key type the server does not make: 400 naming it, nothing issued."""
    device_id = unique("keygen")
    body = openssl_keyed_csr(stage.directory, device_id, newkey)
    status, _, payload = await stage.est.enroll(
        stage.ca.name, body, stage.dms_identity, "serverkeygen"
    )
    assert 400 == status
    reason = payload.decode()
    assert "serverkeygen does not make" in reason
    assert asked in reason
    assert "ec-p256" in reason
    assert 0 == await device_certificates(db, device_id)


@pytest.mark.parametrize(
    ("newkey", "check"),
    [
        (
            ["-newkey", "rsa:2048"],
            lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048,
        ),
        (
            ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            lambda k: (
                isinstance(k, ec.EllipticCurvePrivateKey)
                and k.curve.name == "secp384r1"
            ),
        ),
    ],
    ids=["rsa-2048", "p-384"],
)
async def test_allowed_key_types_are_generated(
    stage: Stage, newkey: list[str], check: object
) -> None:
    """RSA-2048 and P-384 CSRs get a server-made key of that type and its certificate."""
    body = openssl_keyed_csr(stage.directory, unique("keygen"), newkey)
    status, headers, payload = await stage.est.enroll(
        stage.ca.name, body, stage.dms_identity, "serverkeygen"
    )
    assert 200 == status, payload
    made = est_client.decode_serverkeygen(headers["Content-Type"], payload)
    assert check(made.private_key)  # type: ignore[operator]
    assert made.private_key.public_key() == made.certificates[0].public_key()


async def test_authorization_comes_before_key_generation(
    stage: Stage, bus: Bus
) -> None:
    """A DMS that may not enroll with the CA is refused (403, the DMS worker's reason)
    for serverkeygen as for simpleenroll, before any key is made."""
    other = CAView.model_validate(
        (await call(bus, CreateCA(name=unique("keygen-other")))).result
    )
    await stage.est.gateway.knows(other.name)
    body, _ = openssl_csr(stage.directory, unique("keygen"))
    status, _, payload = await stage.est.enroll(
        other.name, body, stage.dms_identity, "serverkeygen"
    )
    assert 403 == status
    assert "allow-list" in payload.decode()


async def test_rsa8192_flood_is_refused_while_enrollments_succeed(
    stage: Stage,
) -> None:
    """Five RSA-8192 serverkeygen requests all get 400 while three enrollments get
    200, all within a deadline far below one RSA-8192 generation (17 s with openssl)."""
    big = rsa8192_csr()
    enrollments = [openssl_csr(stage.directory, unique("beside"))[0] for _ in range(3)]
    async with asyncio.timeout(8):
        results = await asyncio.gather(
            *[
                stage.est.request(
                    "POST",
                    f"/.well-known/est/{stage.ca.name}/serverkeygen",
                    identity=stage.dms_identity,
                    body=big,
                )
                for _ in range(5)
            ],
            *[
                stage.est.enroll(stage.ca.name, body, stage.dms_identity)
                for body in enrollments
            ],
        )
    assert [400] * 5 + [200] * 3 == [status for status, _, _ in results]
    assert all(b"RSA-8192" in payload for _, _, payload in results[:5])
