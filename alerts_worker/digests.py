"""Digests: many matching events become one message per subscription and period. Pure.

A digest period is an interval (``1h``, ``15m``, aligned to the Unix epoch, so ``1h``
ends on the hour) or a daily time (``daily at 08:00 UTC``). An event that matches is
kept as a small item (what, which certificate or device, which CA, which status)
until its period ends; then the items become one message with the counts by CA and
status, the first items, and the full list (CSV for e-mail, JSON for webhooks).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from runtime.schedule import Cron, Interval, Schedule

__all__ = [
    "CSV_COLUMNS",
    "InvalidDigest",
    "digest_data",
    "item",
    "parse_digest",
    "to_csv",
]

_INTERVAL = re.compile(r"^(\d+)\s*([smhd])$")
_DAILY = re.compile(r"^daily\s+at\s+(\d{1,2}):(\d{2})(\s*utc)?$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A digest shorter than this is a stream of messages again; a day is the longest.
_SHORTEST, _LONGEST = 10, 86400
CSV_COLUMNS = ("time", "type", "subject", "ca", "status", "previous_status", "event_id")


class InvalidDigest(ValueError):  # noqa: N818 - names the outcome, as runtime.errors does
    """The digest period is not understood; ``str()`` is one line."""


def parse_digest(text: str) -> Schedule:
    """``1h``, ``15m``, ``30s``, ``1d`` or ``daily at HH:MM UTC``; raises InvalidDigest."""
    text = text.strip()
    match = _INTERVAL.match(text)
    if match:
        seconds = int(match[1]) * _UNITS[match[2]]
        if not _SHORTEST <= seconds <= _LONGEST:
            raise InvalidDigest(
                f"digest {text!r}: the period must be from {_SHORTEST}s to 1d"
            )
        return Interval(seconds)
    match = _DAILY.match(text)
    if match:
        hour, minute = int(match[1]), int(match[2])
        if hour > 23 or minute > 59:
            raise InvalidDigest(f"digest {text!r}: no such time of day")
        return Cron.parse(f"{minute} {hour} * * *")
    raise InvalidDigest(
        f"digest {text!r} is not a period like 1h, 15m or 'daily at 08:00 UTC'"
    )


def item(event: Mapping[str, Any]) -> dict[str, str]:
    """What a digest keeps of an event: one row of its list."""
    data = event.get("data") or {}
    updated = data.get("updated") if isinstance(data, Mapping) else None
    current = updated if isinstance(updated, Mapping) else data
    previous = data.get("previous") if isinstance(data, Mapping) else None
    return {
        "time": str(event.get("time", "")),
        "type": str(event.get("type", "")),
        "subject": str(event.get("subject") or ""),
        "ca": _text(current, "ca") or _text(current, "dms") or "-",
        "status": _text(current, "status") or "-",
        "previous_status": _text(previous, "status") or "",
        "event_id": str(event.get("id", "")),
    }


def _text(values: object, key: str) -> str | None:
    if isinstance(values, Mapping) and isinstance(values.get(key), str):
        return str(values[key])
    return None


def digest_data(
    subscription_id: str,
    period_end: datetime,
    items: Sequence[Mapping[str, str]],
    first: int,
) -> dict[str, Any]:
    """The digest as JSON: counts by CA and status, the first items, the whole list."""
    counts = Counter((i["ca"], i["status"]) for i in items)
    return {
        "subscription_id": subscription_id,
        "period_end": period_end.isoformat(),
        "total": len(items),
        "counts": [
            {"ca": ca, "status": status, "count": count}
            for (ca, status), count in sorted(counts.items())
        ],
        "first": [dict(i) for i in items[:first]],
        "items": [dict(i) for i in items],
    }


def to_csv(items: Sequence[Mapping[str, str]]) -> str:
    """The full list as CSV (RFC 4180: CRLF line ends, a header row)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in items:
        writer.writerow({column: row.get(column, "") for column in CSV_COLUMNS})
    return out.getvalue()
