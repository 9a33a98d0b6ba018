"""Settings: a wrong value stops the process with one line naming the variable, never its value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ca_worker.settings import Settings
from runtime.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POSTGRES_PORT", "not-a-port"),
        ("POSTGRES_PORT", "70000"),
        ("AMQP_URL", "http://s3cr3t@example/"),
        ("ENGINE", "quantum"),
        ("LOG_LEVEL", "chatty"),
        ("CA_PREFETCH", "0"),
        ("SWEEP_SCHEDULE", "61 * * * *"),
        ("SWEEP_SCHEDULE", "0s"),
        ("SWEEP_SHARDS", "0"),
        ("SWEEP_SHARDS", "5000"),
        ("SWEEP_PREFETCH", "-1"),
    ],
    ids=[
        "port-text",
        "port-range",
        "amqp-scheme",
        "engine",
        "log-level",
        "prefetch",
        "cron-minute",
        "zero-interval",
        "no-shards",
        "too-many-shards",
        "sweep-prefetch",
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value raises SettingsError whose one line starts with the variable's name."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(Settings)
    line = str(caught.value)
    assert line.startswith(f"{variable}: ")
    assert "\n" not in line
    assert value not in line


def test_password_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """POSTGRES_PASSWORD is a secret: its value does not appear in the settings' repr."""
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2-secret")
    settings = load_settings(Settings)
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" == settings.postgres_password.get_secret_value()


def test_worker_stops_at_start_with_one_line() -> None:
    """python -m ca_worker with a bad setting exits 2 printing one line naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "ca_worker"],
        env={"POSTGRES_PORT": "nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert 2 == result.returncode
    assert [
        "ca_worker: POSTGRES_PORT: Input should be a valid integer, unable to parse string as an integer"
    ] == (result.stderr.strip().splitlines())


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    """A database nobody listens on stops the worker with one line naming POSTGRES_*."""
    result = subprocess.run(
        [sys.executable, "-m", "ca_worker"],
        env={
            "POSTGRES_PORT": "1",
            "GOPEM_DATA": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert 1 == result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines)
    assert lines[0].startswith("ca_worker: POSTGRES_*: cannot open database")
