"""The ``lamassu`` command against the running CA worker, as an operator types it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Backends

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def lamassu(
    backends: Backends,
    *args: str,
    timeout: str = "30",
    cwd: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lamassu_cli",
        *args,
        cwd=cwd,
        env=backends.env(LOG_LEVEL="warning", LAMASSU_TIMEOUT=timeout, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        args, process.returncode, out.decode(), err.decode()
    )


async def test_create_sign_verify_and_tail(
    backends: Backends, ca_service: object, tmp_path: Path
) -> None:
    """ca create, cert sign, openssl verify against ca show --pem, and the event in events tail."""
    name = f"factory-root-{uuid.uuid4().hex[:6]}"
    tail = asyncio.create_task(
        lamassu(
            backends,
            "events",
            "tail",
            "--type",
            "certificate.create",
            "--count",
            "1",
            "--json",
        )
    )
    created = await lamassu(
        backends,
        "ca",
        "create",
        "--name",
        name,
        "--key-type",
        "ec-p384",
        "--validity",
        "10y",
    )
    assert 0 == created.returncode, created.stderr
    assert f"name        {name}" in created.stdout
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
            tmp_path / "x.key",
            "-subj",
            "/CN=device-cli",
            "-out",
            tmp_path / "x.csr",
        ],
        check=True,
        capture_output=True,
    )
    signed = await lamassu(
        backends, "cert", "sign", "--ca", name, "--csr", str(tmp_path / "x.csr")
    )
    assert 0 == signed.returncode, signed.stderr
    (tmp_path / "x.crt").write_text(signed.stdout)
    pem = await lamassu(backends, "ca", "show", name, "--pem")
    (tmp_path / "ca.pem").write_text(pem.stdout)
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "x.crt"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == verify.returncode, verify.stderr
    tailed = await tail
    event = json.loads(tailed.stdout.splitlines()[-1])
    assert "certificate.create" == event["type"]
    listed = await lamassu(backends, "--json", "cert", "list", "--ca", name)
    assert [event["data"]["serial"]] == [
        c["serial"] for c in json.loads(listed.stdout)["items"]
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ca", "show", "no-such-ca"], 1, "error: not_found: no CA named 'no-such-ca'"),
        (["ca", "create", "--name", "LAMASSU-DMS-MANAGER"], 1, "error: conflict:"),
        (
            [
                "cert",
                "sign",
                "--ca",
                "LAMASSU-DMS-MANAGER",
                "--csr",
                "/nonexistent.csr",
            ],
            2,
            "cannot read CSR file",
        ),
        (["cert", "revoke", "00aa", "--reason", "because"], 2, "is not a reason"),
        (
            ["ca", "create", "--name", "x", "--validity", "forever"],
            2,
            "is not a duration",
        ),
        (
            ["ca", "create", "--name", "x", "--about-to-expire", "soon"],
            2,
            "is not a duration",
        ),
        (
            ["ca", "update", "no-such-ca", "--about-to-expire", "5d"],
            1,
            "error: not_found: no CA named 'no-such-ca'",
        ),
        (["sweep", "run", "--shards", "0"], 2, "is not a number from 1 to 1024"),
        (
            ["sweep", "show", "nope"],
            2,
            "error: invalid: id: 'nope' is not valid: a sweep id",
        ),
    ],
    ids=[
        "unknown-ca",
        "duplicate",
        "missing-file",
        "bad-reason",
        "bad-duration",
        "bad-threshold",
        "update-unknown-ca",
        "no-shards",
        "bad-sweep-id",
    ],
)
async def test_cli_errors_are_one_line_with_exit_code(
    backends: Backends, ca_service: object, args: list[str], code: int, message: str
) -> None:
    """Refusals and usage mistakes print one clear line and exit non-zero."""
    result = await lamassu(backends, *args)
    assert code == result.returncode
    assert message in result.stderr


async def test_unreachable_broker_exits_3(backends: Backends) -> None:
    """With no broker at AMQP_URL the CLI says so in one line and exits 3."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lamassu_cli",
        "ca",
        "list",
        env=backends.env(AMQP_URL="amqp://guest:guest@127.0.0.1:1/"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert 3 == process.returncode
    assert 1 == len(err.decode().strip().splitlines())
    assert "AMQP_URL" in err.decode()


async def test_threshold_and_sweep_commands(
    backends: Backends, ca_service: object
) -> None:
    """A CA keeps the threshold it is created with, takes a new one, and a sweep run
    from the CLI reports every shard done."""
    name = f"cli-warn-{uuid.uuid4().hex[:8]}"
    created = await lamassu(
        backends, "--json", "ca", "create", "--name", name, "--about-to-expire", "45d"
    )
    assert 0 == created.returncode, created.stderr
    assert 45 == json.loads(created.stdout)["about_to_expire_days"]
    updated = await lamassu(backends, "ca", "update", name, "--about-to-expire", "0d")
    assert 0 == updated.returncode, updated.stderr
    assert "warns       0 days before expiry" in updated.stdout
    swept = await lamassu(backends, "--json", "sweep", "run", "--shards", "3", "--wait")
    assert 0 == swept.returncode, swept.stderr
    sweep = json.loads(swept.stdout)
    assert (3, 3, "manual") == (sweep["shards"], sweep["shards_done"], sweep["trigger"])
    shown = await lamassu(backends, "sweep", "show", sweep["id"])
    assert f"sweep    {sweep['id']}" in shown.stdout
    assert "3 of 3 done" in shown.stdout
