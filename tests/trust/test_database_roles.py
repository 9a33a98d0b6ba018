"""``lamassu db setup``: each worker's role owns its schema, migrates it, and cannot
read another worker's schema; the workers of the trust stack run under these roles."""

from __future__ import annotations

import asyncpg
import pytest

from lamassu_cli.db_setup import WORKER_SCHEMAS, setup_roles
from runtime.db import discover_migrations, migrate
from tests.conftest import Backends
from tests.trust.conftest import Identities, Stack

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

PACKAGES = {
    "ca-worker": "ca_worker",
    "dms-worker": "dms_worker",
    "device-worker": "device_worker",
    "va-worker": "va_worker",
    "alerts-worker": "alerts_worker",
    "cloud-proxy": "cloud_proxy",
}


async def _pool(backends: Backends, user: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        host=backends.pg_host,
        port=backends.pg_port,
        user=user,
        database=backends.database,
        min_size=1,
        max_size=1,
    )
    assert pool is not None
    return pool


async def test_each_role_migrates_its_schema_and_reads_no_other(
    trust_backends: tuple[Backends, Identities, dict[str, str]], stack: Stack
) -> None:
    """Every worker's migrations run as its role; its role then gets
    ``permission denied`` on every other worker's schema, and is no superuser."""
    backends, _ids, roles = trust_backends
    assert set(PACKAGES) == set(WORKER_SCHEMAS)
    for identity, schema in WORKER_SCHEMAS.items():
        pool = await _pool(backends, roles[identity])
        try:
            await migrate(pool, schema, discover_migrations(PACKAGES[identity]))
            assert await pool.fetchval(f"SELECT count(*) FROM {schema}.inbox") >= 0
            assert not await pool.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
        finally:
            await pool.close()
    for identity in WORKER_SCHEMAS:
        pool = await _pool(backends, roles[identity])
        try:
            for other in set(WORKER_SCHEMAS.values()) - {WORKER_SCHEMAS[identity]}:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await pool.fetchval(f"SELECT count(*) FROM {other}.inbox")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await pool.execute("CREATE SCHEMA intruder")
        finally:
            await pool.close()


async def test_the_running_workers_use_their_roles(
    trust_backends: tuple[Backends, Identities, dict[str, str]], stack: Stack
) -> None:
    """The stack's workers are connected as their roles, not as the superuser."""
    backends, _ids, roles = trust_backends
    pool = await backends.pool()
    try:
        users = {
            row["usename"]
            for row in await pool.fetch(
                "SELECT usename FROM pg_stat_activity WHERE datname = $1",
                backends.database,
            )
        }
    finally:
        await pool.close()
    assert {roles["ca-worker"], roles["dms-worker"], roles["device-worker"]} <= users


async def test_setting_up_again_keeps_what_is_there(
    trust_backends: tuple[Backends, Identities, dict[str, str]], stack: Stack
) -> None:
    """A second run creates nothing twice and leaves ownership with the roles."""
    backends, _ids, roles = trust_backends
    prefix = roles["ca-worker"].removesuffix("ca")
    conn = await asyncpg.connect(
        host=backends.pg_host,
        port=backends.pg_port,
        user=backends.pg_user,
        database=backends.database,
    )
    try:
        again = await setup_roles(conn, prefix, dict.fromkeys(WORKER_SCHEMAS, "pw"))
        owners = await conn.fetch(
            """SELECT c.relname, pg_get_userbyid(c.relowner) AS owner
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'ca' AND c.relkind = 'r'"""
        )
    finally:
        await conn.close()
    assert roles == again
    assert owners
    assert {roles["ca-worker"]} == {row["owner"] for row in owners}
