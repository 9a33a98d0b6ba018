"""VA settings, and the CA worker's VA_URL: a wrong value stops the process with one
line naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ca_worker.settings import Settings as CaSettings
from runtime.settings import SettingsError, load_settings
from va_worker.settings import Settings


@pytest.mark.parametrize(
    ("settings", "variable", "value"),
    [
        (Settings, "VA_PORT", "http"),
        (Settings, "VA_PORT", "70000"),
        (Settings, "VA_OCSP_VALIDITY_MINUTES", "0"),
        (Settings, "VA_RESPONDER_VALIDITY_HOURS", "100000"),
        (Settings, "VA_CRL_DEBOUNCE_SECONDS", "-1"),
        (Settings, "VA_UPKEEP_SECONDS", "0"),
        (Settings, "VA_MAX_REQUEST_BYTES", "1"),
        (CaSettings, "VA_URL", "ftp://va.example"),
        (CaSettings, "VA_URL_BY_CA", '{"a": "not a url"}'),
        (CaSettings, "VA_URL_BY_CA", "[1, 2]"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, settings: type, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(settings)
    line = str(caught.value)
    assert line.startswith(f"{variable}: ")
    assert "\n" not in line


def test_defaults() -> None:
    """Port 8080; no VA URL in certificates until one is configured."""
    settings = Settings()
    assert 8080 == settings.va_port
    ca = CaSettings(va_url_by_ca={"plant": "http://va.plant:8080"})
    assert ("", "http://va.plant:8080") == (
        ca.va_url_for("other"),
        ca.va_url_for("plant"),
    )


@pytest.mark.parametrize(
    ("env", "code", "line"),
    [
        ({"VA_PORT": "nope"}, 2, "va_worker: VA_PORT: Input should be a valid integer"),
        (
            {"VA_KEYS": "/proc/va-keys"},
            1,
            "va_worker: VA_KEYS: cannot create /proc/va-keys",
        ),
    ],
    ids=["bad-port", "keys-not-writable"],
)
def test_worker_stops_at_start_with_one_line(
    env: dict[str, str], code: int, line: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "va_worker"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert code == result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert lines[0].startswith(line)
