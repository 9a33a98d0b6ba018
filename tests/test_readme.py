"""README's EST recipe runs as written, against a gateway and workers the test starts;
only its marked placeholders (EST, DMS, SERVER) are given this stack's values."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from contracts.ca import CreateCA
from contracts.dms import CreateDMS, DMSView
from runtime.bus import Bus
from tests.conftest import Backends, Gateway, gateway_running
from tests.est_gateway.test_gateway import make_dms_identity
from tests.pki import call

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = ("EST", "DMS", "SERVER")


def recipe(name: str) -> str:
    """The shell block after ``<!-- recipe: NAME -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    found = re.search(
        rf"<!-- recipe: {name} -->\n```sh\n(.*?)```", text, flags=re.DOTALL
    )
    assert found is not None, f"README has no recipe {name}"
    return found[1]


def test_recipe_marks_its_placeholders() -> None:
    """Each placeholder takes the environment's value, else make run's."""
    block = recipe("est-enroll")
    for name in PLACEHOLDERS:
        line = next(x for x in block.splitlines() if x.startswith(f"{name}="))
        assert line.startswith(f'{name}="${{{name}:-'), line
        assert "# placeholder" in line


@pytest.mark.timeout(120)
async def test_est_recipe_enrolls_a_device(
    backends: Backends,
    bus: Bus,
    dms_service: None,
    device_service: None,
    tmp_path: Path,
) -> None:
    # A gateway of its own, started after the CA exists: it lists the CA at start.
    async with gateway_running(backends, tmp_path / "est-tls") as gateway:
        await _run_recipe(bus, gateway, tmp_path)


async def _run_recipe(bus: Bus, gateway: Gateway, tmp_path: Path) -> None:
    ca = f"readme-{uuid.uuid4().hex[:8]}"
    assert (await call(bus, CreateCA(name=ca))).ok
    name = f"readme-dms-{uuid.uuid4().hex[:8]}"
    identity, csr = make_dms_identity(tmp_path, name)
    created = await call(bus, CreateDMS(name=name, authorized_cas=[ca], csr_pem=csr))
    assert created.ok, created.error
    identity.cert.write_text(DMSView.model_validate(created.result).certificate_pem)
    await gateway.knows(ca)
    work = tmp_path / "work"
    work.mkdir()
    # Asynchronously: the gateway that answers curl runs on this event loop.
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        recipe("est-enroll"),
        cwd=work,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "EST": f"{gateway.url}/.well-known/est/{ca}",
            "DMS": str(tmp_path / name),
            "SERVER": str(gateway.server_certificate),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("subject=CN = sensor-0001")
    device = x509.load_pem_x509_certificate((work / "device.pem").read_bytes())
    assert device.subject.rfc4514_string() == "CN=sensor-0001"
