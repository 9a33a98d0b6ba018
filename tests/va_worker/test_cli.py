"""``lamassu crl`` and ``lamassu ocsp status`` as an operator types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from contracts.ca import RevocationReason, RevokeCertificate
from runtime.bus import Bus
from tests.cli.test_cli import lamassu
from tests.conftest import Backends
from tests.pki import call
from tests.va_worker.conftest import (
    VA,
    new_ca,
    new_leaf,
    openssl,
    wait_crl,
    wait_status,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_crl_publish_and_show(
    backends: Backends, bus: Bus, va: VA, tmp_path: Path
) -> None:
    ca, ca_path = await new_ca(bus, tmp_path)
    first = await wait_crl(va.url, ca.name)
    number = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    published = await lamassu(backends, "crl", "publish", ca.name, "--json")
    assert 0 == published.returncode, published.stderr
    view = json.loads(published.stdout)
    assert int(view["number"]) > number
    assert view["delta_base"] is None
    await wait_crl(va.url, ca.name, at_least=int(view["number"]))

    shown = await lamassu(backends, "crl", "show", ca.name)
    assert 0 == shown.returncode, shown.stderr
    assert f"CRL:         #{view['number']} (full)" in shown.stdout
    pem = await lamassu(backends, "crl", "show", ca.name, "--delta", "--pem")
    assert 0 == pem.returncode, pem.stderr
    (tmp_path / "delta.pem").write_text(pem.stdout)
    code, out = await openssl(
        "crl", "-in", tmp_path / "delta.pem", "-CAfile", ca_path, "-noout", "-text"
    )
    assert 0 == code, out
    assert f"Delta CRL Indicator: critical\n                {view['number']}" in out

    for args, reason in [
        (["crl", "show", "no-such-ca"], "no CRL for CA 'no-such-ca'"),
        (["crl", "publish", "no-such-ca"], "no CA named 'no-such-ca'"),
    ]:
        refused = await lamassu(backends, *args)
        assert 1 == refused.returncode
        assert reason in refused.stderr


async def test_ocsp_status_follows_the_certificate_aia(
    backends: Backends, bus: Bus, va: VA, tmp_path: Path
) -> None:
    """The leaf's AIA (VA_URL) names the responder and its issuer; the answer is
    checked (signature, responder, nonce) before it is printed."""
    ca, ca_path = await new_ca(bus, tmp_path)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
    leaf = await new_leaf(bus, ca.name, tmp_path)
    await wait_status(va.url, leaf.certificate, issuer, ocsp.OCSPCertStatus.GOOD)

    good = await lamassu(backends, "ocsp", "status", "--cert", str(leaf.path))
    assert 0 == good.returncode, good.stderr
    assert f"{leaf.view.serial.lstrip('0')}: good" in good.stdout
    assert "OCSP responder" in good.stdout

    reply = await call(
        bus,
        RevokeCertificate(
            serial=leaf.view.serial, reason=RevocationReason.KEY_COMPROMISE
        ),
    )
    assert reply.ok, reply.error
    await wait_status(va.url, leaf.certificate, issuer, ocsp.OCSPCertStatus.REVOKED)
    revoked = await lamassu(
        backends,
        "ocsp",
        "status",
        "--cert",
        str(leaf.path),
        "--issuer",
        str(ca_path),
        "--url",
        f"{va.url}/ocsp",
        "--json",
    )
    assert 0 == revoked.returncode, revoked.stderr
    found = json.loads(revoked.stdout)
    assert ("revoked", "keyCompromise") == (found["status"], found["reason"])


async def test_ocsp_status_refusals(
    backends: Backends, bus: Bus, va: VA, tmp_path: Path
) -> None:
    """Usage mistakes exit 2, an unreachable responder 3, an answer that cannot be
    trusted 1; each with one line."""
    del va  # running: the leaf's AIA points at it
    ca, ca_path = await new_ca(bus, tmp_path)
    leaf = await new_leaf(bus, ca.name, tmp_path)
    (tmp_path / "junk.pem").write_text("junk")
    _, other_path = await new_ca(bus, tmp_path)
    cases = [
        (["--cert", str(tmp_path / "junk.pem")], 2, "is not a certificate"),
        (["--cert", str(tmp_path / "missing.pem")], 2, "cannot read"),
        (["--cert", str(ca_path)], 2, "names no OCSP responder"),
        (
            ["--cert", str(leaf.path), "--url", "http://127.0.0.1:9/ocsp"],
            3,
            "unavailable",
        ),
        # The answer is signed for ca, not for the issuer given: refused.
        (["--cert", str(leaf.path), "--issuer", str(other_path)], 1, "refused"),
    ]
    for args, code, reason in cases:
        result = await lamassu(backends, "ocsp", "status", *args)
        assert code == result.returncode, (args, result.stderr)
        assert reason in result.stderr
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr
