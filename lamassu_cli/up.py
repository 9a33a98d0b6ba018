"""``lamassu up``: every service in one process tree, for demos and small sites.

Each service is a child process (the EST gateway ``EST_WORKERS`` of them, sharing its
port); SIGINT/SIGTERM stop them all, and if one dies the others are stopped too, so the
tree never half-runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from est_gateway.settings import Settings as GatewaySettings
from runtime.settings import SettingsError, load_settings

__all__ = ["SERVICES", "up"]

SERVICES = ("ca_worker", "dms_worker", "device_worker", "va_worker", "est_gateway")


async def up(services: tuple[str, ...] = SERVICES) -> int:
    """Start the services, wait for a signal or a death; return the exit status."""
    gateway = _gateway_settings() if "est_gateway" in services else None
    children = {
        name: await asyncio.create_subprocess_exec(sys.executable, "-m", service)
        for name, service in _processes(services, gateway)
    }
    for name, child in children.items():
        sys.stderr.write(f"lamassu up: started {name} (pid {child.pid})\n")
    if gateway is not None:
        _describe_gateway(gateway)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waits = {asyncio.create_task(c.wait()): n for n, c in children.items()}
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    for task in done:
        if task in waits:
            sys.stderr.write(
                f"lamassu up: {waits[task]} exited with {task.result()}; stopping\n"
            )
            status = 1
    for child in children.values():
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
    for child in children.values():
        try:
            async with asyncio.timeout(15):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()
    stopper.cancel()
    return status


def _processes(
    services: tuple[str, ...], gateway: GatewaySettings | None
) -> list[tuple[str, str]]:
    """(name, module) of each child: EST_WORKERS gateways share the port (SO_REUSEPORT)."""
    found = []
    for service in services:
        copies = 1
        if service == "est_gateway" and gateway is not None:
            copies = gateway.gateway_processes()
        found += [
            (service if copies == 1 else f"{service}[{i}]", service)
            for i in range(1, copies + 1)
        ]
    return found


def _gateway_settings() -> GatewaySettings | None:
    try:
        return load_settings(GatewaySettings)
    except SettingsError:
        return None  # the gateway itself reports the bad setting and exits


def _describe_gateway(settings: GatewaySettings) -> None:
    """Tell the operator where EST listens and which files a client needs."""
    tls = settings.est_tls_cert_file or settings.est_tls_dir / "server.pem"
    sys.stderr.write(
        f"lamassu up: EST at https://{settings.est_server_names[0]}:{settings.est_port}"
        "/.well-known/est/<ca-name>/\n"
        f"lamassu up: EST server certificate (trust it in clients): {tls}\n"
        "lamassu up: CAs trusted for client certificates: "
        f"{settings.est_tls_dir / 'client-trust.pem'}\n"
    )
