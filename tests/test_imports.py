"""Importing any module opens no connection, and contracts import no I/O library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    "contracts",
    "runtime",
    "engines",
    "ca_worker",
    "dms_worker",
    "device_worker",
    "est_gateway",
    "lamassu_cli",
    "cloud_proxy",
    "alerts_worker",
    "va_worker",
]

PROBE = """
import importlib, pkgutil, socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("a socket was opened at import time")
socket.socket.connect = refuse
socket.create_connection = refuse
for package in sys.argv[1:]:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
print("ok")
"""


def test_importing_every_module_opens_nothing() -> None:
    """Every module imports without touching the network."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "ok" == result.stdout.strip(), result.stderr


def test_contracts_import_no_io_library() -> None:
    """contracts pulls in neither aio-pika, asyncpg nor structlog."""
    probe = (
        "import sys, contracts; print(sorted(m for m in ('aio_pika', 'aiormq', 'asyncpg', 'structlog', "
        "'aiohttp', 'hvac', 'pkcs11') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "[]" == result.stdout.strip(), result.stderr
