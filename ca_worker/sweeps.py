"""Expiry sweeps (DESIGN §4): a trigger fans out into ``sweep.shard`` messages.

The trigger — the scheduler's tick or ``sweep.run`` — moves the CAs (few) itself, writes
the sweep row and one ``sweep.shard`` command per shard to the outbox, all in one
transaction. Any replica takes any shard: one set-based statement moves that shard's
due certificates, and their ``certificate.status.update`` events go to the outbox in
the same transaction, with the shard's row that makes a redelivery a no-op.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import structlog

from ca_worker.context import SOURCE, CaContext, CaDeps, status_events
from ca_worker.errors import SweepNotFound
from contracts.envelope import CloudEvent, new_message
from contracts.sweeps import GetSweep, RunSweep, SweepShard, SweepTrigger, SweepView
from runtime.outbox import write_commands, write_events
from runtime.routes import Mode, Outcome, Route, routes

__all__ = ["SHARD_HANDLERS", "SWEEP_HANDLERS", "fire_scheduled_sweep", "start_sweep"]

log = structlog.get_logger("ca_worker.sweeps")


async def start_sweep(
    ctx: CaContext, trigger: SweepTrigger, shards: int
) -> tuple[SweepView, list[CloudEvent], list[CloudEvent]]:
    """The trigger's work: CA transitions, the sweep row, the shard commands.

    Returns the sweep, the CA status events and the shard commands, for the caller to
    write to the outbox in its transaction.
    """
    store = ctx.deps.store
    ca_changes = await store.expire_cas(ctx.conn, ctx.now)
    sweep = SweepView(
        id=str(uuid.uuid4()),
        trigger=trigger,
        as_of=ctx.now,
        shards=shards,
        ca_transitions=len(ca_changes),
    )
    await store.insert_sweep(ctx.conn, sweep)
    commands = [
        new_message(
            source=SOURCE,
            subject=f"sweep/{sweep.id}",
            data=SweepShard(
                sweep_id=sweep.id, shard=shard, shards=shards, as_of=ctx.now
            ),
            now=ctx.now,
            correlation_id=ctx.correlation_id or sweep.id,
        )
        for shard in range(shards)
    ]
    log.info(
        "sweep_started",
        sweep=sweep.id,
        trigger=trigger.value,
        shards=shards,
        ca_transitions=len(ca_changes),
    )
    return sweep, status_events(ctx, ca_changes), commands


async def fire_scheduled_sweep(
    conn: asyncpg.Connection, deps: CaDeps, now: datetime
) -> None:
    """The scheduler's trigger, inside its claim's transaction."""
    ctx = CaContext(conn, now, None, deps)
    _sweep, events, commands = await start_sweep(
        ctx, SweepTrigger.SCHEDULE, deps.sweep_shards
    )
    await write_events(conn, "ca", events)
    await write_commands(conn, "ca", commands)


async def run_sweep(cmd: RunSweep, ctx: CaContext) -> Outcome:
    sweep, events, commands = await start_sweep(
        ctx, SweepTrigger.MANUAL, cmd.shards or ctx.deps.sweep_shards
    )
    return Outcome(sweep, events, commands=commands)


async def sweep_shard(cmd: SweepShard, ctx: CaContext) -> Outcome:
    """Apply one shard at the sweep's ``as_of``; a repeated shard changes nothing."""
    store = ctx.deps.store
    if await store.get_sweep(ctx.conn, cmd.sweep_id) is None:
        raise SweepNotFound(cmd.sweep_id)
    if not await store.claim_shard(ctx.conn, cmd.sweep_id, cmd.shard):
        return Outcome(await store.get_sweep(ctx.conn, cmd.sweep_id))
    changes = await store.expire_certificates(
        ctx.conn, as_of=cmd.as_of, shard=cmd.shard, shards=cmd.shards
    )
    await store.finish_shard(ctx.conn, cmd.sweep_id, cmd.shard, len(changes))
    return Outcome(None, status_events(ctx, changes))


async def get_sweep(query: GetSweep, ctx: CaContext) -> Outcome:
    sweep = await ctx.deps.store.get_sweep(ctx.conn, query.id)
    if sweep is None:
        raise SweepNotFound(query.id)
    return Outcome(sweep)


SWEEP_HANDLERS = routes(
    Route(RunSweep, run_sweep),
    Route(GetSweep, get_sweep, mode=Mode.READ),
)

# Shards have their own queue, so a large sweep never queues up ahead of enrollments,
# and each its own transaction, so that SWEEP_PREFETCH shards run side by side.
SHARD_HANDLERS = routes(Route(SweepShard, sweep_shard, mode=Mode.ALONE))
