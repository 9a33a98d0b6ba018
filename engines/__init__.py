"""Crypto engines behind one interface: ``gopem`` (PEM files), ``pkcs11``,
``vault-transit``; plus ``VaultPkiAuthority`` for CAs that Vault's PKI engine runs.

Engines know nothing about workers or messages.
"""

from contracts.keys import KeyType
from engines.base import (
    Engine,
    KeyDeleter,
    KeyLister,
    KeySpec,
    KeyTypeReporter,
    PrivateKey,
    PublicKey,
    key_id_of,
)
from engines.check import CheckLine, check
from engines.config import (
    AnyEngineConfig,
    EngineConfig,
    GopemConfig,
    Pkcs11Config,
    VaultPkiConfig,
    VaultTransitConfig,
    open_engine,
    open_vault_pki,
)
from engines.errors import (
    EngineError,
    EngineMisconfigured,
    EngineUnavailable,
    KeyExists,
    KeyNotFound,
)
from engines.gopem import PemFileEngine, generate_private_key
from engines.pkcs11 import Pkcs11Engine
from engines.remote_key import RemoteEcPrivateKey, RemoteRsaPrivateKey
from engines.settings import EngineName, EngineSettings
from engines.vault_client import VaultConnection
from engines.vault_pki import VaultPkiAuthority
from engines.vault_transit import VaultTransitEngine

__all__ = [
    "AnyEngineConfig",
    "CheckLine",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineMisconfigured",
    "EngineName",
    "EngineSettings",
    "EngineUnavailable",
    "GopemConfig",
    "KeyDeleter",
    "KeyExists",
    "KeyLister",
    "KeyNotFound",
    "KeySpec",
    "KeyType",
    "KeyTypeReporter",
    "PemFileEngine",
    "Pkcs11Config",
    "Pkcs11Engine",
    "PrivateKey",
    "PublicKey",
    "RemoteEcPrivateKey",
    "RemoteRsaPrivateKey",
    "VaultConnection",
    "VaultPkiAuthority",
    "VaultPkiConfig",
    "VaultTransitConfig",
    "VaultTransitEngine",
    "check",
    "generate_private_key",
    "key_id_of",
    "open_engine",
    "open_vault_pki",
]
