"""``lamassu sweep``: run an expiry sweep now, and follow it to the end."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from contracts.sweeps import MAX_SHARDS, GetSweep, RunSweep, SweepView
from lamassu_cli import render
from lamassu_cli.client import Client, CliError
from lamassu_cli.commands import add_command, output

__all__ = ["register"]


async def _until_done(client: Client, sweep: SweepView) -> SweepView:
    """Poll ``sweep.get`` until every shard is done, within the CLI's deadline."""
    try:
        async with asyncio.timeout(client.timeout):
            while sweep.shards_done < sweep.shards:
                await asyncio.sleep(0.2)
                sweep = SweepView.model_validate(
                    await client.call(GetSweep(id=sweep.id))
                )
    except TimeoutError:
        raise CliError(
            f"sweep {sweep.id}: {sweep.shards_done} of {sweep.shards} shards done "
            f"after {client.timeout:g} s (LAMASSU_TIMEOUT); it goes on in the workers",
            exit_code=3,
        ) from None
    return sweep


async def sweep_run(args: argparse.Namespace, client: Client) -> None:
    sweep = SweepView.model_validate(await client.call(RunSweep(shards=args.shards)))
    if args.wait:
        sweep = await _until_done(client, sweep)
    output(args, sweep.model_dump(mode="json"), _human)


async def sweep_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetSweep(id=args.id))
    output(args, result, _human)


def _human(result: Any) -> str:
    return render.sweep_detail(SweepView.model_validate(result))


def _shards(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number from 1 to {MAX_SHARDS}"
        )
    return int(text)


def register(groups: Any) -> None:
    """Add the ``sweep`` command group."""
    sub = groups.add_parser(
        "sweep", help="certificate and CA expiry sweeps"
    ).add_subparsers(dest="action", required=True)
    p = add_command(sub, "run", sweep_run, "sweep now (statuses at this instant)")
    p.add_argument(
        "--shards",
        type=_shards,
        help="fan out into this many shards (default SWEEP_SHARDS)",
    )
    p.add_argument(
        "--wait", action="store_true", help="return when every shard is done"
    )
    p = add_command(sub, "show", sweep_show, "show a sweep's progress")
    p.add_argument("id")
