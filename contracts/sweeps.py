"""Expiry sweeps: one trigger fans out into ``sweep.shard`` messages (DESIGN §4).

A sweep evaluates every certificate against one instant, ``as_of``, fixed by its
trigger, so all shards agree on what is due whichever replica runs them and when.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Self

from pydantic import AwareDatetime, Field, model_validator

from contracts.message import Message, Model

__all__ = [
    "MAX_SHARDS",
    "GetSweep",
    "RunSweep",
    "SweepShard",
    "SweepTrigger",
    "SweepView",
]

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MAX_SHARDS = 1024


class SweepTrigger(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"


class RunSweep(Message):
    """Sweep now (``lamassu sweep run``); ``shards`` overrides SWEEP_SHARDS once."""

    TYPE: ClassVar[str] = "sweep.run"
    shards: int | None = Field(default=None, ge=1, le=MAX_SHARDS)


class GetSweep(Message):
    TYPE: ClassVar[str] = "sweep.get"
    id: str = Field(pattern=_UUID)


class SweepShard(Message):
    """One shard of a sweep: the certificates whose serial hashes to ``shard``."""

    TYPE: ClassVar[str] = "sweep.shard"
    sweep_id: str = Field(pattern=_UUID)
    shard: int = Field(ge=0, lt=MAX_SHARDS)
    shards: int = Field(ge=1, le=MAX_SHARDS)
    as_of: AwareDatetime

    @model_validator(mode="after")
    def _shard_in_range(self) -> Self:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} is not below shards {self.shards}")
        return self


class SweepView(Model):
    """A sweep and how far it got: done when ``shards_done == shards``."""

    id: str
    trigger: SweepTrigger
    as_of: AwareDatetime
    shards: int
    shards_done: int = 0
    transitions: int = 0
    # CAs are few: the trigger sweeps them itself, before fanning out.
    ca_transitions: int = 0
