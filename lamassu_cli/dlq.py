"""``lamassu dlq``: look into dead-lettered messages, replay them, purge them.

Every worker queue dead-letters to ``<queue>.dead`` (runtime/bus.py). Messages are
browsed with ``basic.get`` and left unacknowledged, so closing the channel gives
them back to the queue untouched (AMQP 0-9-1 §1.8.3.10); only ``replay`` and
``purge`` remove any. The ``x-death`` header RabbitMQ adds when it dead-letters a
message names the queue it died in and why (``rejected``, ``expired``,
``delivery_limit``). A replay sends the same body and properties, message id
included, again through the exchange and routing key it was first sent with (also in
``x-death``): a re-send, so the consumers check its sender as they check any message
(README "Trust"), and a consumer that had it already deduplicates it by its id. Run
it as an identity that may send that type: the admin for commands, the original
sender's identity for events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from contracts.names import Topology
from lamassu_cli.client import CliError, CliSettings
from lamassu_cli.commands import add_command, count

__all__ = ["DeadLetter", "register", "run"]

log = structlog.get_logger("dlq")

# A new channel on the command's connection.
Channels = Callable[[], Awaitable[AbstractChannel]]

# How many messages one command looks through at most.
_SCAN = 10_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered message as an operator reads it."""

    id: str
    queue: str  # the .dead queue holding it
    origin: str  # the queue it died in
    type: str
    sender: str
    reason: str
    died: str
    body: str

    def summary(self) -> dict[str, str]:
        return {k: v for k, v in self.as_dict().items() if k != "body"}

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "queue": self.queue,
            "origin": self.origin,
            "type": self.type,
            "sender": self.sender,
            "reason": self.reason,
            "died": self.died,
            "body": self.body,
        }


def register(groups: Any) -> None:
    dlq = groups.add_parser(
        "dlq", help="dead-lettered messages: list, show, replay, purge"
    ).add_subparsers(dest="action", required=True)
    p = add_command(dlq, "list", None, "list dead letters (every .dead queue)")
    p.add_argument("queue", nargs="?", help="one queue, e.g. devices.commands")
    p.add_argument("--limit", type=count, default=100, help="at most this many")
    p = add_command(dlq, "show", None, "show one dead letter: type, sender, reason")
    p.add_argument("id", help="its message id (from dlq list)")
    p = add_command(dlq, "replay", None, "send dead letters back to their queue")
    p.add_argument("id", nargs="?", help="its message id")
    p.add_argument("--all", metavar="QUEUE", help="every dead letter of QUEUE")
    p = add_command(dlq, "purge", None, "delete every dead letter of a queue")
    p.add_argument("queue", help="e.g. devices.commands")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


async def run(args: argparse.Namespace, settings: CliSettings) -> int:
    """Run a ``dlq`` action; the exit status."""
    topology = Topology(settings.amqp_prefix)
    async with _connected(settings) as channel:
        if args.action == "list":
            named = [_dead(topology, args.queue)] if args.queue else None
            found = [
                letter
                for queue in named or _all(topology)
                for letter in await _browse(
                    channel, topology, queue, missing_ok=named is None
                )
            ]
            _print_list(args, found)
            return 0
        if args.action == "show":
            letter = await _find(channel, topology, args.id)
            if args.json:
                print(json.dumps(letter.as_dict(), indent=2))
            else:
                for key, value in letter.as_dict().items():
                    print(f"{key + ':':8} {value}")
            return 0
        if args.action == "replay":
            user = urlsplit(settings.amqp_url.get_secret_value()).username
            return await _replay(args, channel, topology, user or "guest")
        return await _purge(args, channel, topology)


async def _replay(
    args: argparse.Namespace, channel: Channels, topology: Topology, user: str
) -> int:
    if (args.id is None) == (args.all is None):
        raise CliError("usage: give a message id, or --all QUEUE", exit_code=2)
    queue = _dead(topology, args.all) if args.all else None
    replayed = 0
    for name in [queue] if queue else _all(topology):
        wanted = None if args.all else args.id
        replayed += await _move(channel, name, wanted, user)
    if not replayed and args.id:
        raise CliError(f"not_found: no dead letter has the id {args.id!r}")
    _say(args, {"ok": True, "replayed": replayed}, f"replayed {replayed} message(s)")
    return 0


