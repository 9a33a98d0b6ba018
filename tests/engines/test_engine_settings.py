"""Engine settings from the environment, and ``lamassu engine check`` that reads them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from engines import (
    EngineSettings,
    GopemConfig,
    Pkcs11Config,
    VaultPkiConfig,
    VaultTransitConfig,
)
from runtime.settings import SettingsError, load_settings

# SoftHSM2 and OpenBao fixtures, shared with tests/ca_worker (see engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

ENGINE_VARIABLES = ("ENGINE", "GOPEM_", "PKCS11_", "VAULT_")
PKCS11 = {"PKCS11_DRIVER": "/x.so", "PKCS11_LABEL": "ca", "PKCS11_PIN": "4321"}
APPROLE = {
    "VAULT_ADDRESS": "https://v:8200",
    "VAULT_ROLE_ID": "r",
    "VAULT_SECRET_ID": "s",
}


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENGINE_VARIABLES)}


def settings_from(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> EngineSettings:
    for name in os.environ:
        if name.startswith(ENGINE_VARIABLES):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(EngineSettings)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"ENGINE": "hsm"}, "ENGINE: Input should be 'gopem', 'pkcs11'"),
        (
            {"ENGINE": "pkcs11", "PKCS11_DRIVER": "/x.so", "PKCS11_LABEL": "ca"},
            "PKCS11_PIN: required when ENGINE or ENGINES names pkcs11",
        ),
        (
            {"ENGINES": "pkcs11", "PKCS11_LABEL": "ca", "PKCS11_PIN": "1"},
            "PKCS11_DRIVER: required when ENGINE or ENGINES names pkcs11",
        ),
        ({"ENGINE": "vault"}, "VAULT_ADDRESS: required when ENGINE or ENGINES names"),
        (
            {"ENGINE": "vault-transit", "VAULT_ADDRESS": "https://v:8200"},
            "VAULT_ROLE_ID: required for the AppRole login of vault-transit",
        ),
        ({"ENGINES": "gopem,kms"}, "ENGINES: Input should be"),
    ],
    ids=[
        "unknown-engine",
        "missing-pin",
        "missing-driver-of-extra",
        "missing-address",
        "missing-approle",
        "unknown-extra",
    ],
)
def test_missing_or_wrong_variable_is_one_line_naming_it(
    env: dict[str, str], line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable the chosen engines need, or a wrong name, fails naming the variable."""
    with pytest.raises(SettingsError) as caught:
        settings_from(env, monkeypatch)
    assert str(caught.value).startswith(line), str(caught.value)


def test_engines_open_after_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENGINE comes first; ENGINES adds the others once each, in order."""
    env = {"ENGINE": "pkcs11", "ENGINES": "vault, gopem,pkcs11", **PKCS11, **APPROLE}
    settings = settings_from(env, monkeypatch)
    configs = settings.engine_configs()
    assert ["pkcs11", "vault", "gopem"] == list(configs)
    assert [Pkcs11Config, VaultPkiConfig, GopemConfig] == [
        type(c) for c in configs.values()
    ]
    assert "4321" not in repr(settings)


def test_vault_token_replaces_approle(monkeypatch: pytest.MonkeyPatch) -> None:
    """With VAULT_TOKEN, no AppRole variables are needed."""
    env = {"ENGINE": "vault-transit", "VAULT_ADDRESS": "https://v", "VAULT_TOKEN": "t"}
    config = settings_from(env, monkeypatch).engine_configs()["vault-transit"]
    assert isinstance(config, VaultTransitConfig)
    assert ("transit", None) == (config.mount, config.role_id)


def lamassu_engine_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamassu_cli", "engine", "check", "--local"],
        env={**clean_environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_engine_check_passes_for_a_working_engine(tmp_path: Path) -> None:
    """Every line is ok and the exit status is 0."""
    done = lamassu_engine_check({"ENGINE": "gopem", "GOPEM_DATA": str(tmp_path)})
    assert 0 == done.returncode, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert 4 == len(lines)
    assert all(line.startswith("ok   ") for line in lines)
    assert "not the running worker's" in done.stderr


def test_engine_check_local_never_creates_the_key_directory(tmp_path: Path) -> None:
    """A missing GOPEM_DATA fails at 'reachable' and is left missing."""
    missing = tmp_path / "keys"
    done = lamassu_engine_check({"ENGINE": "gopem", "GOPEM_DATA": str(missing)})
    assert 1 == done.returncode
    assert done.stdout.splitlines()[-1].startswith(
        f"FAIL reachable: GOPEM_DATA: {missing} does not exist"
    )
    assert not missing.exists()


def test_engine_check_fails_on_a_missing_variable(tmp_path: Path) -> None:
    """A missing variable is one FAIL line naming it, and exit status 1."""
    done = lamassu_engine_check({"ENGINES": "vault", "GOPEM_DATA": str(tmp_path)})
    assert 1 == done.returncode
    assert done.stdout.startswith("FAIL settings: VAULT_ADDRESS: required")


@pytest.mark.softhsm
def test_engine_check_names_a_wrong_pin_without_showing_it(
    softhsm_config: Pkcs11Config, tmp_path: Path
) -> None:
    """gopem passes, the token with a wrong PIN fails at 'logged in'; exit 1."""
    pin = secrets.token_hex(6)
    done = lamassu_engine_check(
        {
            "ENGINE": "gopem",
            "ENGINES": "pkcs11",
            "GOPEM_DATA": str(tmp_path),
            "PKCS11_DRIVER": str(softhsm_config.driver),
            "PKCS11_LABEL": softhsm_config.label,
            "PKCS11_PIN": pin,
        }
    )
    assert 1 == done.returncode
    assert done.stdout.splitlines()[-1].startswith("FAIL logged in: PKCS11_PIN: ")
    assert pin not in done.stdout + done.stderr
