"""``lamassu cloud``: connect CAs to cloud IoT connectors, see how far they are in step."""

from __future__ import annotations

import argparse
from typing import Any

from contracts.cloud import (
    CloudStatus,
    ConnectCA,
    ConnectionMode,
    ConnectionView,
    GetCloudStatus,
    Reconcile,
)
from lamassu_cli.client import Client
from lamassu_cli.commands import add_command, output

__all__ = ["register"]


async def cloud_connect(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(
        ConnectCA(
            ca=args.ca,
            connector=args.connector,
            mode=args.mode,
            policy=args.policy,
            thing_group=args.thing_group,
            provisioning_role_arn=args.role_arn,
        )
    )
    output(args, result, lambda r: _connection(ConnectionView.model_validate(r)))


async def cloud_status(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(GetCloudStatus(connector=args.connector))
    output(args, result, _status)


async def cloud_reconcile(args: argparse.Namespace, client: Client) -> None:
    result = await client.call(Reconcile(connector=args.connector))
    output(args, result, lambda r: "reconciliation requested\n" + _status(r))


def _connection(view: ConnectionView) -> str:
    extras = [
        f"{name} {value}"
        for name, value in (
            ("policy", view.policy),
            ("thing group", view.thing_group),
            ("role", view.provisioning_role_arn),
        )
        if value
    ]
    return (
        f"{view.ca} -> {view.connector} ({view.mode.value}"
        + "".join(f", {extra}" for extra in extras)
        + ")"
    )


def _status(result: Any) -> str:
    lines = []
    for item in CloudStatus.model_validate(result).items:
        configured = "" if item.configured else " (not configured in this proxy)"
        lines.append(
            f"{item.connector}{configured}: {item.synced} synced, "
            f"{item.pending} pending, {item.failed} failed"
        )
        if item.last_reconciled_at is not None:
            lines.append(f"  last reconciled {item.last_reconciled_at.isoformat()}")
        if item.last_error is not None and item.last_error_at is not None:
            lines.append(
                f"  last error {item.last_error_at.isoformat()}: {item.last_error}"
            )
        lines += [f"  {_connection(view)}" for view in item.connections]
    return "\n".join(lines) or "no connector configured (CLOUD_CONNECTORS)"


def register(groups: Any) -> None:
    """Add the ``cloud`` command group."""
    sub = groups.add_parser(
        "cloud", help="cloud IoT connectors (AWS IoT Core)"
    ).add_subparsers(dest="action", required=True)
    p = add_command(
        sub, "connect", cloud_connect, "keep a CA's devices in step with a connector"
    )
    p.add_argument("--ca", required=True)
    p.add_argument("--connector", required=True, help="one of CLOUD_CONNECTORS")
    p.add_argument(
        "--mode",
        type=ConnectionMode,
        choices=list(ConnectionMode),
        default=ConnectionMode.REGISTER,
    )
    p.add_argument("--policy", help="AWS IoT policy attached to each certificate")
    p.add_argument("--thing-group", help="AWS thing group each device joins")
    p.add_argument("--role-arn", help="jitp: the role AWS IoT provisions with")
    p = add_command(
        sub, "status", cloud_status, "synced, pending, failed per connector"
    )
    p.add_argument("--connector")
    p = add_command(
        sub, "reconcile", cloud_reconcile, "compare with the cloud now and repair"
    )
    p.add_argument("--connector")
