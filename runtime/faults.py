"""One classification of failures, and one backoff, for every process.

An exception is either **transient** (the broker, the database or a backend is away
for now: the same work will succeed later, so it is retried with backoff and never
counts toward dead-lettering) or **deterministic** (a refusal or a bug: retrying
changes nothing). The bus, the database and the engines raise their libraries'
exceptions; this module is the one place that says which are which, so the
dispatcher, the outbox relay, the supervisor and the gateway agree.

Transient:
 - ``runtime.errors.Transient`` and the bus's own ``BusUnavailable`` / ``RequestTimeout``
 - ``OSError`` (refused, reset, unreachable) and ``TimeoutError``
 - AMQP connection and channel loss (aiormq's ``AMQPConnectionError``,
   ``ChannelInvalidStateError``, a closed channel), but not a refused permission
 - PostgreSQL connection loss (SQLSTATE class 08), resources (53, e.g. too many
   connections), operator intervention (57: 57P01 admin shutdown, 57P02 crash shutdown,
   57P03 "the database system is starting up / shutting down"), transaction rollback
   (40: serialization failure, deadlock), and asyncpg's client-side "connection/pool
   is closed" errors
 - whatever a caller adds (the CA worker: its engine's ``EngineUnavailable``)
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from aiormq import exceptions as amqp

from runtime.errors import Transient

__all__ = ["Backoff", "is_transient"]

_TRANSIENT: tuple[type[BaseException], ...] = (
    Transient,
    OSError,  # ConnectionError and TimeoutError are OSErrors
    amqp.AMQPConnectionError,
    amqp.ChannelInvalidStateError,  # a RuntimeError: the channel closed under us
    asyncpg.PostgresConnectionError,  # 08xxx, and ConnectionDoesNotExistError
    asyncpg.InsufficientResourcesError,  # 53xxx
    asyncpg.OperatorInterventionError,  # 57xxx
    asyncpg.TransactionRollbackError,  # 40xxx
    asyncpg.exceptions.InternalClientError,  # protocol state lost mid-restart
)
# Client-side asyncpg errors that are the caller's bug, not a lost connection.
_ASYNCPG_BUGS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)
# A channel the broker closed for a reason that a retry does not cure.
_AMQP_REFUSALS: tuple[type[BaseException], ...] = (
    amqp.ChannelAccessRefused,
    amqp.ChannelPreconditionFailed,
)


def is_transient(exc: BaseException, extra: Iterable[type[BaseException]] = ()) -> bool:
    """Whether ``exc`` (or the exception it was raised from) is worth a retry later."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _one_transient(current, tuple(extra)):
            return True
        current = current.__cause__
    return False


def _one_transient(exc: BaseException, extra: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, _AMQP_REFUSALS):
        return False
    if isinstance(exc, amqp.ChannelClosed | amqp.ConnectionClosed):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return not isinstance(exc, _ASYNCPG_BUGS)
    return isinstance(exc, _TRANSIENT + extra)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (attempt 1, 2, ...)."""

    initial: float = 0.2
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.initial * 2 ** max(0, attempt - 1))
        # Full jitter: replicas that failed together do not retry together.
        return random.uniform(ceiling / 2, ceiling)
