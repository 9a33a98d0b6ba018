"""The CLI's side of the bus: send one command, wait for its reply, turn failures into
exit codes. No business rules here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.catalog import COMMANDS
from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorCode, Reply
from contracts.message import Message
from contracts.names import Source, Topology
from runtime.bus import Bus, RequestTimeout
from runtime.settings import BusSettings, LogSettings

__all__ = ["CliError", "CliSettings", "Client"]

SOURCE = Source.CLI
# How long past a command's deadline the CLI still waits for its reply: a worker that
# took it just in time commits and answers well within this.
_GRACE = 2.0


class CliSettings(BusSettings, LogSettings):
    lamassu_timeout: float = 30.0


# What a failure is, when its message does not start with an ErrorCode.
_CODE_OF_EXIT = {1: "failed", 2: "usage", 3: "unavailable"}


class CliError(Exception):
    """Printed as ``error: <message>``; ``exit_code`` is the process status.

    ``code`` and ``detail`` are the JSON error's: a message ``"<error code>: ..."``
    (a worker's refusal, ``unavailable: ...``) is split there."""

    def __init__(
        self, message: str, exit_code: int = 1, *, reported: bool = False
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        # The command printed its own JSON answer already (``ok: false``): only the
        # exit status is left to give.
        self.reported = reported
        head, separator, rest = message.partition(": ")
        known = {c.value for c in ErrorCode}
        if separator and head in known:
            self.code, self.detail = head, rest
        else:
            self.code, self.detail = _CODE_OF_EXIT.get(exit_code, "failed"), message


class Client:
    """A connected bus plus the request deadline."""

    def __init__(self, bus: Bus, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout

    @classmethod
    async def connect(cls, settings: CliSettings) -> Client:
        bus = await Bus.connect(
            settings.amqp_url.get_secret_value(), Topology(settings.amqp_prefix)
        )
        return cls(bus, settings.lamassu_timeout)

    async def close(self) -> None:
        await self.bus.close()

    @staticmethod
    def message(request: Message) -> CloudEvent:
        """Wrap a command or query in an envelope."""
        return new_message(source=SOURCE, data=request, now=datetime.now(UTC))

    async def call(self, request: Message) -> Any:
        """Send a command or query; return the reply's result or raise CliError.

        What this reports as not done is never done later: the command carries a
        deadline (the envelope's ``deadline``, which workers check before acting, and
        the AMQP expiration, which has the broker drop it), and the CLI waits a little
        past it for the reply, so a worker that took it in time has answered.
        """
        type_ = request.TYPE
        await self._someone_listens(type_)
        now = datetime.now(UTC)
        message = new_message(
            source=SOURCE,
            data=request,
            now=now,
            deadline=now + timedelta(seconds=self.timeout),
        )
        try:
            reply: Reply = await self.bus.request(
                message, timeout=self.timeout + _GRACE, expiration=self.timeout
            )
        except RequestTimeout:
            raise CliError(
                f"unavailable: {type_} was not taken by a worker within "
                f"{self.timeout:g} s; nothing was done (LAMASSU_TIMEOUT sets the wait)",
                exit_code=3,
            ) from None
        if not reply.ok:
            if reply.error is None:
                raise CliError(f"unavailable: {type_} was refused without a reason")
            raise CliError(f"{reply.error.code.value}: {reply.error.message}")
        return reply.result

    async def _someone_listens(self, type_: str) -> None:
        """Fail at once, sending nothing, when no worker consumes the queue that takes
        ``type_`` (instead of waiting the whole timeout for a reply that cannot come)."""
        operation = COMMANDS.get(type_)
        if operation is None:
            return
        queue = self.bus.topology.queue(operation.worker, "commands")
        if not await self.bus.consumer_count(queue):
            raise CliError(
                f"unavailable: no {operation.worker} worker is running (nothing "
                f"consumes {queue}); nothing was sent",
                exit_code=3,
            )
