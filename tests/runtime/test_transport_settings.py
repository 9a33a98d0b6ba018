"""Transport security settings: amqps:// with a CA file and a client certificate
(EXTERNAL), PostgreSQL sslmode and sslrootcert; garbage is one line naming the
variable, never echoing the URL (it holds a password)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from runtime.db import _tls
from runtime.settings import BusSettings, DatabaseSettings, SettingsError, load_settings


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("amqps://u:s3cr3t@mq/?cafile=/no/such.pem", "cafile: no such file"),
        ("amqps://u:s3cr3t@mq/?certfile=/no/c.pem", "certfile: no such file"),
        ("amqps://mq/?auth=external", "auth=external needs amqps://"),
        ("amqp://u:s3cr3t@mq/?auth=external", "auth=external needs amqps://"),
    ],
    ids=["cafile", "certfile", "external-no-user", "external-plain"],
)
def test_bad_amqp_tls_settings_are_one_line(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    """What is wrong, naming AMQP_URL; the password never printed."""
    monkeypatch.setenv("AMQP_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings(BusSettings)
    line = str(caught.value)
    assert line.startswith("AMQP_URL: ")
    assert reason in line
    assert "s3cr3t" not in line


def test_amqps_with_client_certificate_is_accepted(
    monkeypatch: pytest.MonkeyPatch, pem: Path
) -> None:
    """amqps://, a CA file, a client certificate and key, and the EXTERNAL login."""
    url = (
        f"amqps://ca-worker@mq:5671/lamassu?cafile={pem}&certfile={pem}"
        f"&keyfile={pem}&auth=external"
    )
    monkeypatch.setenv("AMQP_URL", url)
    assert url == load_settings(BusSettings).amqp_url.get_secret_value()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("POSTGRES_SSLMODE", "maybe"), ("POSTGRES_SSLROOTCERT", "/no/such/root.pem")],
    ids=["sslmode", "sslrootcert"],
)
def test_bad_postgres_tls_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(DatabaseSettings)
    assert str(caught.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(
    ("mode", "hostname_checked"),
    [("verify-full", True), ("verify-ca", False)],
    ids=["verify-full", "verify-ca"],
)
def test_verifying_modes_check_the_server_certificate(
    mode: str, *, hostname_checked: bool
) -> None:
    """verify-* connect with a context that requires the server's certificate (and,
    for verify-full, its host name); other modes pass through to asyncpg by name."""
    context = _tls(DatabaseSettings(postgres_sslmode=mode))
    assert isinstance(context, ssl.SSLContext)
    assert ssl.CERT_REQUIRED == context.verify_mode
    assert hostname_checked == context.check_hostname
    assert "require" == _tls(DatabaseSettings(postgres_sslmode="require"))
