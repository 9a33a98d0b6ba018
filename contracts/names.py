"""Exchange and queue names (DESIGN §2).

A ``prefix`` (setting ``AMQP_PREFIX``, empty in production) is put before every name so
test runs and tenants sharing one broker never collide.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["WORKER_QUEUES", "Source", "Topology"]


class Source(enum.StrEnum):
    """The CloudEvents ``source`` of every message a service sends (CloudEvents 1.0
    §3.1.1), ``service/<name>`` as the original system spells its own."""

    CA = "service/ca"
    DMS = "service/dms"
    DEVICES = "service/devmanager"
    EST = "service/est"
    VA = "service/va"
    ALERTS = "service/alerts"
    CLOUD_PROXY = "service/cloud-proxy"
    CLI = "cli/lamassu"


# Every (worker, purpose) queue the workers declare; each also has ``<queue>.dead``.
WORKER_QUEUES = (
    ("ca", "commands"),
    ("ca", "sweeps"),
    ("dms", "commands"),
    ("dms", "events"),
    ("devices", "commands"),
    ("devices", "events"),
    ("cloud", "commands"),
    ("cloud", "events"),
    ("alerts", "commands"),
    ("alerts", "events"),
    ("va", "events"),
    ("va", "commands"),
)


@dataclass(frozen=True, slots=True)
class Topology:
    """Names of the topic exchanges, the dead-letter exchange and the worker queues."""

    prefix: str = ""

    @property
    def commands(self) -> str:
        return f"{self.prefix}lamassu.commands"

    @property
    def events(self) -> str:
        return f"{self.prefix}lamassu.events"

    def exchange(self, kind: str) -> str:
        """The topic exchange of a kind of message, ``events`` or ``commands`` (as the
        outbox keeps it)."""
        return {"events": self.events, "commands": self.commands}[kind]

    @property
    def dead(self) -> str:
        return f"{self.prefix}lamassu.dead"

    def queue(self, worker: str, purpose: str) -> str:
        """Durable quorum queue ``<worker>.<purpose>``; it dead-letters to ``<queue>.dead``."""
        return f"{self.prefix}{worker}.{purpose}"

    def worker_queues(self) -> list[str]:
        """Every worker queue and its dead-letter queue: what removing a topology removes."""
        names = [self.queue(worker, purpose) for worker, purpose in WORKER_QUEUES]
        return [queue for name in names for queue in (name, f"{name}.dead")]
