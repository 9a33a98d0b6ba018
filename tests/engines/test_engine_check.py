"""``engines.check``: one line per stage, the first failing line naming what is wrong."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from engines import (
    CheckLine,
    GopemConfig,
    Pkcs11Config,
    VaultConnection,
    VaultTransitConfig,
    check,
)

# SoftHSM2 and OpenBao fixtures, shared with tests/ca_worker (see engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]


def names_and_oks(lines: list[CheckLine]) -> list[tuple[str, bool]]:
    return [(line.name, line.ok) for line in lines]


def test_working_engine_reports_every_stage(tmp_path: Path) -> None:
    """A working engine passes engine, reachable, logged in and key types."""
    lines = check(GopemConfig(data=tmp_path))
    assert [
        ("engine", True),
        ("reachable", True),
        ("logged in", True),
        ("key types", True),
    ] == names_and_oks(lines)
    assert "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096" == lines[-1].detail
    assert str(lines[0]).startswith("ok   engine: gopem")


def test_unusable_directory_fails_at_reachable(tmp_path: Path) -> None:
    """A data path that cannot be a directory stops the check at reachable."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    lines = check(GopemConfig(data=blocker / "keys"))
    assert [("engine", True), ("reachable", False)] == names_and_oks(lines)
    assert lines[-1].detail.startswith("GOPEM_DATA: ")
    assert str(lines[-1]).startswith("FAIL reachable: GOPEM_DATA: ")


def test_unreachable_vault_fails_at_reachable() -> None:
    """Nothing listening at VAULT_ADDRESS stops the check at reachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines = check(
        VaultTransitConfig(address=f"http://127.0.0.1:{port}", token=SecretStr("t"))
    )
    assert [("engine", True), ("reachable", False)] == names_and_oks(lines)
    assert lines[-1].detail.startswith("VAULT_ADDRESS: ")


@pytest.mark.softhsm
def test_wrong_pin_fails_at_logged_in(softhsm_config: Pkcs11Config) -> None:
    """A wrong PIN passes reachable and fails at logged in, naming PKCS11_PIN."""
    lines = check(softhsm_config.model_copy(update={"pin": SecretStr("0000")}))
    assert [
        ("engine", True),
        ("reachable", True),
        ("logged in", False),
    ] == names_and_oks(lines)
    assert lines[-1].detail.startswith("PKCS11_PIN: ")


@pytest.mark.vault
def test_wrong_secret_id_fails_at_logged_in(
    transit_approle: VaultTransitConfig,
) -> None:
    """A wrong AppRole secret passes reachable and fails at logged in."""
    lines = check(transit_approle.model_copy(update={"secret_id": SecretStr("nope")}))
    assert [
        ("engine", True),
        ("reachable", True),
        ("logged in", False),
    ] == names_and_oks(lines)
    assert lines[-1].detail.startswith("VAULT_SECRET_ID: ")


@pytest.mark.vault
def test_missing_transit_mount_fails_after_login(vault_root: VaultConnection) -> None:
    """A Transit mount that does not exist fails after a successful login."""
    config = VaultTransitConfig(
        address=vault_root.address, token=vault_root.token, mount="absent"
    )
    lines = check(config)
    assert [
        ("engine", True),
        ("reachable", True),
        ("logged in", True),
        ("ready", False),
    ] == names_and_oks(lines)
    assert "'absent'" in lines[-1].detail
