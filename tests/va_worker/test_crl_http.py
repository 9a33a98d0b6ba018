"""CRLs over real HTTP, checked with ``openssl crl`` and ``openssl verify -crl_check``
/ ``-crl_check_all``: signed by the CA through the CA worker, a delta CRL after each
revocation (debounced), and a new full CRL on demand."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from contracts.ca import RevocationReason, RevokeCA, RevokeCertificate
from contracts.va import CRLView, SignCRL
from runtime.bus import Bus
from tests.pki import call
from tests.va_worker.conftest import (
    VA,
    new_ca,
    new_leaf,
    openssl,
    save_crl,
    wait_crl,
    wait_status,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


async def verify(*args: str | Path) -> tuple[int, str]:
    return await openssl("verify", "-crl_check", *args)


async def test_revocation_reaches_the_delta_crl_then_the_full_one(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """The first CRLs come with the CA; a revocation is in the next delta CRL, which
    openssl applies to refuse the revoked leaf and accept the good one, without
    restarting anything; ``crl.sign`` then puts it in a new full CRL."""
    ca, ca_path = await new_ca(bus, tmp_path)
    revoked, good = (
        await new_leaf(bus, ca.name, tmp_path),
        await new_leaf(bus, ca.name, tmp_path),
    )
    full = await wait_crl(va.url, ca.name)
    delta = await wait_crl(va.url, f"{ca.name}-delta")
    full_path, delta_path = (
        save_crl(full, tmp_path / "full.pem"),
        save_crl(delta, tmp_path / "delta.pem"),
    )
    code, out = await openssl("crl", "-in", full_path, "-CAfile", ca_path, "-noout")
    assert (0, "verify OK") == (code, out.strip())
    assert [] == list(full)
    assert number(full) < number(delta)
    base = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert base.critical
    assert number(full) == base.value.crl_number

    reply = await call(
        bus,
        RevokeCertificate(
            serial=revoked.view.serial, reason=RevocationReason.KEY_COMPROMISE
        ),
    )
    assert reply.ok, reply.error
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    await wait_status(va.url, revoked.certificate, issuer, ocsp.OCSPCertStatus.REVOKED)
    delta = await wait_crl(va.url, f"{ca.name}-delta", at_least=number(delta) + 1)
    entry = delta.get_revoked_certificate_by_serial_number(
        revoked.certificate.serial_number
    )
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert x509.ReasonFlags.key_compromise == reason
    save_crl(delta, delta_path)
    code, out = await openssl("crl", "-in", delta_path, "-CAfile", ca_path, "-noout")
    assert (0, "verify OK") == (code, out.strip())

    # The full CRL alone predates the revocation: only the delta refuses the leaf.
    code, out = await verify("-CAfile", ca_path, "-CRLfile", full_path, revoked.path)
    assert 0 == code, out
    with_delta: list[str | Path] = [
        "-use_deltas",
        "-CAfile",
        ca_path,
        "-CRLfile",
        full_path,
    ]
    code, out = await verify(*with_delta, "-CRLfile", delta_path, revoked.path)
    assert 0 != code
    assert "certificate revoked" in out
    code, out = await verify(*with_delta, "-CRLfile", delta_path, good.path)
    assert 0 == code, out

    reply = await call(bus, SignCRL(ca=ca.name))
    assert reply.ok, reply.error
    published = CRLView.model_validate(reply.result)
    assert published.delta_base is None
    assert 1 == published.entries
    full = await wait_crl(va.url, ca.name, at_least=int(published.number))
    save_crl(full, full_path)
    code, out = await verify("-CAfile", ca_path, "-CRLfile", full_path, revoked.path)
    assert 0 != code
    assert "certificate revoked" in out
    code, out = await verify("-CAfile", ca_path, "-CRLfile", full_path, good.path)
    assert 0 == code, out


async def test_unknown_names_are_404(va: VA) -> None:
    """A CRL or CA certificate the VA does not have is 404, with a one-line reason."""
    async with aiohttp.ClientSession() as session:
        for path in ("/crl/nobody.crl", "/crl/nobody-delta.crl", "/ca/nobody.crt"):
            async with session.get(f"{va.url}{path}") as response:
                assert 404 == response.status, path
                assert 1 == len((await response.text()).strip().splitlines())


async def test_crl_check_all_through_a_subordinate_ca(
    bus: Bus, va: VA, tmp_path: Path
) -> None:
    """-crl_check_all checks every CA of the chain with its own CRL; a revoked leaf,
    then a revoked subordinate CA (in its parent's delta CRL), are refused."""
    root, root_path = await new_ca(bus, tmp_path)
    sub, sub_path = await new_ca(bus, tmp_path, parent=root.name)
    leaf, other = (
        await new_leaf(bus, sub.name, tmp_path),
        await new_leaf(bus, sub.name, tmp_path),
    )
    crls = {
        name: save_crl(await wait_crl(va.url, name), tmp_path / f"{name}.crl.pem")
        for name in (root.name, f"{root.name}-delta", sub.name, f"{sub.name}-delta")
    }
    chain: list[str | Path] = ["-crl_check_all", "-use_deltas", "-CAfile", root_path]
    chain += ["-untrusted", sub_path]
    for path in crls.values():
        chain += ["-CRLfile", path]
    code, out = await openssl("verify", *chain, leaf.path)
    assert 0 == code, out

    sub_delta = x509.load_pem_x509_crl(crls[f"{sub.name}-delta"].read_bytes())
    reply = await call(bus, RevokeCertificate(serial=leaf.view.serial))
    assert reply.ok, reply.error
    fresh = await wait_crl(va.url, f"{sub.name}-delta", at_least=number(sub_delta) + 1)
    save_crl(fresh, crls[f"{sub.name}-delta"])
    code, out = await openssl("verify", *chain, leaf.path)
    assert 0 != code
    assert "certificate revoked" in out
    code, out = await openssl("verify", *chain, other.path)
    assert 0 == code, out

    root_delta = x509.load_pem_x509_crl(crls[f"{root.name}-delta"].read_bytes())
    reply = await call(bus, RevokeCA(name=sub.name))
    assert reply.ok, reply.error
    fresh = await wait_crl(
        va.url, f"{root.name}-delta", at_least=number(root_delta) + 1
    )
    sub_serial = x509.load_pem_x509_certificate(sub.certificate_pem.encode())
    assert fresh.get_revoked_certificate_by_serial_number(sub_serial.serial_number)
    save_crl(fresh, crls[f"{root.name}-delta"])
    code, out = await openssl("verify", *chain, other.path)
    assert 0 != code
    assert "certificate revoked" in out


async def test_expired_revocations_leave_the_full_crl(
    bus: Bus, va: VA, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """RFC 5280 §5: a revoked certificate that expired before the previous full CRL
    (which, issued after its expiry, listed it) is left out; the others stay."""
    ca, _ = await new_ca(bus, tmp_path)
    await wait_crl(va.url, ca.name)  # the previous full CRL
    now = datetime.now(UTC)
    rows = {
        "0a" + secrets.token_hex(15): now - timedelta(days=10),  # expired long ago
        "0b" + secrets.token_hex(15): now + timedelta(days=10),
    }
    await db.executemany(
        """INSERT INTO ca.certificates (serial, ca, subject, issuer, status, not_before,
               not_after, revoked_at, revocation_reason, csr_fingerprint, certificate_der)
           VALUES ($1, $2, 'CN=x', $3, 'REVOKED', $4, $5, $4, 'superseded', 'x', '\\x30')""",
        [
            (serial, ca.name, ca.subject, now - timedelta(days=20), not_after)
            for serial, not_after in rows.items()
        ],
    )
    reply = await call(bus, SignCRL(ca=ca.name))
    assert reply.ok, reply.error
    view = CRLView.model_validate(reply.result)
    crl = x509.load_der_x509_crl(base64.b64decode(view.crl_der_b64))
    expired, current = (int(serial, 16) for serial in rows)
    assert crl.get_revoked_certificate_by_serial_number(expired) is None
    assert crl.get_revoked_certificate_by_serial_number(current) is not None
    assert 1 == view.entries
