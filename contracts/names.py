"""Exchange and queue names (DESIGN §2).

A ``prefix`` (setting ``AMQP_PREFIX``, empty in production) is put before every name so
test runs and tenants sharing one broker never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topology"]


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

    @property
    def dead(self) -> str:
        return f"{self.prefix}lamassu.dead"

    def queue(self, worker: str, purpose: str) -> str:
        """Durable quorum queue ``<worker>.<purpose>``; it dead-letters to ``<queue>.dead``."""
        return f"{self.prefix}{worker}.{purpose}"
