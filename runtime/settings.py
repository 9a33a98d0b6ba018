"""Settings shared by every process, read from the environment once, in ``__main__``.

Names are the seeds' exactly (``POSTGRES_HOSTNAME`` ...). A bad value stops the process
with one line naming the variable; the value itself is never echoed (it may be secret).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "BusSettings",
    "DatabaseSettings",
    "EstListenerSettings",
    "LogSettings",
    "SettingsError",
    "load_settings",
]

S = TypeVar("S", bound=BaseSettings)


class SettingsError(Exception):
    """A setting is missing or wrong; ``str()`` is the one line to print."""


class _Base(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)


class DatabaseSettings(_Base):
    postgres_hostname: str = "127.0.0.1"
    postgres_port: int = Field(default=5432, gt=0, lt=65536)
    postgres_database: str = Field(default="lamassu", min_length=1)
    postgres_username: str = Field(default="postgres", min_length=1)
    postgres_password: SecretStr = SecretStr("")
    postgres_pool_size: int = Field(default=10, ge=1, le=200)
    # libpq's sslmode names (PostgreSQL docs §34.19); verify-* check the server's
    # certificate against POSTGRES_SSLROOTCERT (verify-full also its host name).
    postgres_sslmode: Literal[
        "disable", "allow", "prefer", "require", "verify-ca", "verify-full"
    ] = "prefer"
    postgres_sslrootcert: Path | None = None

    @field_validator("postgres_sslrootcert")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value


class BusSettings(_Base):
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Put before every exchange and queue name; empty in production, unique in tests.
    amqp_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._\-]*$")

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr) -> SecretStr:
        url = urlsplit(value.get_secret_value())
        if url.scheme not in {"amqp", "amqps"}:
            raise ValueError("must be an amqp:// or amqps:// URL")
        query = parse_qs(url.query)
        # amqps:// takes cafile, certfile and keyfile; auth=external logs in with the
        # client certificate (RabbitMQ's EXTERNAL mechanism, rabbitmq_auth_mechanism_ssl).
        for name in ("cafile", "certfile", "keyfile"):
            for path in query.get(name, []):
                if not Path(path).is_file():
                    raise ValueError(f"{name}: no such file: {path}")
        external = [a.lower() for a in query.get("auth", [])] == ["external"]
        if external and (url.scheme != "amqps" or not url.username):
            # The user name is what publishes carry as user_id (DESIGN §2a).
            raise ValueError(
                "auth=external needs amqps:// and the certificate's user name before @"
            )
        return value


class LogSettings(_Base):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class EstListenerSettings(_Base):
    """Where the EST gateway listens, in how many processes, with which certificate.

    Read by the gateway and by ``lamassu up``, which starts its processes and tells the
    operator where EST is: here, so that the CLI needs no import of the gateway.
    """

    est_port: int = Field(default=8443, gt=0, lt=65536)
    # Gateway processes that ``lamassu up`` starts on the port (SO_REUSEPORT: the
    # kernel spreads new connections over them); 0 means one per core. One process
    # uses at most one core for TLS handshakes, so a host that only runs gateways
    # wants one per core; next to the workers on a small host, the gateway is a
    # minority of the CPU and a second process only adds contention (bench/enroll.py).
    est_workers: int = Field(default=1, ge=0, le=64)
    # Server certificate and key; generated (self-signed, key 0600) in EST_TLS_DIR when unset.
    est_tls_cert_file: Path | None = None
    est_tls_key_file: Path | None = None
    est_tls_dir: Path = Path("/var/lib/lamassu/est-tls")
    est_server_names: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"]
    )

    def gateway_processes(self) -> int:
        """How many gateway processes to run: ``EST_WORKERS``, or one per core."""
        return self.est_workers or os.cpu_count() or 1

    @field_validator("est_server_names", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


def load_settings(cls: type[S]) -> S:
    """Build ``cls`` from the environment or raise SettingsError naming the variable."""
    try:
        return cls()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else cls.__name__
        raise SettingsError(f"{variable}: {first['msg']}") from None
