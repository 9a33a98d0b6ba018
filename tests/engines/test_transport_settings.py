"""Transport security of the engine settings: no Vault token over plain http:// to
another host unless allowed; unseal keys for a remote Vault are warned about."""

from __future__ import annotations

import pytest

from engines import EngineSettings
from runtime.settings import SettingsError, load_settings
from tests.engines.test_engine_settings import settings_from

TOKEN = {"ENGINE": "vault-transit", "VAULT_TOKEN": "t"}


@pytest.mark.parametrize(
    "address",
    ["http://vault.example:8200", "http://10.0.0.7:8200", "http://[2001:db8::1]:8200"],
    ids=["name", "ipv4", "ipv6"],
)
def test_plain_http_to_another_host_is_refused(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line naming VAULT_ADDRESS and what to do; the token is not echoed."""
    with pytest.raises(SettingsError) as refused:
        settings_from({**TOKEN, "VAULT_ADDRESS": address}, monkeypatch)
    line = str(refused.value)
    assert line.startswith("VAULT_ADDRESS: http:// to a host other than this one")
    assert "VAULT_ALLOW_PLAIN_HTTP" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("address", "allow"),
    [
        ("http://127.0.0.1:8200", None),
        ("http://localhost:8200", None),
        ("http://[::1]:8200", None),
        ("https://vault.example:8200", None),
        ("http://vault.example:8200", "true"),
    ],
    ids=["loopback", "localhost", "ipv6-loopback", "https", "allowed"],
)
def test_accepted_vault_addresses(
    address: str, allow: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loopback, https, or plain http explicitly allowed (and then warned about)."""
    env = {**TOKEN, "VAULT_ADDRESS": address}
    if allow is not None:
        env["VAULT_ALLOW_PLAIN_HTTP"] = allow
    settings = settings_from(env, monkeypatch)
    assert address == settings.vault_address
    assert (allow is not None) == any(
        "VAULT_ALLOW_PLAIN_HTTP" in w for w in settings.transport_warnings()
    )


@pytest.mark.parametrize(
    ("address", "warned"),
    [("https://vault.example:8200", True), ("http://127.0.0.1:8200", False)],
    ids=["remote-vault", "local-development-vault"],
)
def test_unseal_key_file_outside_development_is_warned_about(
    address: str, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unseal keys on the CA host for a Vault elsewhere: a warning at start."""
    env = {**TOKEN, "VAULT_ADDRESS": address, "VAULT_UNSEAL_KEY_FILE": "/k.json"}
    warnings = settings_from(env, monkeypatch).transport_warnings()
    assert warned == any("VAULT_UNSEAL_KEY_FILE" in w for w in warnings)


def test_no_warning_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default engine (gopem) has nothing to warn about."""
    assert [] == settings_from({}, monkeypatch).transport_warnings()
    assert isinstance(load_settings(EngineSettings), EngineSettings)
