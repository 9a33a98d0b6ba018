"""Typed engine configuration (a discriminated union on ``kind``) and the factories.

No registry filled at import time: ``open_engine`` matches on the config type. Field
comments give the environment variable each field is read from (DESIGN §5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from engines.base import Engine
from engines.gopem import PemFileEngine
from engines.pkcs11 import Pkcs11Engine
from engines.vault_client import VaultConnection
from engines.vault_pki import VaultPkiAuthority
from engines.vault_transit import VaultTransitEngine

__all__ = [
    "AnyEngineConfig",
    "EngineConfig",
    "GopemConfig",
    "Pkcs11Config",
    "VaultPkiConfig",
    "VaultTransitConfig",
    "open_engine",
    "open_vault_pki",
]


class GopemConfig(BaseModel):
    """PEM files in a directory (``ENGINE=gopem``, ``GOPEM_DATA``)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["gopem"] = "gopem"
    data: Path


class Pkcs11Config(BaseModel):
    """A PKCS#11 token (``ENGINE=pkcs11``)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["pkcs11"] = "pkcs11"
    driver: Path  # PKCS11_DRIVER: the module, e.g. /usr/lib/softhsm/libsofthsm2.so
    label: str  # PKCS11_LABEL: the token label
    pin: SecretStr  # PKCS11_PIN: the user PIN


class VaultTransitConfig(VaultConnection):
    """Keys in Vault/OpenBao Transit (``ENGINE=vault-transit``, ``VAULT_*``)."""

    kind: Literal["vault-transit"] = "vault-transit"
    mount: str = "transit"


class VaultPkiConfig(VaultConnection):
    """CAs as Vault/OpenBao PKI mounts (``vault``); not an engine: Vault issues."""

    kind: Literal["vault"] = "vault"
    ca_path: str = "pki-"  # VAULT_PKI_CA_PATH: prefix of every CA's mount path


EngineConfig = Annotated[
    GopemConfig | Pkcs11Config | VaultTransitConfig, Field(discriminator="kind")
]

# Everything a CA can be kept by: a signer engine, or Vault PKI (which issues itself).
AnyEngineConfig = GopemConfig | Pkcs11Config | VaultTransitConfig | VaultPkiConfig


def open_engine(config: EngineConfig) -> Engine:
    """Open the engine the config names; raises EngineMisconfigured with the setting's name."""
    match config:
        case GopemConfig():
            return PemFileEngine(config.data)
        case Pkcs11Config():
            return Pkcs11Engine(config.driver, config.label, config.pin)
        case VaultTransitConfig():
            return VaultTransitEngine(config, mount=config.mount)


def open_vault_pki(config: VaultPkiConfig) -> VaultPkiAuthority:
    """Connect to Vault for PKI-mount CAs; raises EngineMisconfigured like open_engine."""
    return VaultPkiAuthority(config, mount_prefix=config.ca_path)
