"""``lamassu alert``: subscribe to events, list, show, test and delete subscriptions,
and show a subscription's deliveries with their attempts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from contracts.alerts import (
    AlertTest,
    Channel,
    DeleteSubscription,
    Deliveries,
    DeliveryView,
    GetSubscription,
    ListDeliveries,
    ListSubscriptions,
    Subscribe,
    Subscriptions,
    SubscriptionView,
)
from lamassu_cli.client import Client, CliError
from lamassu_cli.commands import add_command, output
from lamassu_cli.render import table

__all__ = ["register"]


def _target(args: argparse.Namespace) -> tuple[Channel, str]:
    for channel in Channel:
        value = getattr(args, channel.value)
        if value is not None:
            return channel, value
    raise CliError("one of --webhook, --email, --teams, --slack is required", 2)


def _secret(args: argparse.Namespace) -> str | None:
    if args.secret_file is None:
        return None
    try:
        return Path(args.secret_file).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(
            f"cannot read secret file {args.secret_file}: {exc}", 2
        ) from None


async def alert_subscribe(args: argparse.Namespace, client: Client) -> None:
    channel, target = _target(args)
    if args.secret_file is not None and channel is not Channel.WEBHOOK:
        raise CliError("--secret-file goes with --webhook only", 2)
    secret = _secret(args)
    result = await client.call(
        Subscribe(
            event=args.event,
            condition=args.where,
            channel=channel,
            target=target,
            secret=secret,
            digest=args.digest,
        )
    )
    sub = SubscriptionView.model_validate(result)
    if secret is not None:  # the caller has it already: not echoed
        result["secret"] = None
        sub = sub.model_copy(update={"secret": None})
    output(args, result, lambda _: _detail(sub))


async def alert_list(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(ListSubscriptions())
    output(args, result, lambda r: _table(Subscriptions.model_validate(r).items))


async def alert_show(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetSubscription(id=args.id))
    output(args, result, lambda r: _detail(SubscriptionView.model_validate(r)))


async def alert_delete(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(DeleteSubscription(id=args.id))
    output(args, result, lambda r: f"deleted subscription {r['id']}")


async def alert_test(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(AlertTest(id=args.id))
    output(
        args,
        result,
        lambda r: (
            f"queued test notification {r['message_id']} (delivery {r['id']}); "
            f"see: lamassu alert deliveries {args.id}"
        ),
    )


async def alert_deliveries(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(ListDeliveries(id=args.id, limit=args.limit))
    output(args, result, lambda r: _deliveries(Deliveries.model_validate(r).items))


def _detail(sub: SubscriptionView) -> str:
    lines = [
        f"id         {sub.id}",
        f"event      {sub.event}",
        f"where      {sub.condition or '-'}",
        f"channel    {sub.channel.value}",
        f"target     {sub.target}",
        f"digest     {sub.digest or '- (one message per event)'}",
        f"created    {sub.created_at:%Y-%m-%d %H:%M:%SZ}",
    ]
    if sub.secret:
        lines.append(
            f"secret     {sub.secret}  (shown once: your receiver verifies "
            "webhook-signature with it)"
        )
    return "\n".join(lines)


def _table(items: list[SubscriptionView]) -> str:
    return table(
        ["ID", "EVENT", "CHANNEL", "TARGET", "DIGEST", "WHERE"],
        [
            [
                s.id,
                s.event,
                s.channel.value,
                s.target,
                s.digest or "-",
                s.condition or "-",
            ]
            for s in items
        ],
    )


def _deliveries(items: list[DeliveryView]) -> str:
    lines: list[str] = []
    for d in items:
        due = (
            f", next attempt {d.next_attempt_at:%Y-%m-%d %H:%M:%SZ}"
            if d.next_attempt_at
            else ""
        )
        lines.append(
            f"{d.id}  {d.kind} {d.message_id}  {d.status.value}, "
            f"{len(d.attempts)} attempt(s){due}"
        )
        lines += [
            f"    #{a.number} {a.at:%Y-%m-%d %H:%M:%SZ}  "
            + ("ok" if a.ok else f"failed: {a.error}")
            for a in d.attempts
        ]
    return "\n".join(lines) if lines else "no deliveries yet"


def register(groups: Any) -> None:
    """Add the ``alert`` command group."""
    sub = groups.add_parser(
        "alert", help="alerts: subscriptions to events"
    ).add_subparsers(dest="action", required=True)
    p = add_command(sub, "subscribe", alert_subscribe, "notify a target of events")
    p.add_argument(
        "--event",
        required=True,
        help="event type pattern: certificate.status.update, device.#, '#'",
    )
    p.add_argument(
        "--where",
        help="CEL condition, e.g. 'data.updated.status == \"ABOUT_TO_EXPIRE\"'",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", metavar="URL", help="POST the signed CloudEvent")
    target.add_argument("--email", metavar="ADDR", help="e-mail over SMTP_*")
    target.add_argument("--teams", metavar="URL", help="Teams incoming webhook")
    target.add_argument("--slack", metavar="URL", help="Slack incoming webhook")
    p.add_argument(
        "--secret-file",
        metavar="F",
        help="webhook signing secret (whsec_...); made for you when absent",
    )
    p.add_argument(
        "--digest",
        metavar="PERIOD",
        help="one message per period: 1h, 15m, or 'daily at 08:00 UTC'",
    )
    add_command(sub, "list", alert_list, "list subscriptions")
    for name, func, help_ in (
        ("show", alert_show, "show a subscription"),
        ("test", alert_test, "send a sample notification now"),
        ("delete", alert_delete, "delete a subscription"),
    ):
        p = add_command(sub, name, func, help_)
        p.add_argument("id")
    p = add_command(sub, "deliveries", alert_deliveries, "notifications and attempts")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=50)
