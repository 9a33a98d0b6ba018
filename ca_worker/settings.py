"""Settings of the CA worker: the shared ones plus its crypto engines (seed variable names).

``ENGINE`` is the default engine and ``ENGINES`` more engines opened next to it; each
engine's variables are checked in ``engines.settings``.
"""

from __future__ import annotations

from pydantic import Field

from engines.settings import EngineSettings
from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings, EngineSettings):
    ca_prefetch: int = Field(default=32, ge=1, le=1000)
