"""Settings of the device worker: the shared ones plus its queues' prefetch."""

from __future__ import annotations

from pydantic import Field

from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings):
    device_prefetch: int = Field(default=32, ge=1, le=1000)
