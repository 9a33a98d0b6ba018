"""The asyncpg pool and forward-only SQL migrations, one schema per worker.

Migrations are ``<package>/migrations/NNNN_name.sql``, applied at start in one
transaction each under a per-schema advisory lock, recorded in ``<schema>.schema_migrations``.
The outbox, inbox and schedule-claim tables every worker needs are created here too, so no worker
repeats them.
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from importlib import resources

import asyncpg

from runtime.settings import DatabaseSettings

__all__ = [
    "DatabaseUnavailable",
    "Migration",
    "create_pool",
    "discover_migrations",
    "migrate",
]

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseUnavailable(Exception):  # noqa: N818 - mirrors the 'unavailable' error code
    """PostgreSQL cannot be reached with the configured settings."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """JSON in and out as Python values: what every worker connection is given."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _nothing_to_reset(_conn: asyncpg.Connection) -> None:
    """Connections go back to the pool with no session state: statements run in
    transactions, settings are ``SET LOCAL``, advisory locks are transaction-scoped
    (``migrate`` releases its session lock itself), and asyncpg still rolls back a
    transaction left open. So the default reset query (``RESET ALL``, ``UNLISTEN *``,
    ``pg_advisory_unlock_all()``) would be a round trip on every release for nothing."""


async def create_pool(
    settings: DatabaseSettings, *, database: str | None = None
) -> asyncpg.Pool:
    """Open the pool; a connection failure is one line naming the setting to check."""
    try:
        pool = await asyncpg.create_pool(
            host=settings.postgres_hostname,
            port=settings.postgres_port,
            user=settings.postgres_username,
            password=settings.postgres_password.get_secret_value() or None,
            database=database or settings.postgres_database,
            min_size=1,
            max_size=settings.postgres_pool_size,
            init=prepare_connection,
            reset=_nothing_to_reset,
            timeout=10,
            ssl=_tls(settings),
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        where = f"{settings.postgres_hostname}:{settings.postgres_port}"
        raise DatabaseUnavailable(
            f"POSTGRES_*: cannot open database {database or settings.postgres_database!r} "
            f"at {where}: {type(exc).__name__}: {exc}"
        ) from exc
    if pool is None:  # asyncpg types the result as optional; it never is
        raise DatabaseUnavailable("POSTGRES_*: asyncpg opened no pool")
    return pool


def _tls(settings: DatabaseSettings) -> str | ssl.SSLContext:
    """asyncpg's ``ssl``: libpq's mode by name, or a context that verifies the server
    against POSTGRES_SSLROOTCERT (the system's CAs when unset)."""
    mode = settings.postgres_sslmode
    if mode not in {"verify-ca", "verify-full"}:
        return mode
    root = settings.postgres_sslrootcert
    context = ssl.create_default_context(cafile=None if root is None else str(root))
    context.check_hostname = mode == "verify-full"
    return context


def discover_migrations(package: str) -> list[Migration]:
    """Read ``<package>/migrations/*.sql`` in version order."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{package}: two migrations share a version number")
    return found


def _plumbing(schema: str) -> str:
    # Not CREATE SCHEMA IF NOT EXISTS: PostgreSQL checks CREATE on the database before
    # it looks for the schema, and a worker's role (lamassu db setup) owns its schema
    # but may create none.
    return f"""
    DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = '{schema}') THEN
            CREATE SCHEMA {schema};
        END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS {schema}.outbox (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        exchange text NOT NULL DEFAULT 'events' CHECK (exchange IN ('events', 'commands')),
        routing_key text NOT NULL,
        body bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS {schema}.inbox (
        id text PRIMARY KEY,
        reply jsonb,
        processed_at timestamptz NOT NULL DEFAULT now()
    );
    -- Retention (runtime/inbox.py) deletes by age.
    CREATE INDEX IF NOT EXISTS inbox_processed_at ON {schema}.inbox (processed_at);
    CREATE TABLE IF NOT EXISTS {schema}.schedule_claims (
        name text NOT NULL,
        period timestamptz NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (name, period)
    );
    """


async def migrate(
    pool: asyncpg.Pool, schema: str, migrations: list[Migration]
) -> list[int]:
    """Apply what is missing; safe when several replicas start at once. Returns versions applied."""
    if not _SCHEMA.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    applied: list[int] = []
    async with pool.acquire() as conn:
        # Session-level lock: held across the per-migration transactions below.
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        try:
            async with conn.transaction():
                await conn.execute(_plumbing(schema))
            done: set[int] = {
                r["version"]
                for r in await conn.fetch(
                    f"SELECT version FROM {schema}.schema_migrations"
                )
            }
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration.version)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}"
            )
    return applied
