"""``lamassu`` policy commands of issue 14 (ownership, replacement), as typed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli import lamassu
from tests.conftest import Backends
from tests.pki import unique

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def test_dms_allow_replace_and_device_transfer(
    backends: Backends, dms_service: None, device_service: None, tmp_path: Path
) -> None:
    """dms create --allow-replace shows it; device transfer moves a device to a DMS
    and refuses one that does not exist, in one line with exit status 1."""
    ca = unique("cli-ca")
    created = await lamassu(backends, "ca", "create", "--name", ca)
    assert 0 == created.returncode, created.stderr
    dms = unique("cli-dms")
    made = await lamassu(
        backends,
        "dms",
        "create",
        "--name",
        dms,
        "--authorized-ca",
        ca,
        "--allow-replace",
        "--out",
        str(tmp_path),
    )
    assert 0 == made.returncode, made.stderr
    assert "replace     allowed" in made.stdout
    assert "renewal     any time, revokes the old" in made.stdout
    updated = await lamassu(
        backends,
        "dms",
        "update",
        dms,
        "--reenroll-window",
        "30d",
        "--no-revoke-on-reenroll",
    )
    assert 0 == updated.returncode, updated.stderr
    assert "renewal     30 days before expiry, keeps the old" in updated.stdout
    assert "replace     allowed" in updated.stdout
    nothing = await lamassu(backends, "dms", "update", dms)
    assert 2 == nothing.returncode
    assert "nothing to change" in nothing.stderr
    device = unique("cli-pump")
    moved = await lamassu(backends, "--json", "device", "transfer", device, "--to", dms)
    assert 0 == moved.returncode, moved.stderr
    assert (device, dms) == (
        json.loads(moved.stdout)["device_id"],
        json.loads(moved.stdout)["dms"],
    )
    missing = unique("nope")
    refused = await lamassu(backends, "device", "transfer", device, "--to", missing)
    assert 1 == refused.returncode
    assert [f"error: not_found: no DMS named {missing!r}"] == (
        refused.stderr.strip().splitlines()
    )


async def test_dms_renew_writes_a_new_key_and_certificate(
    backends: Backends, dms_service: None, tmp_path: Path
) -> None:
    """dms renew makes a new key here (0600) and writes the new certificate; the old
    one is shown with the end of its overlap."""
    ca = unique("cli-ca")
    assert 0 == (await lamassu(backends, "ca", "create", "--name", ca)).returncode
    dms = unique("cli-dms")
    made = await lamassu(
        backends,
        "--json",
        "dms",
        "create",
        "--name",
        dms,
        "--authorized-ca",
        ca,
        "--out",
        str(tmp_path),
    )
    assert 0 == made.returncode, made.stderr
    old_serial = json.loads(made.stdout)["certificate_serial"]
    renewed = await lamassu(
        backends, "dms", "renew", dms, "--out", str(tmp_path), "--overlap", "3d"
    )
    assert 0 == renewed.returncode, renewed.stderr
    key = tmp_path / f"{dms}.renewed.key"
    assert 0o600 == key.stat().st_mode & 0o777
    assert (tmp_path / f"{dms}.renewed.pem").read_text().startswith("-----BEGIN")
    assert f"previous    {old_serial} until" in renewed.stdout
    again = await lamassu(backends, "dms", "renew", dms, "--out", str(tmp_path))
    assert 2 == again.returncode
    assert "exists; pass --csr or another --out" in again.stderr


async def test_profile_commands_and_cert_sign_profile(
    backends: Backends, ca_service: object, tmp_path: Path
) -> None:
    """profile create/list/show, and cert sign --profile with --cap-validity; a
    garbage pattern is a one-line usage error."""
    name = unique("cli-profile")
    created = await lamassu(
        backends,
        "profile",
        "create",
        name,
        "--ext-key-usage",
        "server_auth",
        "--san",
        "dns",
        "--san-pattern",
        r"dns=[a-z]+\.example",
        "--max-validity",
        "90d",
    )
    assert 0 == created.returncode, created.stderr
    assert "ext usage   server_auth" in created.stdout
    listed = await lamassu(backends, "profile", "list")
    assert {"client", "server", name} <= {
        line.split()[0] for line in listed.stdout.splitlines()[1:]
    }
    shown = await lamassu(backends, "--json", "profile", "show", name)
    assert 90 == json.loads(shown.stdout)["max_validity_days"]
    bad = await lamassu(backends, "profile", "create", unique("p"), "--cn-pattern", "(")
    assert 2 == bad.returncode
    assert "is not a regular expression" in bad.stderr

    ca = unique("cli-ca")
    assert 0 == (await lamassu(backends, "ca", "create", "--name", ca)).returncode
    csr = tmp_path / "gw.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(tmp_path / "gw.key"),
            "-subj",
            "/CN=gw",
            "-addext",
            "subjectAltName=DNS:gw.example",
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    refused = await lamassu(
        backends, "cert", "sign", "--ca", ca, "--csr", str(csr), "--profile", name
    )
    assert 1 == refused.returncode
    assert "accept capping (--cap-validity)" in refused.stderr
    signed = await lamassu(
        backends,
        "cert",
        "sign",
        "--ca",
        ca,
        "--csr",
        str(csr),
        "--profile",
        name,
        "--cap-validity",
    )
    assert 0 == signed.returncode, signed.stderr
    assert signed.stdout.startswith("-----BEGIN CERTIFICATE-----")
