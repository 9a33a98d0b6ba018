"""RabbitMQ definitions of the deployment's identities, derived from ``contracts.senders``.

Pure: builds the document ``rabbitmqctl import_definitions`` (or the management API's
``POST /api/definitions``) takes: the vhost, the exchanges, one user per role with its
``password_hash``, its configure/write/read permissions and its topic permissions on
both topic exchanges. Nothing here talks to the broker.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any

from contracts.names import Topology
from contracts.senders import IDENTITIES, OWNERS, SENDERS, Kind

__all__ = [
    "definitions",
    "markdown_table",
    "password_hash",
    "permissions",
    "topic_permissions",
]

# Matches no routing key: a topic permission that allows nothing. An empty regex
# would not do: RabbitMQ reads a missing topic permission as "everything allowed".
_NOTHING = "^(?!)$"
# A process's own reply queues and subscriptions: exclusive, named by the server
# (AMQP 0-9-1 §1.7.2.1, ``amq.gen-``) or by aio-pika's robust channel (``amq_``).
_PRIVATE_QUEUES = r"amq(\.gen-|_).*"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + SHA-256(salt +
    password)) with a random 32-bit salt, as ``rabbitmqctl hash_password`` makes."""
    salt = secrets.token_bytes(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def _any_of(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else _NOTHING


def _sends(role: str, kind: Kind) -> list[str]:
    return sorted(t for t, roles in SENDERS[kind].items() if role in roles)


def permissions(role: str, topology: Topology) -> dict[str, str]:
    """Configure, write and read regexes (RabbitMQ access control) of a role.

    Exchanges are made by ``lamassu bus setup``, so nobody configures one. A worker
    declares, binds and reads its own queues and writes to the dead-letter exchange
    they name; a worker replies through the default exchange; anyone may make a
    server-named queue of its own for replies or subscriptions.
    """
    identity = IDENTITIES[role]
    own = [_PRIVATE_QUEUES]
    if identity.worker is not None:
        own.append(re.escape(topology.queue(identity.worker, "")) + ".*")
    writes = [
        re.escape(topology.exchange(kind))
        for kind in ("commands", "events")
        if _sends(role, kind)
    ]
    reads = [
        re.escape(topology.exchange(kind))
        for kind in ("commands", "events")
        if any(bound == kind for bound, _key in identity.binds)
    ]
    if role in OWNERS.values():
        writes += ["amq\\.default", re.escape(topology.dead)]
        reads.append(re.escape(topology.dead))
    return {
        "configure": "^(" + "|".join(own) + ")$",
        "write": "^(" + "|".join(own + writes) + ")$",
        "read": "^(" + "|".join(own + reads) + ")$",
    }


def topic_permissions(role: str, topology: Topology) -> list[dict[str, str]]:
    """Per topic exchange: the routing keys a role may publish (the types it may send)
    and the binding keys it may bind (RabbitMQ topic authorisation)."""
    identity = IDENTITIES[role]
    found = []
    for kind in ("commands", "events"):
        binds = sorted({key for bound, key in identity.binds if bound == kind})
        found.append(
            {
                "exchange": topology.exchange(kind),
                "write": _any_of(_sends(role, kind)),
                "read": ".*"
                if role in _READS_ANY and kind == "events"
                else _any_of(binds),
            }
        )
    return found


# Operators and observers subscribe to whatever pattern they ask for (``lamassu
# events tail --type``); reading events is their job.
_READS_ANY = frozenset({"admin", "observer"})


def definitions(
    *, vhost: str, topology: Topology, passwords: Mapping[str, str]
) -> dict[str, Any]:
    """The whole set-up as one definitions document (users are ``<prefix><role>``)."""
    users = {role: f"{topology.prefix}{role}" for role in IDENTITIES}
    return {
        "vhosts": [{"name": vhost}],
        "users": [
            {
                "name": users[role],
                "password_hash": password_hash(passwords[role]),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
            for role in IDENTITIES
        ],
        "permissions": [
            {"user": users[role], "vhost": vhost, **permissions(role, topology)}
            for role in IDENTITIES
        ],
        "topic_permissions": [
            {"user": users[role], "vhost": vhost, **entry}
            for role in IDENTITIES
            for entry in topic_permissions(role, topology)
        ],
        "exchanges": [
            {
                "name": name,
                "vhost": vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in (
                (topology.commands, "topic"),
                (topology.events, "topic"),
                (topology.dead, "direct"),
            )
        ],
    }


def markdown_table() -> str:
    """The README's table of identities, from the same table as everything else."""
    rows = [
        "| identity | may send commands | may send events | binds |",
        "|---|---|---|---|",
    ]
    for role, identity in IDENTITIES.items():
        binds = ", ".join(f"{kind[:-1]} `{key}`" for kind, key in identity.binds)
        commands = ", ".join(f"`{t}`" for t in _sends(role, "commands")) or "—"
        events = ", ".join(f"`{t}`" for t in _sends(role, "events")) or "—"
        rows.append(f"| `{role}` | {commands} | {events} | {binds or '—'} |")
    return "\n".join(rows) + "\n"
