"""A wrong engine setting stops ``python -m ca_worker`` at start: exit status, one
stderr line naming the variable, and no secret in anything it printed.

The engine is opened before the database and the bus, so these need neither.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engines import Pkcs11Config, VaultTransitConfig

if TYPE_CHECKING:
    from tests.engines.engine_backends import DevServer

# SoftHSM2 and OpenBao fixtures (see tests/engines/engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

ENGINE_VARIABLES = ("ENGINE", "GOPEM_", "PKCS11_", "VAULT_")


@dataclass(frozen=True)
class Start:
    """Environment of one failing start; ``secrets`` must never be printed."""

    env: dict[str, str]
    secrets: tuple[str, ...]


def pkcs11_start(config: Pkcs11Config, **change: str) -> Start:
    env = {
        "ENGINE": "pkcs11",
        "PKCS11_DRIVER": str(config.driver),
        "PKCS11_LABEL": config.label,
        "PKCS11_PIN": config.pin.get_secret_value(),
    }
    env.update(change)
    return Start(env, (config.pin.get_secret_value(), env["PKCS11_PIN"]))


def wrong_driver(request: pytest.FixtureRequest) -> Start:
    config = request.getfixturevalue("softhsm_config")
    return pkcs11_start(config, PKCS11_DRIVER="/nonexistent/libsofthsm2.so")


def wrong_label(request: pytest.FixtureRequest) -> Start:
    config = request.getfixturevalue("softhsm_config")
    return pkcs11_start(config, PKCS11_LABEL="no-such-token")


def wrong_pin(request: pytest.FixtureRequest) -> Start:
    config = request.getfixturevalue("softhsm_config")
    return pkcs11_start(config, PKCS11_PIN=secrets.token_hex(6))


def missing_pin(request: pytest.FixtureRequest) -> Start:
    config: Pkcs11Config = request.getfixturevalue("softhsm_config")
    start = pkcs11_start(config)
    del start.env["PKCS11_PIN"]
    return start


def wrong_secret_id(request: pytest.FixtureRequest) -> Start:
    server: DevServer = request.getfixturevalue("openbao")
    wrong = secrets.token_hex(8)
    env = {
        "ENGINE": "vault-transit",
        "VAULT_ADDRESS": server.address,
        "VAULT_ROLE_ID": server.role_id,
        "VAULT_SECRET_ID": wrong,
    }
    return Start(env, (wrong, server.secret_id))


def transit_only_policy_for_pki(request: pytest.FixtureRequest) -> Start:
    server: DevServer = request.getfixturevalue("openbao")
    env = {
        "ENGINE": "vault",
        "VAULT_ADDRESS": server.address,
        "VAULT_ROLE_ID": server.role_id,
        "VAULT_SECRET_ID": server.secret_id,
    }
    return Start(env, (server.secret_id,))


def sealed_without_key_file(request: pytest.FixtureRequest) -> Start:
    sealed: VaultTransitConfig = request.getfixturevalue("sealed_vault")
    assert sealed.token is not None
    token = sealed.token.get_secret_value()
    env = {"ENGINE": "vault-transit", "VAULT_ADDRESS": sealed.address}
    env["VAULT_TOKEN"] = token
    return Start(env, (token,))


@pytest.mark.parametrize(
    ("make", "status", "variable"),
    [
        pytest.param(wrong_driver, 1, "PKCS11_DRIVER", marks=pytest.mark.softhsm),
        pytest.param(wrong_label, 1, "PKCS11_LABEL", marks=pytest.mark.softhsm),
        pytest.param(wrong_pin, 1, "PKCS11_PIN", marks=pytest.mark.softhsm),
        pytest.param(missing_pin, 2, "PKCS11_PIN", marks=pytest.mark.softhsm),
        pytest.param(wrong_secret_id, 1, "VAULT_SECRET_ID", marks=pytest.mark.vault),
        pytest.param(
            transit_only_policy_for_pki,
            1,
            "VAULT_PKI_CA_PATH",
            marks=pytest.mark.vault,
        ),
        pytest.param(
            sealed_without_key_file,
            1,
            "VAULT_UNSEAL_KEY_FILE",
            marks=pytest.mark.vault,
        ),
    ],
    ids=[
        "wrong-driver",
        "wrong-label",
        "wrong-pin",
        "missing-pin",
        "wrong-approle-secret",
        "pki-without-mount-rights",
        "sealed-no-key-file",
    ],
)
def test_wrong_engine_setting_stops_the_worker(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make: Callable[[pytest.FixtureRequest], Start],
    status: int,
    variable: str,
) -> None:
    """Exit 1 for an engine that refuses (2 for a missing variable), one stderr line
    that starts with the variable, and no PIN, secret id or token in the output."""
    start = make(request)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENGINE_VARIABLES)}
    env.update(start.env, GOPEM_DATA=str(tmp_path / "keys"), LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, "-m", "ca_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.splitlines()
    assert (status, 1) == (done.returncode, len(lines)), done.stderr
    assert lines[0].startswith(f"ca_worker: {variable}: "), lines[0]
    for secret in start.secrets:
        assert secret not in done.stdout + done.stderr
