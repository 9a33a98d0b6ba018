"""What ``lamassu engine check`` reports: one line per fact, stopping at the first fault.

Pure in the sense that matters to the CLI: it opens the configured engine (or Vault PKI),
asks it what it offers, closes it, and returns lines; it prints nothing. The stage a configuration
error belongs to comes from the setting its message names first (errors.py convention).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.keys import KeyType
from engines.base import KeyTypeReporter
from engines.config import (
    AnyEngineConfig,
    GopemConfig,
    Pkcs11Config,
    VaultPkiConfig,
    VaultTransitConfig,
    open_engine,
    open_vault_pki,
)
from engines.errors import EngineError, EngineUnavailable

__all__ = ["CheckLine", "check"]

# Settings whose failure means "logged-in" failed; any other named setting means the
# backend was not reached. A message naming no setting fails after login.
_LOGIN_SETTINGS = ("PKCS11_PIN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_TOKEN")
_REACH_SETTINGS = (
    "GOPEM_DATA",
    "PKCS11_DRIVER",
    "PKCS11_LABEL",
    "VAULT_ADDRESS",
    "VAULT_CA",
    "VAULT_UNSEAL_KEY_FILE",
)


@dataclass(frozen=True, slots=True)
class CheckLine:
    """One checked fact: ``ok`` says whether it holds, ``detail`` says what was seen."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _describe(config: AnyEngineConfig) -> tuple[str, str, str]:
    """(which engine, what "reachable" means, what "logged in" means) for a config."""
    match config:
        case GopemConfig():
            return f"gopem, {config.data}", "directory writable", "no login (files)"
        case Pkcs11Config():
            return (
                f"pkcs11, token {config.label!r} via {config.driver}",
                "driver loaded, token found",
                "user PIN accepted",
            )
        case VaultTransitConfig():
            how = "token" if config.token is not None else "AppRole"
            return (
                f"vault-transit, {config.address} mount {config.mount!r}",
                "answered and unsealed",
                f"{how} login accepted",
            )
        case VaultPkiConfig():
            how = "token" if config.token is not None else "AppRole"
            return (
                f"vault, {config.address} CA mounts {config.ca_path}<name>",
                "answered and unsealed",
                f"{how} login accepted",
            )


def _stage_of(error: EngineError) -> str:
    message = str(error)
    if isinstance(error, EngineUnavailable) or message.startswith(_REACH_SETTINGS):
        return "reachable"
    if message.startswith(_LOGIN_SETTINGS):
        return "logged in"
    return "ready"


def check(config: AnyEngineConfig) -> list[CheckLine]:
    """Open the engine once and report each stage; the first failing line is the fault."""
    which, reached, logged_in = _describe(config)
    lines = [CheckLine("engine", ok=True, detail=which)]
    try:
        engine = (
            open_vault_pki(config)
            if isinstance(config, VaultPkiConfig)
            else open_engine(config)
        )
    except EngineError as exc:
        failed = _stage_of(exc)
        for stage, detail in (("reachable", reached), ("logged in", logged_in)):
            if stage == failed:
                return [*lines, CheckLine(stage, ok=False, detail=str(exc))]
            lines.append(CheckLine(stage, ok=True, detail=detail))
        return [*lines, CheckLine(failed, ok=False, detail=str(exc))]
    try:
        lines.append(CheckLine("reachable", ok=True, detail=reached))
        lines.append(CheckLine("logged in", ok=True, detail=logged_in))
        offered = (
            engine.key_types() if isinstance(engine, KeyTypeReporter) else list(KeyType)
        )
        names = ", ".join(k.value for k in offered) or "none"
        lines.append(CheckLine("key types", ok=bool(offered), detail=names))
    finally:
        engine.close()
    return lines
