"""One classification of failures: what is retried later, and what is a bug."""

from __future__ import annotations

import asyncpg
import pytest
from aiormq import exceptions as amqp

from runtime.bus import BusUnavailable, RequestTimeout
from runtime.errors import Conflict, Transient
from runtime.faults import Backoff, is_transient


class EngineDownError(Exception):
    """Stands for a backend's own 'unavailable' error, added by a worker."""


@pytest.mark.parametrize(
    "exc",
    [
        Transient("down"),
        BusUnavailable("no route"),
        RequestTimeout("no reply"),
        ConnectionResetError("reset"),
        TimeoutError(),
        amqp.ChannelInvalidStateError("No active transport for channel"),
        amqp.ConnectionClosed(320, "CONNECTION_FORCED"),
        amqp.ChannelClosed(320, "broker shut down"),
        amqp.AMQPConnectionError("lost"),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.SerializationError("could not serialize"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.InterfaceError("pool is closed"),
        asyncpg.exceptions.ProtocolError("unexpected message"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_infrastructure_failures_are_transient(exc: BaseException) -> None:
    """The broker, the database or a connection away: worth a retry later."""
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        KeyError("missing"),
        Conflict("exists"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("no such table"),
        asyncpg.DataError("invalid input for query argument"),
        amqp.ChannelAccessRefused(403, "ACCESS_REFUSED"),
        amqp.ChannelPreconditionFailed(406, "inequivalent arg"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_deterministic_failures_are_not(exc: BaseException) -> None:
    """A refusal or a bug: retrying the same work changes nothing."""
    assert not is_transient(exc)


def test_a_cause_counts_and_a_worker_may_add_kinds() -> None:
    """A wrapper raised from a transient failure is transient; extra kinds are honoured."""
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = ConnectionRefusedError("refused")
    assert is_transient(wrapped)
    assert not is_transient(EngineDownError())
    assert is_transient(EngineDownError(), extra=(EngineDownError,))


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    """Each delay is between half and all of min(cap, initial * 2^(n-1))."""
    backoff = Backoff(initial=1.0, cap=8.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        for _ in range(20):
            assert ceiling / 2 <= backoff.delay(attempt) <= ceiling
