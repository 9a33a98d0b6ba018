"""Proof-of-possession linking over real TLS (issue 14, RFC 7030 §3.5): the CSR's
challengePassword is the base64 tls-unique of the connection it is sent on.

The client opens the TLS 1.2 connection first, reads its tls-unique, has openssl make
the CSR with it, and sends the request on that same connection (plain HTTP/1.1).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from contracts.dms import UpdateDMSPolicy
from runtime.bus import Bus
from tests import est_client
from tests.conftest import Gateway
from tests.est_gateway.test_gateway import Identity, Stage, new_stage
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

# RFC 2985 §5.4.1 challengePassword, as DER: what /csrattrs lists.
CHALLENGE_PASSWORD_DER = bytes.fromhex("06092a864886f70d010907")


def openssl_csr_with_password(
    directory: Path, common_name: str, password: str | None
) -> bytes:
    """DER CSR from ``openssl req`` with a new P-256 key and, if given, a
    challengePassword attribute."""
    key = directory / f"{unique('k')}.key"
    subprocess.run(
        [
            "openssl",
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            str(key),
        ],
        check=True,
        capture_output=True,
    )
    config = directory / f"{unique('req')}.cnf"
    attributes = f"[attrs]\nchallengePassword = {password}\n" if password else ""
    config.write_text(
        "[req]\nprompt = no\ndistinguished_name = dn\n"
        + ("attributes = attrs\n" if password else "")
        + f"[dn]\nCN = {common_name}\n"
        + attributes
    )
    return subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-key",
            str(key),
            "-config",
            str(config),
            "-outform",
            "DER",
        ],
        check=True,
        capture_output=True,
    ).stdout


async def enroll_on_one_connection(
    gateway: Gateway,
    stage: Stage,
    identity: Identity,
    *,
    tls: ssl.TLSVersion,
    password: str | bool | None,
) -> tuple[int, bytes]:
    """simpleenroll whose CSR is made after the handshake; ``password`` True means
    the connection's own tls-unique, a string that string, None none."""
    context = ssl.create_default_context(cafile=str(gateway.server_certificate))
    context.minimum_version = context.maximum_version = tls
    context.load_cert_chain(identity.cert, identity.key)
    address = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(
        address.hostname, address.port, ssl=context
    )
    try:
        if password is True:
            binding = writer.get_extra_info("ssl_object").get_channel_binding(
                "tls-unique"
            )
            assert binding is not None
            password = base64.b64encode(binding).decode()
        der = openssl_csr_with_password(
            stage.directory,
            unique("pop"),
            password if isinstance(password, str) else None,
        )
        body = base64.encodebytes(der)
        writer.write(
            f"POST /.well-known/est/{stage.ca.name}/simpleenroll HTTP/1.1\r\n"
            f"Host: {address.hostname}\r\nContent-Type: application/pkcs10\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        async with asyncio.timeout(30):
            response = await reader.read()
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.fixture
async def stage(bus: Bus, gateway: Gateway, tmp_path: Path) -> Stage:
    return await new_stage(bus, gateway, tmp_path)


async def certificates(db: asyncpg.Pool, ca: str) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM ca.certificates WHERE ca = $1", ca)
    )


async def test_wrong_tls_unique_is_refused_and_right_one_accepted(
    stage: Stage, gateway: Gateway, db: asyncpg.Pool
) -> None:
    """TLS 1.2: a challengePassword that is not this connection's tls-unique gets 403
    and nothing is issued; the connection's own gets 200."""
    wrong = base64.b64encode(b"\0" * 12).decode()
    status, payload = await enroll_on_one_connection(
        gateway, stage, stage.dms_identity, tls=ssl.TLSVersion.TLSv1_2, password=wrong
    )
    assert 403 == status
    assert b"not this TLS connection's tls-unique" in payload
    assert 0 == await certificates(db, stage.ca.name)
    status, payload = await enroll_on_one_connection(
        gateway, stage, stage.dms_identity, tls=ssl.TLSVersion.TLSv1_2, password=True
    )
    assert 200 == status, payload
    assert 1 == len(est_client.decode_certs_only(payload))


async def test_dms_requiring_pop(
    stage: Stage, gateway: Gateway, bus: Bus, db: asyncpg.Pool
) -> None:
    """--require-pop: unlinked requests (no challengePassword, or TLS 1.3, which has no
    tls-unique) get 403 saying so; a linked TLS 1.2 request gets 200; /csrattrs lists
    challengePassword for the DMS's CA."""
    reply = await call(bus, UpdateDMSPolicy(name=stage.dms.name, require_pop=True))
    assert reply.ok, reply.error
    for tls, password in (
        (ssl.TLSVersion.TLSv1_2, None),
        (ssl.TLSVersion.TLSv1_3, "anything"),
    ):
        status, payload = await enroll_on_one_connection(
            gateway, stage, stage.dms_identity, tls=tls, password=password
        )
        assert 403 == status
        assert b"requires proof-of-possession linking" in payload
        assert b"TLS 1.3 has no tls-unique" in payload
    assert 0 == await certificates(db, stage.ca.name)
    status, payload = await enroll_on_one_connection(
        gateway, stage, stage.dms_identity, tls=ssl.TLSVersion.TLSv1_2, password=True
    )
    assert 200 == status, payload

    async with asyncio.timeout(10):
        while True:
            status, _, body = await stage.est.request(
                "GET", f"/.well-known/est/{stage.ca.name}/csrattrs", content_type=None
            )
            if status == 200 and CHALLENGE_PASSWORD_DER in base64.b64decode(body):
                break
            await asyncio.sleep(0.05)
