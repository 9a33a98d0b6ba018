"""Settings of the CA worker: the shared ones plus its crypto engines (seed variable names).

``ENGINE`` is the default engine and ``ENGINES`` more engines opened next to it; each
engine's variables are checked in ``engines.settings``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from contracts.sweeps import MAX_SHARDS
from engines.settings import EngineSettings
from runtime.schedule import Schedule, parse_schedule
from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings, EngineSettings):
    ca_prefetch: int = Field(default=32, ge=1, le=1000)
    # When expiry sweeps run: "off", an interval ("1h", "15m", "1d") or a five-field
    # cron expression in UTC ("0 3 * * *", "@daily"). Every replica may run it: the
    # period is claimed in the database, so one fires (runtime.schedule).
    sweep_schedule: str = "1h"
    # How many sweep.shard messages one sweep fans out into.
    sweep_shards: int = Field(default=16, ge=1, le=MAX_SHARDS)
    # Shards one replica works on at once (each is one transaction on one connection):
    # enough for PostgreSQL to use every core, while POSTGRES_POOL_SIZE (10) keeps
    # connections for enrollments and the relay.
    sweep_prefetch: int = Field(default=8, ge=1, le=MAX_SHARDS)
    # The validation authority that issued certificates point at (AIA and CRL
    # Distribution Points); empty: none. VA_URL_BY_CA overrides it per CA (JSON object).
    va_url: str = Field(default="", pattern=r"^(https?://[^\s]+)?$")
    va_url_by_ca: dict[str, Annotated[str, Field(pattern=r"^https?://[^\s]+$")]] = (
        Field(default_factory=dict)
    )

    @field_validator("sweep_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        parse_schedule(value)  # its ValueError is the one-line reason
        return value

    def schedule(self) -> Schedule | None:
        return parse_schedule(self.sweep_schedule)

    def va_url_for(self, ca: str) -> str:
        """The VA URL the certificates issued by ``ca`` carry (empty: none)."""
        return self.va_url_by_ca.get(ca, self.va_url)
