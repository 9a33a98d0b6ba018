"""The gateway's /metrics after a few enrollments, and its audit line per request."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from runtime.bus import Bus
from tests.conftest import Backends, gateway_running
from tests.est_gateway.test_gateway import new_stage, openssl_csr

pytestmark = pytest.mark.timeout(180)


async def test_enrollments_counted_timed_and_audited(
    backends: Backends,
    bus: Bus,
    dms_service: None,
    device_service: None,
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin = probe.getsockname()[1]
    async with gateway_running(backends, tmp_path / "tls", admin_port=admin) as gw:
        stage = await new_stage(bus, gw, tmp_path)
        with capture_logs() as logs:
            for index in range(3):
                body, _ = openssl_csr(tmp_path, f"metrics-{index}")
                status, _, _ = await stage.est.enroll(
                    stage.ca.name, body, stage.dms_identity
                )
                assert status == 200
            body, _ = openssl_csr(tmp_path, "no-identity")
            status, _, _ = await stage.est.enroll(stage.ca.name, body, None)
            assert status == 401
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{admin}/metrics") as response:
                assert response.status == 200
                lines = (await response.text()).splitlines()
            async with session.get(f"http://127.0.0.1:{admin}/readyz") as response:
                assert response.status == 200
                ready = await response.json()
    checks = {"bus": "ok", "consumers": "ok", "tasks": "ok"}
    assert ready == {"ready": True, "checks": checks}
    ok = 'lamassu_est_requests_total{operation="simpleenroll",outcome="ok"} 3.0'
    refused = (
        'lamassu_est_requests_total{operation="simpleenroll",outcome="refused"} 1.0'
    )
    assert ok in lines
    assert refused in lines
    count = 'lamassu_est_request_duration_seconds_count{operation="simpleenroll"} 4.0'
    assert count in lines
    audit = [entry for entry in logs if entry["event"] == "est_request"]
    assert len(audit) == 4
    issued = audit[0]
    assert issued["outcome"] == "ok"
    assert issued["label"] == stage.ca.name
    assert issued["operation"] == "simpleenroll"
    assert issued["client"] == "127.0.0.1"
    assert issued["client_subject"] == f"CN={stage.dms.name}"
    assert len(issued["client_sha256"]) == 64
    denied = audit[-1]
    assert denied["outcome"] == "refused"
    assert denied["reason"] == "a TLS client certificate is required to enroll"
    assert "client_subject" not in denied
