"""The CA worker's routes in memory (``runtime.testing``): its schema, a gopem engine
in a directory of the test's, and the per-message context ``ca_worker.__main__``
builds. Shared by the CA's handler tests and the VA's, which feed on the CA's events.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from ca_worker.authorities import close_authorities, open_authorities
from ca_worker.context import CaContext, CaDeps
from ca_worker.handlers import HANDLERS
from ca_worker.inspection import inspection_handlers
from ca_worker.publication import VA_HANDLERS
from ca_worker.store import Store
from ca_worker.sweeps import SHARD_HANDLERS, SWEEP_HANDLERS
from engines import GopemConfig
from runtime.db import discover_migrations, migrate
from runtime.routes import Route, merged
from runtime.testing import Handled, Harness

__all__ = ["ca_harness", "ca_schema", "gopem_deps", "result", "routes_of"]


async def ca_schema(pool: asyncpg.Pool) -> None:
    await migrate(pool, "ca", discover_migrations("ca_worker"))


@contextlib.contextmanager
def gopem_deps(keys: Path, *, sweep_shards: int = 2) -> Iterator[CaDeps]:
    """The CA worker's dependencies over one gopem engine keeping its keys in ``keys``."""
    authorities = open_authorities({"gopem": GopemConfig(data=keys)})
    try:
        yield CaDeps(
            store=Store(),
            authorities=authorities,
            default_engine="gopem",
            sweep_shards=sweep_shards,
        )
    finally:
        close_authorities(authorities.values())


def routes_of(keys: Path) -> dict[str, Route[Any, Any]]:
    """Every route of both CA queues (commands and sweeps) as one table: in memory
    the queues only differ in prefetch, which a harness does not have."""
    return dict(
        merged(
            HANDLERS,
            SWEEP_HANDLERS,
            SHARD_HANDLERS,
            VA_HANDLERS,
            inspection_handlers({"gopem": GopemConfig(data=keys)}),
        )
    )


@contextlib.asynccontextmanager
async def ca_harness(
    pool: asyncpg.Pool,
    deps: CaDeps,
    keys: Path,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Harness]:
    async with Harness.open(
        pool,
        schema="ca",
        routes=routes_of(keys),
        context=CaContext.factory(deps),
        clock=clock,
    ) as harness:
        yield harness


def result(handled: Handled) -> dict[str, Any]:
    """The reply's result as the JSON object every CA result is."""
    found = handled.result
    assert isinstance(found, dict)
    return found
