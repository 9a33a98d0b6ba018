"""``lamassu engine check``: are the CA worker's crypto engines usable?

By default it asks the running CA worker (``ca.engines``), which checks the engines
it has configured, in its own environment: the answer is about the keys it signs
with. ``--local`` checks what the CA worker's variables (``ENGINE``, ``ENGINES``,
``PKCS11_*``, ``VAULT_*``, ``GOPEM_DATA``) in this shell would give, with no bus; it
says so, and never creates a key directory that is not there.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from contracts.ops import CheckEngines, EngineChecks
from engines.check import CheckLine, check
from engines.config import AnyEngineConfig, GopemConfig
from engines.settings import EngineSettings
from lamassu_cli.client import Client, CliError
from lamassu_cli.commands import add_command
from lamassu_cli.messages import explain_setting

__all__ = ["check_worker", "register", "run_check"]


def register(groups: Any) -> None:
    engine = groups.add_parser("engine", help="crypto engines").add_subparsers(
        dest="action", required=True
    )
    p = add_command(
        engine,
        "check",
        check_worker,
        "check the running CA worker's engines; exit 1 on any fault",
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="check the engine variables of this shell instead (no bus needed)",
    )


async def check_worker(args: argparse.Namespace, client: Client) -> None:
    """Ask the CA worker to check its engines; print its lines."""
    result = EngineChecks.model_validate(await client.call(CheckEngines()))
    results = [
        (item.engine, CheckLine(item.check, ok=item.ok, detail=item.detail))
        for item in result.items
    ]
    _print(args, results, "the running CA worker's engines")
    failed = [f"{name}: {line.name}" for name, line in results if not line.ok]
    if failed:
        raise CliError(f"engine check failed ({', '.join(failed)})", reported=True)


def run_check(args: argparse.Namespace) -> int:
    """``--local``: the check lines of every engine this shell configures; 0 if all
    hold, else 1."""
    try:
        settings = EngineSettings()
    except ValidationError as exc:
        detail = explain_setting(exc)
        results = [("-", CheckLine("settings", ok=False, detail=detail))]
    else:
        results = [
            (name, line)
            for name, config in settings.engine_configs().items()
            for line in _check_without_creating(config)
        ]
    _print(args, results, "this shell's engine settings, not the running worker's")
    return 0 if all(line.ok for _, line in results) else 1


def _check_without_creating(config: AnyEngineConfig) -> list[CheckLine]:
    """``engines.check``, except that a missing key directory is a fault here: the
    gopem engine creates it when it opens, which a check must not do."""
    if isinstance(config, GopemConfig) and not config.data.is_dir():
        return [
            CheckLine("engine", ok=True, detail=f"gopem, {config.data}"),
            CheckLine(
                "reachable",
                ok=False,
                detail=f"GOPEM_DATA: {config.data} does not exist (not created by "
                "a check; the CA worker creates it when it starts)",
            ),
        ]
    return check(config)


def _print(
    args: argparse.Namespace, results: list[tuple[str, CheckLine]], source: str
) -> None:
    if args.json:
        document = {
            "items": [
                {
                    "engine": name,
                    "check": line.name,
                    "ok": line.ok,
                    "detail": line.detail,
                }
                for name, line in results
            ],
            "next": None,
            "source": "local" if args.local else "worker",
        }
        print(json.dumps(document, indent=2))
        return
    print(f"# {source}", file=sys.stderr)
    for _, line in results:
        print(line)
