"""``lamassu bus setup``: the deployment's broker identities, made in one import.

Passwords are kept in ``<dir>/<role>.env`` (mode 0600): a password already there is
kept, else it comes from ``AMQP_PASSWORD_<ROLE>`` (``AMQP_PASSWORD_CA_WORKER``), else
it is random. The definitions (``lamassu_cli.identities``) are then applied with one
``rabbitmqctl import_definitions`` (idempotent: importing again changes nothing but
what differs), or printed with ``--print`` for an import through the management API.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from contracts.names import Topology
from contracts.senders import IDENTITIES
from lamassu_cli.credentials import env_file, read_env, write_env
from lamassu_cli.identities import definitions

__all__ = ["credentials", "import_definitions", "register", "run_bus_setup"]


def credentials(
    directory: Path, environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Every role's password, and the roles whose password is new."""
    passwords, new = {}, []
    for role in IDENTITIES:
        url = read_env(env_file(directory, role)).get("AMQP_URL", "")
        kept = unquote(urlsplit(url).password or "") if url else ""
        variable = f"AMQP_PASSWORD_{role.upper().replace('-', '_')}"
        passwords[role] = kept or environ.get(variable) or secrets.token_urlsafe(24)
        if not kept:
            new.append(role)
    return passwords, new


def run_bus_setup(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> int:
    """Write the credentials, then import (or print) the definitions; exit status."""
    topology = Topology(args.prefix)
    directory = Path(args.credentials)
    passwords, new = credentials(directory, environ)
    document = definitions(vhost=args.vhost, topology=topology, passwords=passwords)
    for role, password in passwords.items():
        user = quote(f"{args.prefix}{role}", safe="")
        url = (
            f"{args.scheme}://{user}:{quote(password, safe='')}@{args.host}:"
            f"{args.port}/{quote(args.vhost, safe='')}"
        )
        write_env(
            env_file(directory, role), {"AMQP_URL": url, "AMQP_PREFIX": args.prefix}
        )
    if args.print:
        print(json.dumps(document, indent=2))
        return 0
    try:
        import_definitions(args.rabbitmqctl, document)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(
            f"error: unavailable: rabbitmqctl import_definitions: {exc}",
            file=sys.stderr,
        )
        return 3
    print(
        f"vhost {args.vhost}: {len(passwords)} users ({', '.join(document_users(document))}), "
        "their permissions and topic permissions imported; "
        f"credentials in {directory} (new: {', '.join(new) or 'none'})"
    )
    return 0


def document_users(document: Mapping[str, Any]) -> list[str]:
    return [user["name"] for user in document["users"]]


def import_definitions(rabbitmqctl: str, document: Mapping[str, Any]) -> None:
    """One ``import_definitions`` call, the document (password hashes) on its stdin:
    no file to leave behind, and rabbitmqctl drops to the broker's user, which could
    not read ours."""
    # The command is ours and no shell is involved.
    subprocess.run(  # noqa: S603
        [rabbitmqctl, "import_definitions"],
        input=json.dumps(document).encode(),
        check=True,
        capture_output=True,
        timeout=60,
    )


def register(groups: Any) -> None:
    """Add the ``bus`` command group (it does not use the bus: it makes its users)."""
    sub = groups.add_parser("bus", help="broker identities").add_subparsers(
        dest="action", required=True
    )
    p = sub.add_parser("setup", help="create the vhost, users and permissions")
    p.add_argument("--vhost", default="lamassu")
    p.add_argument("--prefix", default="", help="AMQP_PREFIX of the deployment")
    p.add_argument("--host", default="127.0.0.1", help="broker host for AMQP_URL")
    p.add_argument("--port", type=int, default=5672)
    p.add_argument("--scheme", choices=["amqp", "amqps"], default="amqp")
    p.add_argument(
        "--credentials",
        default=os.environ.get("LAMASSU_CREDENTIALS") or ".run/credentials",
        help="directory of <role>.env files (LAMASSU_CREDENTIALS)",
    )
    p.add_argument("--rabbitmqctl", default="rabbitmqctl")
    p.add_argument(
        "--print",
        action="store_true",
        help="print the definitions instead of importing them",
    )
