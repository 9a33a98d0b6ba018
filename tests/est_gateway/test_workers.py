"""EST_WORKERS: how many gateway processes share the port, and what ``lamassu up`` starts."""

from __future__ import annotations

import os

import pytest

from est_gateway.settings import Settings
from lamassu_cli.up import SERVICES, _processes


@pytest.mark.parametrize(
    ("workers", "expected"),
    [(1, 1), (3, 3), (0, os.cpu_count() or 1)],
    ids=["default-one", "three", "zero-is-one-per-core"],
)
def test_gateway_processes(workers: int, expected: int) -> None:
    """EST_WORKERS processes, 0 meaning one per core."""
    assert expected == Settings(est_workers=workers).gateway_processes()


def test_up_starts_each_gateway_process_once() -> None:
    """Workers once each; the gateway EST_WORKERS times, named apart."""
    started = _processes(SERVICES, Settings(est_workers=2))
    assert [
        ("ca_worker", "ca_worker"),
        ("dms_worker", "dms_worker"),
        ("device_worker", "device_worker"),
        ("va_worker", "va_worker"),
        ("est_gateway[1]", "est_gateway"),
        ("est_gateway[2]", "est_gateway"),
        ("alerts_worker", "alerts_worker"),
    ] == started
    assert ("est_gateway", "est_gateway") in _processes(
        SERVICES, Settings(est_workers=1)
    )
