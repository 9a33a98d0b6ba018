"""Settings of the CA worker: the shared ones plus the crypto engine (seed variable names)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from engines.config import EngineConfig, GopemConfig
from runtime.settings import LogSettings
from runtime.worker import WorkerSettings

__all__ = ["Settings"]


class Settings(WorkerSettings, LogSettings):
    engine: Literal["gopem"] = "gopem"
    gopem_data: Path = Path("/var/lib/lamassu/keys")
    ca_prefetch: int = Field(default=32, ge=1, le=1000)

    def engine_config(self) -> EngineConfig:
        return GopemConfig(data=self.gopem_data)
