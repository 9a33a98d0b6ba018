"""What every subcommand module shares: the handler type, registration, output."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from contracts.ca import RevocationReason
from lamassu_cli.client import Client

__all__ = [
    "Command",
    "add_command",
    "confirmed",
    "days",
    "destructive",
    "output",
    "reason",
    "warning_days",
]

Command = Callable[[argparse.Namespace, Client], Awaitable[None]]


def add_command(
    sub: Any, name: str, func: Command | None, help_: str
) -> argparse.ArgumentParser:
    """Add a subcommand that runs ``func`` with a connected client."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output",
    )
    parser.set_defaults(func=func)
    return parser


def destructive(
    parser: argparse.ArgumentParser,
    question: Callable[[argparse.Namespace], str],
    *,
    force: str | None = None,
) -> None:
    """Mark a subcommand that cannot be undone: it asks ``question`` first, unless
    ``--yes`` is given (scripts). ``force`` documents a ``--force`` it also takes."""
    parser.add_argument(
        "--yes", action="store_true", help="do it without asking (cannot be undone)"
    )
    if force is not None:
        parser.add_argument("--force", action="store_true", help=force)
    parser.set_defaults(question=question)


def confirmed(args: argparse.Namespace) -> str | None:
    """None when the command may run; otherwise why it may not (one line).

    Asks on the terminal; without one (a script, a pipe) only ``--yes`` confirms.
    """
    question = getattr(args, "question", None)
    if question is None or args.yes:
        return None
    if not sys.stdin.isatty():
        return f"{question(args)} Not confirmed: pass --yes to do it without a terminal"
    answer = input(f"{question(args)} This cannot be undone. [y/N] ")
    if answer.strip().lower() in {"y", "yes"}:
        return None
    return "not confirmed; nothing was done"


def output(args: argparse.Namespace, result: Any, human: Callable[[Any], str]) -> None:
    """Print the reply's result: JSON with --json, else the human rendering."""
    print(json.dumps(result, indent=2) if args.json else human(result))


_DURATION = re.compile(r"^(\d+)([dwy])$")
_UNIT_DAYS = {"d": 1, "w": 7, "y": 365}
_REASONS = {
    "unspecified": RevocationReason.UNSPECIFIED,
    "key-compromise": RevocationReason.KEY_COMPROMISE,
    "ca-compromise": RevocationReason.CA_COMPROMISE,
    "affiliation-changed": RevocationReason.AFFILIATION_CHANGED,
    "superseded": RevocationReason.SUPERSEDED,
    "cessation-of-operation": RevocationReason.CESSATION_OF_OPERATION,
    "certificate-hold": RevocationReason.CERTIFICATE_HOLD,
    "remove-from-crl": RevocationReason.REMOVE_FROM_CRL,
    "privilege-withdrawn": RevocationReason.PRIVILEGE_WITHDRAWN,
    "aa-compromise": RevocationReason.AA_COMPROMISE,
}


def days(text: str) -> int:
    """``3650d``, ``52w`` or ``10y`` (365 days) as a number of days."""
    match = _DURATION.match(text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 365d, 52w or 10y"
        )
    return int(match[1]) * _UNIT_DAYS[match[2]]


def warning_days(text: str) -> int:
    """An about-to-expire threshold: like ``days``, and ``0d`` turns the warning off."""
    if _DURATION.match(text.strip()) and int(text.strip()[:-1]) == 0:
        return 0
    return days(text)


def reason(text: str) -> RevocationReason:
    try:
        return _REASONS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a reason; one of: {', '.join(_REASONS)}"
        ) from None
