"""Vault connection settings and unseal key files, checked before any request is sent."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from engines import EngineMisconfigured, EngineUnavailable, VaultConnection
from engines.vault_client import VaultSession, read_unseal_keys


def closed_port() -> int:
    """A loopback port nothing listens on (it was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps({"keys": ["k1", "k2"]}), ["k1", "k2"]),
        (json.dumps({"unseal_keys_b64": ["b1"], "root_token": "x"}), ["b1"]),
        ("k1\n\n  k2  \n", ["k1", "k2"]),
    ],
    ids=["api-json", "operator-init-json", "lines"],
)
def test_unseal_key_file_formats(
    tmp_path: Path, content: str, expected: list[str]
) -> None:
    """Keys are read from sys/init JSON, `operator init` JSON, or one per line."""
    path = tmp_path / "keys"
    path.write_text(content)
    assert expected == read_unseal_keys(path)


@pytest.mark.parametrize(
    "content",
    ["", "{not json", json.dumps({"keys": []}), json.dumps({"keys": [1]})],
    ids=["empty", "bad-json", "no-keys", "not-strings"],
)
def test_bad_unseal_key_file_is_misconfigured(tmp_path: Path, content: str) -> None:
    """A key file without usable keys fails naming VAULT_UNSEAL_KEY_FILE."""
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(EngineMisconfigured, match=r"^VAULT_UNSEAL_KEY_FILE: "):
        read_unseal_keys(path)


def test_missing_unseal_key_file_is_misconfigured(tmp_path: Path) -> None:
    """A key file that does not exist fails naming VAULT_UNSEAL_KEY_FILE."""
    with pytest.raises(EngineMisconfigured, match=r"^VAULT_UNSEAL_KEY_FILE: "):
        read_unseal_keys(tmp_path / "absent")


@pytest.mark.parametrize(
    ("connection", "setting"),
    [
        (VaultConnection(address="vault:8200"), "VAULT_ADDRESS"),
        (
            VaultConnection(
                address="https://vault:8200", ca=Path("/nonexistent/ca.pem")
            ),
            "VAULT_CA",
        ),
    ],
    ids=["address-without-scheme", "missing-ca-file"],
)
def test_bad_connection_settings_fail_before_any_request(
    connection: VaultConnection, setting: str
) -> None:
    """Malformed settings fail at once, naming the variable."""
    with pytest.raises(EngineMisconfigured, match=rf"^{setting}: "):
        VaultSession(connection)


def test_unreachable_vault_is_unavailable() -> None:
    """Nothing listening at VAULT_ADDRESS is EngineUnavailable, naming the variable."""
    connection = VaultConnection(
        address=f"http://127.0.0.1:{closed_port()}", token=SecretStr("t")
    )
    with pytest.raises(EngineUnavailable, match=r"^VAULT_ADDRESS: "):
        VaultSession(connection)


def test_secrets_are_hidden_in_the_settings_repr() -> None:
    """The secret id and token never show in a repr of the settings."""
    connection = VaultConnection(
        address="http://x", secret_id=SecretStr("s3cret"), token=SecretStr("t0ken")
    )
    assert "s3cret" not in repr(connection)
    assert "t0ken" not in repr(connection)
