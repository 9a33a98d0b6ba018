"""DMS certificate renewal over real HTTPS (issue 14): a renewed DMS enrolls with its
new certificate, and with the old one only during the overlap.

CSRs come from the openssl command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.dms import DMSView, RenewDMS, RevokeDMS
from contracts.errors import ErrorCode
from runtime.bus import Bus
from tests.conftest import Gateway
from tests.est_gateway.test_gateway import (
    Identity,
    Stage,
    make_dms_identity,
    new_stage,
    openssl_csr,
)
from tests.pki import call, unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def renew(bus: Bus, stage: Stage, overlap_days: int) -> tuple[DMSView, Identity]:
    identity, csr = make_dms_identity(stage.directory, unique("renewed"))
    reply = await call(
        bus, RenewDMS(name=stage.dms.name, csr_pem=csr, overlap_days=overlap_days)
    )
    assert reply.ok, reply.error
    view = DMSView.model_validate(reply.result)
    identity.cert.write_text(view.certificate_pem)
    return view, identity


async def enroll_status(stage: Stage, identity: Identity) -> tuple[int, str]:
    body, _ = openssl_csr(stage.directory, unique("renewal-dev"))
    status, _, payload = await stage.est.enroll(stage.ca.name, body, identity)
    return status, payload.decode()


@pytest.fixture
async def stage(bus: Bus, gateway: Gateway, tmp_path: Path) -> Stage:
    return await new_stage(bus, gateway, tmp_path)


async def test_renewed_dms_enrolls_with_both_during_the_overlap(
    stage: Stage, bus: Bus
) -> None:
    """After dms renew (7-day overlap) the new and the old certificate both enroll."""
    view, renewed = await renew(bus, stage, overlap_days=7)
    assert stage.dms.certificate_serial == view.previous_certificate_serial
    assert view.certificate_serial != stage.dms.certificate_serial
    assert (200, 200) == (
        (await enroll_status(stage, renewed))[0],
        (await enroll_status(stage, stage.dms_identity))[0],
    )


async def test_old_certificate_stops_after_the_overlap(stage: Stage, bus: Bus) -> None:
    """With no overlap the old certificate is refused at once (403); the new enrolls."""
    _, renewed = await renew(bus, stage, overlap_days=0)
    status, reason = await enroll_status(stage, stage.dms_identity)
    assert 403 == status
    assert "no DMS holds the client certificate" in reason
    assert 200 == (await enroll_status(stage, renewed))[0]


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("missing", ErrorCode.NOT_FOUND, "no DMS named"),
        ("revoked", ErrorCode.CONFLICT, "is revoked"),
        ("garbage", ErrorCode.INVALID, "CSR"),
    ],
    ids=["unknown-dms", "revoked-dms", "garbage-csr"],
)
async def test_renew_refusals(
    stage: Stage, bus: Bus, *, case: str, code: ErrorCode, reason: str
) -> None:
    """Renewing no DMS, a revoked one, or with garbage for a CSR: refused, nothing issued."""
    _, csr = make_dms_identity(stage.directory, unique("x"))
    name = stage.dms.name
    if case == "missing":
        name = unique("missing")
    elif case == "revoked":
        assert (await call(bus, RevokeDMS(name=name))).ok
    elif case == "garbage":
        csr = "-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n"
    reply = await call(bus, RenewDMS(name=name, csr_pem=csr))
    assert reply.error is not None
    assert code is reply.error.code
    assert reason in reply.error.message
