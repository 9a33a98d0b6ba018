"""A wrong alerts setting stops the worker at start with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMTP_TLS", "sometimes"),
        ("SMTP_PORT", "70000"),
        ("ALERTS_RETRY_PERIOD", "-1"),
        ("ALERTS_CONCURRENCY", "0"),
        ("ALERTS_HTTP_TIMEOUT", "soon"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable(variable: str, value: str) -> None:
    env = dict(os.environ, **{variable: value})
    result = subprocess.run(
        [sys.executable, "-m", "alerts_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 2 == result.returncode
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"alerts_worker: {variable}: ")
