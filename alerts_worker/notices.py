"""What a person reads: an event or a digest as a title, a few facts and what to do,
rendered for e-mail (plain text and HTML), Microsoft Teams and Slack. Pure: no I/O.

Every value from an event is escaped for the format it goes into (HTML, Slack mrkdwn).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

from contracts.alerts import AlertDeliveryFailed

__all__ = [
    "Notice",
    "digest_notice",
    "event_notice",
    "html_body",
    "slack",
    "teams",
    "text_body",
]

_CERTIFICATE_ACTIONS = {
    "ABOUT_TO_EXPIRE": "Renew it before {not_after}: re-enroll the device{device} "
    "(EST simplereenroll), or issue a new certificate from CA {ca}.",
    "EXPIRED": "It no longer authenticates anything. Enroll the device{device} again "
    "with its DMS's credentials (EST simpleenroll).",
    "REVOKED": "If the revocation was not intended, issue a new certificate from CA "
    "{ca}; relying parties see it in the next CRL and OCSP responses.",
}
_DEVICE_ACTIONS = {
    "REQUIRES_ACTION": "A certificate slot is about to expire: re-enroll the device.",
    "PROVISIONED_WITH_WARNINGS": "A slot's certificate expired or was revoked: "
    "enroll the device again.",
}
_NO_ACTION = "Nothing needs to be done because of this notification."


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification, format-free: a title, what happened, facts, what to do."""

    title: str
    summary: str
    facts: tuple[tuple[str, str], ...]
    action: str
    # The full list of a digest, for a CSV attachment.
    items: tuple[Mapping[str, str], ...] = ()


def event_notice(event: Mapping[str, Any]) -> Notice:
    """The notice of one CloudEvent (its JSON)."""
    type_ = str(event.get("type", ""))
    data = _mapping(event.get("data"))
    updated = _mapping(data.get("updated")) or data
    previous = _mapping(data.get("previous"))
    status, before = str(updated.get("status", "")), str(previous.get("status", ""))
    facts: list[tuple[str, str]] = [("Event", type_)]
    if type_.startswith("certificate."):
        serial = str(updated.get("serial", "?"))
        title = f"Certificate {serial} is now {status}"
        facts += [
            ("Certificate", serial),
            ("Subject", str(updated.get("subject", ""))),
            ("CA", str(updated.get("ca", ""))),
            ("Device", str(updated.get("device_id") or "-")),
            ("Expires", str(updated.get("not_after", ""))),
        ]
        action = _CERTIFICATE_ACTIONS.get(status, _NO_ACTION).format(
            not_after=updated.get("not_after", "?"),
            ca=updated.get("ca", "?"),
            device=f" {updated['device_id']}" if updated.get("device_id") else "",
        )
    elif type_.startswith("device."):
        title = f"Device {updated.get('id', '?')} is now {status}"
        facts += [
            ("Device", str(updated.get("id", ""))),
            ("DMS", str(updated.get("dms") or "-")),
        ]
        action = _DEVICE_ACTIONS.get(status, _NO_ACTION)
    elif type_.startswith("ca."):
        title = f"CA {updated.get('name', '?')} is now {status}"
        facts += [
            ("CA", str(updated.get("name", ""))),
            ("Expires", str(updated.get("not_after", ""))),
        ]
        action = (
            "Create its successor and move the DMS allow-lists to it before it expires."
            if status == "ABOUT_TO_EXPIRE"
            else _NO_ACTION
        )
    elif type_ == AlertDeliveryFailed.TYPE:
        title = f"An alert of subscription {data.get('subscription_id', '?')} was not delivered"
        facts += [("Last error", str(data.get("last_error", "")))]
        action = (
            "Check that the subscription's target is reachable and accepts the alerts."
        )
    else:
        title = f"{type_} {event.get('subject') or ''}".strip()
        action = str(data.get("action", _NO_ACTION))
    if before and status:
        facts.append(("Status", f"{before} -> {status}"))
    elif status:
        facts.append(("Status", status))
    facts += [
        ("Time", str(event.get("time", ""))),
        ("Event id", str(event.get("id", ""))),
    ]
    summary = (
        f"{type_} on {event.get('subject') or 'the PKI'} at {event.get('time', '?')}."
    )
    return Notice(title, summary, tuple(facts), action)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def digest_notice(digest: Mapping[str, Any]) -> Notice:
    """The notice of a digest (``digests.digest_data``)."""
    total = int(digest.get("total", 0))
    counts: Sequence[Mapping[str, Any]] = digest.get("counts", [])
    facts = tuple((f"CA {c['ca']}, {c['status']}", str(c["count"])) for c in counts)
    first: Sequence[Mapping[str, str]] = digest.get("first", [])
    lines = [
        f"{i['subject']}: {i['previous_status'] or '-'} -> {i['status']}" for i in first
    ]
    more = total - len(first)
    summary = (
        f"{total} matching events until {digest.get('period_end', '?')}. "
        f"First {len(first)}: "
        + "; ".join(lines)
        + (f"; and {more} more." if more > 0 else ".")
    )
    return Notice(
        title=f"Digest: {total} events for subscription {digest.get('subscription_id', '?')}",
        summary=summary,
        facts=facts,
        action="See the attached list; certificates about to expire need renewing "
        "before their expiry date.",
        items=tuple(digest.get("items", [])),
    )


_TEXT = Template("""$title

What happened: $summary

$facts

What to do: $action
""")

_HTML = Template("""<!DOCTYPE html>
<html><body style="font-family: sans-serif">
<h2>$title</h2>
<p><b>What happened:</b> $summary</p>
<table cellpadding="4" style="border-collapse: collapse">
$facts</table>
<p><b>What to do:</b> $action</p>
</body></html>
""")


def text_body(notice: Notice) -> str:
    width = max((len(k) for k, _ in notice.facts), default=0)
    facts = "\n".join(f"{k.ljust(width)}  {v}" for k, v in notice.facts)
    return _TEXT.substitute(
        title=notice.title, summary=notice.summary, facts=facts, action=notice.action
    )


def html_body(notice: Notice) -> str:
    e = html.escape
    facts = "".join(
        f'<tr><th align="left">{e(k)}</th><td>{e(v)}</td></tr>\n'
        for k, v in notice.facts
    )
    return _HTML.substitute(
        title=e(notice.title),
        summary=e(notice.summary),
        facts=facts,
        action=e(notice.action),
    )


def teams(notice: Notice) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook message carrying an Adaptive Card (1.4)."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": notice.title,
                            "weight": "Bolder",
                            "size": "Medium",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": notice.summary, "wrap": True},
                        {
                            "type": "FactSet",
                            "facts": [
                                {"title": k, "value": v} for k, v in notice.facts
                            ],
                        },
                        {
                            "type": "TextBlock",
                            "text": f"What to do: {notice.action}",
                            "wrap": True,
                        },
                    ],
                },
            }
        ],
    }


def _mrkdwn(text: str) -> str:
    # Slack's three control characters (api.slack.com "Formatting text for app surfaces").
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` for notifications, Block Kit to read."""
    facts = [
        {"type": "mrkdwn", "text": f"*{_mrkdwn(k)}*\n{_mrkdwn(v)}"}
        for k, v in notice.facts
    ]
    return {
        "text": notice.title,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": notice.title[:150]},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _mrkdwn(notice.summary)},
            },
            # A section holds at most ten fields (Block Kit reference).
            *(
                {"type": "section", "fields": facts[i : i + 10]}
                for i in range(0, len(facts), 10)
            ),
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*What to do:* {_mrkdwn(notice.action)}",
                },
            },
        ],
    }
