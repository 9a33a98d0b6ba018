"""``lamassu status``: the site on one screen, for the on-call engineer.

Each service's readiness and outbox lag come from its admin port (``/readyz``,
``/metrics``; runtime/admin.py), queue depths and dead letters from the broker by
passive declares (no management plugin), the CA and certificate counts from the CA
worker (``ca.stats``). Exit status 0 when everything is healthy, 1 when anything
needs looking at (a service not ready or unreachable, a queue nobody consumes, a dead
letter, no answer from the CA worker), 3 when the broker is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.names import WORKER_QUEUES
from contracts.ops import CAStats, GetCAStats
from lamassu_cli.client import Client, CliError
from lamassu_cli.commands import add_command
from runtime.admin import DEFAULT_ADMIN_PORTS
from runtime.settings import SettingsError, load_settings

__all__ = ["StatusSettings", "admin_urls", "register", "status"]

_PROBE_TIMEOUT = 3.0


@dataclass
class Service:
    name: str
    url: str
    ready: bool = False
    detail: str = ""
    outbox_backlog: float | None = None
    outbox_oldest_seconds: float | None = None


@dataclass
class QueueState:
    name: str
    messages: int | None
    consumers: int | None
    dead_letters: int | None


@dataclass
class Report:
    services: list[Service] = field(default_factory=list)
    queues: list[QueueState] = field(default_factory=list)
    cas: int | None = None
    certificates: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def register(groups: Any) -> None:
    add_command(
        groups,
        "status",
        status,
        "readiness of every service, queues, dead letters, CAs and certificates; "
        "exit 1 when anything is unhealthy",
    )


def admin_urls(setting: str) -> dict[str, str]:
    """``LAMASSU_ADMIN_URLS`` (``name=url,...``), or every service's default port."""
    if not setting.strip():
        return {
            name: f"http://127.0.0.1:{port}"
            for name, port in DEFAULT_ADMIN_PORTS.items()
        }
    urls = {}
    for entry in setting.split(","):
        name, sep, url = entry.strip().partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise CliError(
                f"LAMASSU_ADMIN_URLS: {entry.strip()!r} is not name=http://host:port",
                exit_code=2,
            )
        urls[name] = url.rstrip("/")
    return urls


class StatusSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # Where each service's admin port is, when not on this host's default ports.
    lamassu_admin_urls: str = ""


async def status(args: argparse.Namespace, client: Client) -> None:
    try:
        urls = admin_urls(load_settings(StatusSettings).lamassu_admin_urls)
    except SettingsError as exc:
        raise CliError(str(exc), exit_code=2) from None
    report = Report()
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT)
    ) as session:
        report.services = list(
            await asyncio.gather(*(_probe(session, n, u) for n, u in urls.items()))
        )
    report.problems += [f"{s.name}: {s.detail}" for s in report.services if not s.ready]
    await _queues(client, report)
    await _counts(client, report)
    if args.json:
        document = {"ok": not report.problems, **asdict(report)}
        print(json.dumps(document, indent=2))
    else:
        print(_render(report))
    if report.problems:
        raise CliError(
            "unhealthy: " + "; ".join(report.problems), exit_code=1, reported=True
        )


async def _probe(session: aiohttp.ClientSession, name: str, url: str) -> Service:
    service = Service(name, url)
    try:
        async with session.get(f"{url}/readyz") as response:
            body = await response.json(content_type=None)
        async with session.get(f"{url}/metrics") as response:
            metrics = await response.text()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        service.detail = f"unreachable at {url} ({type(exc).__name__})"
        return service
    checks: Mapping[str, str] = body.get("checks", {}) if isinstance(body, dict) else {}
    failing = [f"{k}: {v}" for k, v in checks.items() if v != "ok"]
    service.ready = bool(body.get("ready")) if isinstance(body, dict) else False
    service.detail = "; ".join(failing) if failing else "ready"
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "lamassu_outbox_backlog":
                service.outbox_backlog = sample.value
            elif sample.name == "lamassu_outbox_oldest_age_seconds":
                service.outbox_oldest_seconds = sample.value
    return service


async def _queues(client: Client, report: Report) -> None:
    topology = client.bus.topology
    for worker, purpose in WORKER_QUEUES:
        name = topology.queue(worker, purpose)
        state = QueueState(
            f"{worker}.{purpose}",
            await client.bus.message_count(name),
            await client.bus.consumer_count(name),
            await client.bus.message_count(f"{name}.dead"),
        )
        report.queues.append(state)
        # A queue that was never declared is a service not deployed here (the cloud
        # proxy is optional); one that exists with nobody consuming is a service down.
        if state.consumers == 0:
            report.problems.append(f"nothing consumes {state.name}")
        if state.dead_letters:
            report.problems.append(
                f"{state.dead_letters} dead letter(s) in {state.name}.dead "
                "(lamassu dlq list)"
            )


async def _counts(client: Client, report: Report) -> None:
    try:
        stats = CAStats.model_validate(await client.call(GetCAStats()))
    except CliError as exc:
        report.problems.append(f"CA counts: {exc}")
        return
    report.cas = stats.cas
    for count in stats.certificates:
        key = count.status.value
        report.certificates[key] = report.certificates.get(key, 0) + count.count


def _render(report: Report) -> str:
    lines = [f"{'SERVICE':16}{'READY':7}{'OUTBOX':>8}{'OLDEST':>9}  DETAIL"]
    for s in report.services:
        backlog = "-" if s.outbox_backlog is None else f"{s.outbox_backlog:.0f}"
        oldest = (
            "-"
            if s.outbox_oldest_seconds is None
            else f"{s.outbox_oldest_seconds:.0f}s"
        )
        ready = "yes" if s.ready else "NO"
        lines.append(f"{s.name:16}{ready:7}{backlog:>8}{oldest:>9}  {s.detail}")
    lines += ["", f"{'QUEUE':20}{'READY':>8}{'CONSUMERS':>11}{'DEAD':>7}"]
    for q in report.queues:
        cells = [_n(q.messages), _n(q.consumers), _n(q.dead_letters)]
        lines.append(f"{q.name:20}{cells[0]:>8}{cells[1]:>11}{cells[2]:>7}")
    certificates = ", ".join(f"{k} {v}" for k, v in sorted(report.certificates.items()))
    lines += [
        "",
        f"CAs: {_n(report.cas)}; certificates: {certificates or 'none'}",
        "healthy" if not report.problems else f"UNHEALTHY ({len(report.problems)})",
    ]
    return "\n".join(lines)


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
