"""What every subcommand module shares: the handler type, registration, output."""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from contracts.ca import RevocationReason
from lamassu_cli.client import Client

__all__ = [
    "REASONS_HELP",
    "Command",
    "add_command",
    "add_paging",
    "choices",
    "confirmed",
    "count",
    "days",
    "destructive",
    "duration",
    "enum_type",
    "listing",
    "output",
    "reason",
    "seconds",
    "warning_days",
]

Command = Callable[[argparse.Namespace, Client], Awaitable[None]]
E = TypeVar("E", bound=enum.Enum)


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


_DURATION = re.compile(r"^(\d+)\s*([a-z]*)$")
# Seconds per unit; a year is 365 days, as in certificate validity periods.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DAY = 86400
_DURATION_FORM = "a number and a unit: s, m, h, d, w or y (e.g. 90d, 12h, 10y)"
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


def duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``52w`` or ``10y`` (365 days); positive."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: {_DURATION_FORM}"
        )
    if match[2] not in _UNITS:
        unit = f"unit {match[2]!r}" if match[2] else "no unit"
        raise argparse.ArgumentTypeError(
            f"{text!r} has {unit}: use s, m, h, d, w or y (e.g. {match[1]}d)"
        )
    if int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def seconds(text: str) -> float:
    """A wait: a duration (``90s``, ``5m``), or a bare number of seconds."""
    try:
        value = float(text)
    except ValueError:
        return duration(text).total_seconds()
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be positive")
    return value


def days(text: str) -> int:
    """A duration counted in whole days (certificate validity is kept in days)."""
    seconds = int(duration(text).total_seconds())
    if seconds % _DAY:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of days (validity is counted in days; "
            f"e.g. {max(1, seconds // _DAY)}d)"
        )
    return seconds // _DAY


def warning_days(text: str) -> int:
    """An about-to-expire threshold: like ``days``, and ``0d`` turns the warning off."""
    match = _DURATION.match(text.strip().lower())
    if match and int(match[1]) == 0 and match[2] in _UNITS:
        return 0
    return days(text)


def enum_type(enum: type[E], what: str) -> Callable[[str], E]:
    """An argparse type for an enum: any case, dashes for underscores; an error
    lists the allowed values."""
    by_name = {member.value.lower().replace("_", "-"): member for member in enum}

    def parse(text: str) -> E:
        found = by_name.get(text.strip().lower().replace("_", "-"))
        if found is None:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {what}; one of: {choices(enum)}"
            )
        return found

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


def choices(enum: type[enum.Enum]) -> str:
    """An enum's values as help lists them."""
    return ", ".join(str(member.value) for member in enum)


REASONS_HELP = "why (RFC 5280 §5.3.1): " + ", ".join(_REASONS)


def reason(text: str) -> RevocationReason:
    try:
        return _REASONS[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a reason; one of: {', '.join(_REASONS)}"
        ) from None


def count(text: str) -> int:
    """A positive whole number (``--limit``)."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def add_paging(parser: argparse.ArgumentParser) -> None:
    """``--limit N`` and ``--all`` of a list command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--limit", type=count, default=100, help="show at most N (default 100)"
    )
    group.add_argument("--all", action="store_true", help="show every one")


# The most items a list query returns at once (the contracts' ``limit`` bound).
_PAGE = 1000


async def listing(
    args: argparse.Namespace,
    fetch: Callable[[int, str | None], Awaitable[list[dict[str, Any]]]],
    key: str,
) -> dict[str, Any]:
    """Up to ``--limit`` items (all with ``--all``), fetched page by page after the
    last one's ``key``; ``{"items": [...], "next": ...}`` where ``next`` is the key
    to continue after when the list was cut (and a note says so on stderr)."""
    wanted = None if args.all else args.limit
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        # One more than wanted, to know whether the list goes on.
        size = _PAGE if wanted is None else min(_PAGE, wanted + 1 - len(items))
        page = await fetch(size, after)
        items += page
        if len(page) < size or (wanted is not None and len(items) > wanted):
            break
        after = str(page[-1][key])
    if wanted is not None and len(items) > wanted:
        items = items[:wanted]
        print(
            f"(showing the first {wanted}; --limit N shows more, --all shows every one)",
            file=sys.stderr,
        )
        return {"items": items, "next": str(items[-1][key])}
    return {"items": items, "next": None}
