"""``make run`` twice in a row on its own database, prefix, ports and run directory:
the second run reuses the CA and DMS, a run whose DMS files are gone replaces the
DMS, and Ctrl-C ends each quietly (the demo exits 0, make prints no error)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from contracts.senders import IDENTITIES
from lamassu_cli.up import _admin_port
from tests.conftest import Backends, isolated_backends

ROOT = Path(__file__).resolve().parents[1]
READY = "The PKI is running"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def own() -> Iterator[Backends]:
    with isolated_backends() as found:
        yield found


@pytest.fixture
def identities(own: Backends) -> Iterator[dict[str, str]]:
    """The broker vhost, users and database roles make run creates, gone afterwards
    (users and roles are per broker and per cluster, not per database)."""
    run = own.prefix.strip(".").replace("-", "_")
    names = {"AMQP_VHOST": f"{own.prefix}demo", "POSTGRES_ROLE_PREFIX": f"{run}_"}
    yield names
    subprocess.run(
        ["rabbitmqctl", "-q", "delete_vhost", names["AMQP_VHOST"]],
        capture_output=True,
        check=False,
    )
    for role in IDENTITIES:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", f"{own.prefix}{role}"],
            capture_output=True,
            check=False,
        )

    async def drop_roles() -> None:
        # What the roles own lives in the module's database: dropped there first.
        conn = await asyncpg.connect(
            host=own.pg_host, port=own.pg_port, user=own.pg_user, database=own.database
        )
        try:
            roles = await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
                names["POSTGRES_ROLE_PREFIX"] + "%",
            )
            for row in roles:
                await conn.execute(f'DROP OWNED BY "{row["rolname"]}" CASCADE')
                await conn.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
        finally:
            await conn.close()

    import asyncio

    asyncio.run(drop_roles())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_until_ready(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Start ``command`` in its own session, read until the demo says the PKI runs,
    then press Ctrl-C (SIGINT to the whole group, as a terminal does)."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if READY in line or time.monotonic() > deadline:
            break
    assert any(READY in line for line in seen), "".join(seen)
    os.killpg(process.pid, signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    return process.returncode, "".join(seen) + rest


def test_make_run_twice_then_with_its_dms_files_gone(
    own: Backends, identities: dict[str, str], tmp_path: Path
) -> None:
    env = own.env(
        EST_PORT=str(free_port()),
        VA_PORT=str(free_port()),
        ALERT_PORT=str(free_port()),
        ADMIN_PORT="0",
        LAMASSU_RUN_DIR=str(tmp_path / "run"),
        LAMASSU_CREDENTIALS=str(tmp_path / "run" / "credentials"),
        LOG_FORMAT="json",
        **identities,
    )
    env.pop("CI", None)  # make's services step is the same either way
    first_status, first = run_until_ready(["make", "run"], env)
    assert "demo-dms  ACTIVE" in first
    assert "Error" not in first
    assert "demo: stopped" in first
    # make re-raises the SIGINT it got with the terminal's Ctrl-C; the demo exited 0.
    assert first_status == -signal.SIGINT

    second_status, second = run_until_ready(["make", "run"], env)
    assert "reusing DMS demo-dms" in second
    assert "Error" not in second
    assert second_status == -signal.SIGINT
    assert second.count("FULLY_PROVISIONED") == 1

    for stale in (tmp_path / "run" / "demo").glob("demo-dms*"):
        stale.unlink()
    third_status, third = run_until_ready(["scripts/demo.sh"], env)
    assert third_status == 0, third
    assert "demo-dms-" in third  # a new DMS replaced the one whose files were gone
    assert "FULLY_PROVISIONED" in third


def test_up_gives_each_process_its_admin_port(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [
        "ca_worker",
        "dms_worker",
        "device_worker",
        "va_worker",
        "est_gateway[1]",
        "alerts_worker",
        "cloud_proxy",
        "est_gateway[2]",
    ]

    def ports() -> list[str | None]:
        return [_admin_port(n) for n in names]

    monkeypatch.delenv("ADMIN_PORT", raising=False)
    assert ports() == [None] * 7 + ["9110"]  # each its default (if any), then 9110...
    monkeypatch.setenv("ADMIN_PORT", "0")
    assert ports() == [None] * 8
    monkeypatch.setenv("ADMIN_PORT", "19100")
    assert ports() == [str(19100 + i) for i in range(8)]
