"""``lamassu db setup``: one PostgreSQL role per worker, owning only its schema.

Run once with a superuser's DSN; the workers then connect as their role (LOGIN, no
superuser, no CREATEDB/CREATEROLE), and their migrations run as the schema's owner.
A role has no privilege on another worker's schema, so a compromised worker reads
nothing but its own tables. Passwords go to ``<dir>/<role>.env`` (mode 0600): one
already there is kept, else ``POSTGRES_PASSWORD_<ROLE>``, else a random one.
Idempotent: running it again creates nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from contracts.senders import IDENTITIES
from lamassu_cli.credentials import env_file, read_env, write_env

__all__ = ["WORKER_SCHEMAS", "register", "role_name", "run_db_setup", "setup_roles"]

# Each worker identity and the schema it owns (its queues' worker name).
WORKER_SCHEMAS: Mapping[str, str] = {
    role: identity.worker
    for role, identity in IDENTITIES.items()
    if identity.worker is not None
}
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def role_name(prefix: str, schema: str) -> str:
    """``<prefix><schema>``: PostgreSQL roles are per cluster, so the prefix keeps
    deployments (and test runs) sharing one apart."""
    name = f"{prefix}{schema}"
    if not _NAME.match(name):
        raise ValueError(f"--role-prefix: {name!r} is not a plain lower-case name")
    return name


async def setup_roles(
    conn: asyncpg.Connection, prefix: str, passwords: Mapping[str, str]
) -> dict[str, str]:
    """Create or update every worker's role and schema; returns role name by identity."""
    names = {}
    for identity, schema in WORKER_SCHEMAS.items():
        name = role_name(prefix, schema)
        names[identity] = name
        async with conn.transaction():
            if not await conn.fetchval(
                "SELECT 1 FROM pg_roles WHERE rolname = $1", name
            ):
                await conn.execute(f"CREATE ROLE {name}")
            # DDL takes no parameters: format() quotes the password (%L).
            await conn.execute(
                await conn.fetchval(
                    "SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB "
                    "NOCREATEROLE NOINHERIT PASSWORD %L', $1::text, $2::text)",
                    name,
                    passwords[identity],
                )
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {name}")
            await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
            # Tables a superuser made before (a deployment from before this command).
            for relation in await conn.fetch(
                """SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')""",
                schema,
            ):
                kind = "SEQUENCE" if relation["relkind"] == "S" else "TABLE"
                await conn.execute(f"ALTER {kind} {relation['name']} OWNER TO {name}")
    return names


def _passwords(directory: Path, environ: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for identity in WORKER_SCHEMAS:
        kept = read_env(env_file(directory, identity)).get("POSTGRES_PASSWORD")
        variable = f"POSTGRES_PASSWORD_{identity.upper().replace('-', '_')}"
        found[identity] = kept or environ.get(variable) or secrets.token_urlsafe(24)
    return found


async def _setup(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    directory = Path(args.credentials)
    passwords = _passwords(directory, environ)
    conn = await asyncpg.connect(args.dsn)
    try:
        names = await setup_roles(conn, args.role_prefix, passwords)
    finally:
        await conn.close()
    for identity, name in names.items():
        write_env(
            env_file(directory, identity),
            {"POSTGRES_USERNAME": name, "POSTGRES_PASSWORD": passwords[identity]},
        )
    return ", ".join(f"{name} owns {WORKER_SCHEMAS[i]}" for i, name in names.items())


def run_db_setup(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> int:
    """Make the roles, write their passwords; the exit status."""
    try:
        for schema in WORKER_SCHEMAS.values():
            role_name(args.role_prefix, schema)  # before connecting: a usage error
        done = asyncio.run(_setup(args, environ))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: unavailable: {args.dsn_name}: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"error: invalid: {exc}", file=sys.stderr)
        return 2
    print(f"{done}; credentials in {args.credentials}")
    return 0


def register(groups: Any) -> None:
    """Add the ``db`` command group."""
    sub = groups.add_parser("db", help="database roles").add_subparsers(
        dest="action", required=True
    )
    p = sub.add_parser("setup", help="one role per worker, owning only its schema")
    p.add_argument(
        "--dsn",
        default=os.environ.get(
            "LAMASSU_DB_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/lamassu"
        ),
        help="a superuser's DSN, of the PKI's database (LAMASSU_DB_ADMIN_DSN)",
    )
    p.add_argument(
        "--role-prefix", default="lamassu_", help="roles are <prefix><schema>"
    )
    p.add_argument(
        "--credentials",
        default=os.environ.get("LAMASSU_CREDENTIALS") or ".run/credentials",
        help="directory of <role>.env files",
    )
    p.set_defaults(dsn_name="--dsn")
