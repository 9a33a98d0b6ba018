"""Which crypto engines a process opens, read from the seed's environment variables.

``ENGINE`` names the default engine (new CAs go there) and ``ENGINES`` more engines
opened next to it (comma-separated), so that each CA may live on its own engine. A
variable that a chosen engine needs and that is not set fails validation naming it,
so the process stops at start with one line. The CA worker's settings inherit this
class; ``lamassu engine check`` reads it alone.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engines.config import (
    AnyEngineConfig,
    GopemConfig,
    Pkcs11Config,
    VaultPkiConfig,
    VaultTransitConfig,
)
from engines.errors import EngineMisconfigured

__all__ = ["ENGINE_NAMES", "EngineName", "EngineSettings"]

EngineName: TypeAlias = Literal["gopem", "pkcs11", "vault", "vault-transit"]
ENGINE_NAMES: tuple[EngineName, ...] = ("gopem", "pkcs11", "vault", "vault-transit")

T = TypeVar("T")

# The variables each engine cannot do without (GOPEM_DATA has a default).
_NEEDED_BY: dict[str, frozenset[str]] = {
    "pkcs11_driver": frozenset({"pkcs11"}),
    "pkcs11_label": frozenset({"pkcs11"}),
    "pkcs11_pin": frozenset({"pkcs11"}),
    "vault_address": frozenset({"vault", "vault-transit"}),
}
_APPROLE = ("vault_role_id", "vault_secret_id")
_VAULTS = frozenset({"vault", "vault-transit"})


def _blank(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is None or value == ""


class EngineSettings(BaseSettings):
    """``ENGINE``, ``ENGINES`` and every engine's variables (seed names, DESIGN §5)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # Validated first: the checks below read them from ``info.data``. Fields that an
    # engine needs are validated even when unset (validate_default), to say so.
    engine: EngineName = "gopem"
    engines: Annotated[tuple[EngineName, ...], NoDecode] = ()

    gopem_data: Path = Path("/var/lib/lamassu/keys")
    pkcs11_driver: Path | None = Field(default=None, validate_default=True)
    pkcs11_label: str | None = Field(default=None, validate_default=True)
    pkcs11_pin: SecretStr | None = Field(default=None, validate_default=True)
    # Read before VAULT_ADDRESS, whose check it relaxes.
    vault_allow_plain_http: bool = False
    vault_address: str | None = Field(default=None, validate_default=True)
    vault_token: SecretStr | None = None  # instead of AppRole: development and tests
    vault_role_id: str | None = Field(default=None, validate_default=True)
    vault_secret_id: SecretStr | None = Field(default=None, validate_default=True)
    vault_ca: Path | None = None
    vault_unseal_key_file: Path | None = None
    vault_pki_ca_path: str = Field(
        default="pki-", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,40}$"
    )
    vault_transit_mount: str = Field(
        default="transit", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$"
    )

    @field_validator("engines", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator(*_NEEDED_BY, *_APPROLE, mode="after")
    @classmethod
    def _required(cls, value: T, info: ValidationInfo) -> T:
        if not _blank(value):
            return value
        chosen = {info.data.get("engine"), *info.data.get("engines", ())}
        name = info.field_name or ""
        if name in _APPROLE:
            wanted = chosen & _VAULTS
            if wanted and _blank(info.data.get("vault_token")):
                raise PydanticCustomError(
                    "missing",
                    "required for the AppRole login of {engine} (or set VAULT_TOKEN)",
                    {"engine": min(wanted)},
                )
            return value
        wanted = chosen & _NEEDED_BY[name]
        if wanted:
            raise PydanticCustomError(
                "missing",
                "required when ENGINE or ENGINES names {engine}",
                {"engine": min(wanted)},
            )
        return value

    @field_validator("vault_address", mode="after")
    @classmethod
    def _no_plain_http(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The token (or AppRole secret) and every signing request would cross the
        # network in clear: only a Vault on this host may be reached over http://.
        if (
            value is not None
            and urlsplit(value).scheme == "http"
            and not _loopback(value)
            and not info.data.get("vault_allow_plain_http")
        ):
            raise PydanticCustomError(
                "plain_http",
                "http:// to a host other than this one sends the Vault token in "
                "clear; use https:// (VAULT_CA), or set VAULT_ALLOW_PLAIN_HTTP=true",
            )
        return value

    def transport_warnings(self) -> list[str]:
        """What a deployment should not do, said once at start (DESIGN §2a)."""
        found = []
        if self.vault_unseal_key_file is not None and not (
            self.vault_address is not None and _loopback(self.vault_address)
        ):
            found.append(
                "VAULT_UNSEAL_KEY_FILE: the unseal keys of a Vault on another host are "
                "kept on the CA host, which defeats sealing; for development only"
            )
        if self.vault_allow_plain_http:
            found.append("VAULT_ALLOW_PLAIN_HTTP: the Vault token may cross in clear")
        return found

    def engine_names(self) -> tuple[EngineName, ...]:
        """The default engine first, then the others, each once."""
        return tuple(dict.fromkeys((self.engine, *self.engines)))

    def engine_configs(self) -> dict[str, AnyEngineConfig]:
        """One config per engine to open, keyed by engine name, the default first."""
        return {name: self.engine_config(name) for name in self.engine_names()}

    def engine_config(self, name: EngineName) -> AnyEngineConfig:
        match name:
            case "gopem":
                return GopemConfig(data=self.gopem_data)
            case "pkcs11":
                return Pkcs11Config(
                    driver=_given(self.pkcs11_driver, "PKCS11_DRIVER"),
                    label=_given(self.pkcs11_label, "PKCS11_LABEL"),
                    pin=_given(self.pkcs11_pin, "PKCS11_PIN"),
                )
            case "vault-transit":
                return VaultTransitConfig.model_validate(
                    {**self._vault_connection(), "mount": self.vault_transit_mount}
                )
            case "vault":
                return VaultPkiConfig.model_validate(
                    {**self._vault_connection(), "ca_path": self.vault_pki_ca_path}
                )

    def _vault_connection(self) -> dict[str, object]:
        return {
            "address": _given(self.vault_address, "VAULT_ADDRESS"),
            "token": self.vault_token,
            "role_id": self.vault_role_id,
            "secret_id": self.vault_secret_id,
            "ca": self.vault_ca,
            "unseal_key_file": self.vault_unseal_key_file,
        }


def _loopback(address: str) -> bool:
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _given(value: T | None, variable: str) -> T:
    """A value validation guarantees; a settings object built around it still fails clearly."""
    if value is None:
        raise EngineMisconfigured(f"{variable}: not set")
    return value
