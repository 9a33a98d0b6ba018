"""``lamassu engine check``: check the crypto engines the CA worker would open.

It reads the CA worker's own engine variables (``ENGINE``, ``ENGINES``, ``PKCS11_*``,
``VAULT_*``, ``GOPEM_DATA``) through ``engines.settings``, runs ``engines.check`` for
each engine and prints one line per checked fact. It needs no bus and no database.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from engines.check import CheckLine, check
from engines.settings import EngineSettings
from lamassu_cli.commands import add_command
from runtime.settings import SettingsError, load_settings

__all__ = ["register", "run_check"]


def register(groups: Any) -> None:
    engine = groups.add_parser("engine", help="crypto engines").add_subparsers(
        dest="action", required=True
    )
    add_command(
        engine,
        "check",
        None,
        "check each engine ENGINE/ENGINES configure; exit 1 on any fault",
    )


def run_check(args: argparse.Namespace) -> int:
    """Print the check lines of every configured engine; 0 if all hold, else 1."""
    try:
        settings = load_settings(EngineSettings)
    except SettingsError as exc:
        results = [("-", CheckLine("settings", ok=False, detail=str(exc)))]
    else:
        results = [
            (name, line)
            for name, config in settings.engine_configs().items()
            for line in check(config)
        ]
    if args.json:
        document = [
            {"engine": name, "check": line.name, "ok": line.ok, "detail": line.detail}
            for name, line in results
        ]
        print(json.dumps(document, indent=2))
    else:
        for _, line in results:
            print(line)
    return 0 if all(line.ok for _, line in results) else 1
