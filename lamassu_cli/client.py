"""The CLI's side of the bus: send one command, wait for its reply, turn failures into
exit codes. No business rules here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from contracts.envelope import CloudEvent, new_message
from contracts.errors import Reply
from contracts.names import Topology
from runtime.bus import Bus
from runtime.settings import BusSettings, LogSettings

__all__ = ["CliError", "CliSettings", "Client"]

SOURCE = "cli/lamassu"


class CliSettings(BusSettings, LogSettings):
    lamassu_timeout: float = 30.0


class CliError(Exception):
    """Printed as ``error: <message>``; ``exit_code`` is the process status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    def message(request: BaseModel) -> CloudEvent:
        """Wrap a contract model (which names its ``TYPE``) in an envelope."""
        type_: str = request.TYPE  # type: ignore[attr-defined]
        return new_message(
            type_=type_, source=SOURCE, data=request, now=datetime.now(UTC)
        )

    async def call(self, request: BaseModel) -> Any:
        """Send a command or query; return the reply's result or raise CliError."""
        reply: Reply = await self.bus.request(
            self.message(request), timeout=self.timeout
        )
        if not reply.ok:
            assert reply.error is not None  # noqa: S101 - Reply guarantees it when not ok
            raise CliError(f"{reply.error.code.value}: {reply.error.message}")
        return reply.result