async def _purge(
    args: argparse.Namespace, channel: Channels, topology: Topology
) -> int:
    name = _dead(topology, args.queue)
    queue = await _declared(channel, name)
    count = queue.declaration_result.message_count or 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"not purging {count} message(s) of {name}: confirm with --yes",
                exit_code=2,
            )
        answer = await asyncio.to_thread(
            input, f"delete {count} dead letter(s) of {name}? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            _say(args, {"ok": True, "purged": 0}, "nothing deleted")
            return 0
    await queue.purge()
    log.info("dead_letters_purged", queue=name, messages=count)
    _say(args, {"ok": True, "purged": count}, f"deleted {count} message(s) of {name}")
    return 0


async def _move(channels: Channels, dead: str, wanted: str | None, user: str) -> int:
    """Publish the matching messages of ``dead`` back to their queue, then ack them.

    The original ``user_id`` is kept only when it is the replaying connection's own:
    RabbitMQ refuses a publish whose user-id is another user's, and a worker must
    see who sends a replayed message, not whom it claims to come from."""
    try:
        queue = await _declared(channels, dead)
    except CliError:
        if wanted is None:
            raise
        return 0
    channel = queue.channel
    moved = 0
    for _ in range(_SCAN):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        if wanted is not None and message.message_id != wanted:
            continue  # left unacknowledged: back to the queue when the channel closes
        death = _death(message)
        origin, keys = death.get("queue"), death.get("routing-keys")
        if not isinstance(origin, str) or not origin:
            continue
        exchange = channel.default_exchange
        routing_key = origin
        if death.get("exchange") and isinstance(keys, list) and keys:
            exchange = await channel.get_exchange(str(death["exchange"]), ensure=False)
            routing_key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
        headers = {k: v for k, v in message.headers.items() if not k.startswith("x-")}
        await exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                type=message.type,
                user_id=message.user_id if message.user_id == user else None,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
            mandatory=True,
        )
        await message.ack()
        log.info(
            "dead_letter_replayed",
            message_id=message.message_id,
            message_type=message.type,
            to=origin,
        )
        moved += 1
        if wanted is not None:
            break
    return moved


async def _find(channel: Channels, topology: Topology, id_: str) -> DeadLetter:
    for queue in _all(topology):
        for letter in await _browse(channel, topology, queue, missing_ok=True):
            if letter.id == id_:
                return letter
    raise CliError(f"not_found: no dead letter has the id {id_!r}")


async def _browse(
    channel: Channels, topology: Topology, name: str, *, missing_ok: bool = False
) -> list[DeadLetter]:
    """Every message of a dead-letter queue, left in it (none if it is absent and
    ``missing_ok``: its worker never ran)."""
    try:
        queue = await _declared(channel, name)
    except CliError:
        if missing_ok:
            return []
        raise
    found: list[DeadLetter] = []
    # Within one channel the unacknowledged messages are not delivered again, so
    # this ends once every message has been seen once.
    for _ in range(_SCAN):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        found.append(_letter(topology, name, message))
    return found


def _letter(
    topology: Topology, queue: str, message: AbstractIncomingMessage
) -> DeadLetter:
    death = _death(message)
    died = death.get("time")
    body = message.body.decode("utf-8", errors="replace")
    return DeadLetter(
        id=message.message_id or "-",
        queue=queue.removeprefix(topology.prefix),
        origin=str(death.get("queue", "-")).removeprefix(topology.prefix),
        type=message.type or _body_type(body),
        sender=message.user_id or _body_source(body),
        reason=str(death.get("reason", "-")),
        died=died.isoformat() if isinstance(died, datetime) else str(died or "-"),
        body=body,
    )


def _death(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The newest ``x-death`` entry (RabbitMQ puts it first)."""
    deaths = message.headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return {
            k: v.decode() if isinstance(v, bytes) else v for k, v in deaths[0].items()
        }
    return {}


def _body_type(body: str) -> str:
    return str(_json(body).get("type", "-"))


def _body_source(body: str) -> str:
    return str(_json(body).get("source", "-"))


def _json(body: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _dead(topology: Topology, queue: str) -> str:
    name = queue.removesuffix(".dead")
    return f"{topology.prefix}{name.removeprefix(topology.prefix)}.dead"


def _all(topology: Topology) -> list[str]:
    return [q for q in topology.worker_queues() if q.endswith(".dead")]


async def _declared(channels: Channels, name: str) -> Any:
    """The queue on a channel of its own, open until the command ends: its
    unacknowledged messages go back only then, and a failed passive declare closes
    only that channel."""
    channel = await channels()
    try:
        return await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        raise CliError(f"not_found: there is no queue {name}") from None


def _print_list(args: argparse.Namespace, found: list[DeadLetter]) -> None:
    shown = found[: args.limit]
    cut = len(found) > len(shown)
    if args.json:
        document = {
            "items": [letter.summary() for letter in shown],
            "next": shown[-1].id if cut else None,
        }
        print(json.dumps(document, indent=2))
    elif not shown:
        print("no dead letters")
    else:
        for letter in shown:
            print(
                f"{letter.id}  {letter.origin}  {letter.type}  {letter.reason}  "
                f"{letter.died}"
            )
    if cut:
        print(
            f"(showing {len(shown)} of {len(found)}; --limit N shows more)",
            file=sys.stderr,
        )


def _say(args: argparse.Namespace, document: dict[str, Any], human: str) -> None:
    print(json.dumps(document) if args.json else human)


@asynccontextmanager
async def _connected(settings: CliSettings) -> AsyncIterator[Channels]:
    try:
        connection = await aio_pika.connect(
            settings.amqp_url.get_secret_value(), timeout=10
        )
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        raise CliError(
            f"unavailable: cannot connect to the broker: {exc}", exit_code=3
        ) from None
    async with connection:

        async def channel() -> AbstractChannel:
            return await connection.channel(publisher_confirms=True)

        yield channel
