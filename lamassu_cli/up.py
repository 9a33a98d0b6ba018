"""``lamassu up``: every service in one process tree, for demos and small sites.

Each service is a child process (the EST gateway ``EST_WORKERS`` of them, sharing its
port). A child that dies is started again after a backoff (1 s doubling to 30 s, back
to 1 s once it has run for a minute), and its exit is logged, so one crash does not
take the site down; a child that cannot start at all (a wrong setting: exit status 2)
is not restarted, and stops the tree. SIGINT/SIGTERM stop every child and exit 0.

Each child runs under its own identity (DESIGN §2a): the ``<role>.env`` file of the
credentials directory (``LAMASSU_CREDENTIALS``, default ``.run/credentials``, written by
``lamassu bus setup`` and ``lamassu db setup``) is laid over its environment, so it gets
its own AMQP_URL and POSTGRES_USERNAME/POSTGRES_PASSWORD. Without that directory every
child shares this process's settings, and ``up`` says so.

In production, run each service under its own supervisor instead (systemd units with
``Restart=on-failure`` and ``EnvironmentFile=``, Kubernetes, or compose's
``restart: unless-stopped`` and ``env_file``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from lamassu_cli.credentials import env_file, read_env
from runtime.settings import EstListenerSettings, SettingsError, load_settings

__all__ = [
    "IDENTITY_OF",
    "OPTIONAL_SERVICES",
    "SERVICES",
    "child_environment",
    "configured_services",
    "up",
]

SERVICES = (
    "ca_worker",
    "dms_worker",
    "device_worker",
    "va_worker",
    "est_gateway",
    "alerts_worker",
)
# Started only when configured: the cloud proxy when CLOUD_CONNECTORS names one.
OPTIONAL_SERVICES = {"cloud_proxy": "CLOUD_CONNECTORS"}
# The broker and database identity (contracts/senders.py role) of each service.
IDENTITY_OF = {
    "ca_worker": "ca-worker",
    "dms_worker": "dms-worker",
    "device_worker": "device-worker",
    "va_worker": "va-worker",
    "est_gateway": "est-gateway",
    "alerts_worker": "alerts-worker",
    "cloud_proxy": "cloud-proxy",
}


def child_environment(
    service: str, environ: Mapping[str, str]
) -> dict[str, str] | None:
    """The environment of a service's child: its identity's file over ``environ``;
    None when there is no credentials directory (every child shares ``environ``)."""
    directory = Path(environ.get("LAMASSU_CREDENTIALS") or ".run/credentials")
    if not directory.is_dir():
        return None
    return dict(environ) | read_env(env_file(directory, IDENTITY_OF[service]))


def configured_services(environ: Mapping[str, str]) -> tuple[str, ...]:
    """SERVICES plus each optional service whose variable is set."""
    return SERVICES + tuple(
        service
        for service, variable in OPTIONAL_SERVICES.items()
        if environ.get(variable, "").strip()
    )


# Exit status of a service whose settings are wrong: restarting cannot help.
_BAD_SETTINGS = 2
_HEALTHY_AFTER = 60.0
_MAX_DELAY = 30.0


async def up(services: tuple[str, ...] = SERVICES) -> int:
    """Start and keep the services running until a signal; return the exit status."""
    gateway = _gateway_settings() if "est_gateway" in services else None
    if child_environment(services[0], os.environ) is None:
        sys.stderr.write(
            "lamassu up: no credentials directory (LAMASSU_CREDENTIALS): every service "
            "shares AMQP_URL and POSTGRES_USERNAME; run lamassu bus setup and lamassu "
            "db setup\n"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    keepers = [
        asyncio.create_task(_keep(name, module, stop, _admin_port(name)))
        for name, module in _processes(services, gateway)
    ]
    if gateway is not None:
        _describe_gateway(gateway)
    if os.environ.get("ADMIN_PORT", "").strip() != "0":
        sys.stderr.write(
            "lamassu up: each service serves /healthz, /readyz and /metrics on its "
            "admin port (ADMIN_PORT); `lamassu status` sums them up\n"
        )
    done, _ = await asyncio.wait(
        [asyncio.create_task(stop.wait()), *keepers],
        return_when=asyncio.FIRST_COMPLETED,
    )
    # A keeper only returns early when its service cannot start: stop the rest.
    status = 1 if any(k in done for k in keepers) else 0
    stop.set()
    await asyncio.gather(*keepers)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    return status


def _admin_port(name: str) -> str | None:
    """One child's own admin port (README "Health and
    metrics"): ADMIN_PORT unset, each service's default (9101...) and 9110, 9111...
    for gateway copies beyond the first, since SO_REUSEPORT would spread scrapes over
    the copies; ADMIN_PORT=N, consecutive ports from N in SERVICES order, gateway
    copies last; ADMIN_PORT=0, none. None: the child inherits this environment."""
    setting = os.environ.get("ADMIN_PORT", "").strip()
    if setting == "0":
        return None
    service, _, copy_text = name.partition("[")
    copy = int(copy_text.rstrip("]") or 1)
    if setting:
        try:
            base = int(setting)
        except ValueError:
            return None  # the service itself reports the bad setting
        every = (*SERVICES, *OPTIONAL_SERVICES)
        offset = every.index(service) if service in every else 0
        port = base + (offset if copy == 1 else len(every) + copy - 2)
    elif copy > 1:
        port = 9108 + copy
    else:
        return None
    return str(port)


def _environment(module: str, admin_port: str | None) -> dict[str, str] | None:
    """A child's environment at each start: its identity's file (read again, so that
    rotated credentials take effect on a restart) and its admin port."""
    environment = child_environment(module, os.environ)
    if admin_port is None:
        return environment
    return (environment or dict(os.environ)) | {"ADMIN_PORT": admin_port}


async def _keep(
    name: str, module: str, stop: asyncio.Event, admin_port: str | None = None
) -> None:
    """Run one service until ``stop``, starting it again whenever it dies."""
    delay = 1.0
    while not stop.is_set():
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, env=_environment(module, admin_port)
        )
        started = time.monotonic()
        sys.stderr.write(f"lamassu up: started {name} (pid {child.pid})\n")
        exited = asyncio.create_task(child.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            await _terminate(child)
            return
        status = exited.result()
        if status == _BAD_SETTINGS:
            sys.stderr.write(
                f"lamassu up: {name} exited with {status} (a setting is wrong); "
                "stopping\n"
            )
            return
        if time.monotonic() - started >= _HEALTHY_AFTER:
            delay = 1.0
        sys.stderr.write(
            f"lamassu up: {name} exited with {status}; restarting in {delay:g} s\n"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        delay = min(delay * 2, _MAX_DELAY)


async def _terminate(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
    try:
        async with asyncio.timeout(15):
            await child.wait()
    except TimeoutError:
        child.kill()
        await child.wait()


def _processes(
    services: tuple[str, ...], gateway: EstListenerSettings | None
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


def _gateway_settings() -> EstListenerSettings | None:
    try:
        return load_settings(EstListenerSettings)
    except SettingsError:
        return None  # the gateway itself reports the bad setting and exits


def _describe_gateway(settings: EstListenerSettings) -> None:
    """Tell the operator where EST listens and which files a client needs."""
    tls = settings.est_tls_cert_file or settings.est_tls_dir / "server.pem"
    sys.stderr.write(
        f"lamassu up: EST at https://{settings.est_server_names[0]}:{settings.est_port}"
        "/.well-known/est/<ca-name>/\n"
        f"lamassu up: EST server certificate (trust it in clients): {tls}\n"
        "lamassu up: CAs trusted for client certificates: "
        f"{settings.est_tls_dir / 'client-trust.pem'}\n"
    )
