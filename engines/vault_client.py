"""One logged-in connection to Vault or OpenBao, shared by Transit and Vault PKI.

It owns the connection settings, TLS, unsealing a sealed server from a key file, login
(AppRole, or a token for tests and development), and the translation of hvac and
requests exceptions into the engine error tree. It knows nothing about keys or CAs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import hvac
import requests
from hvac import exceptions as hvac_errors
from pydantic import BaseModel, ConfigDict, SecretStr

from engines.errors import (
    EngineError,
    EngineMisconfigured,
    EngineUnavailable,
    KeyNotFound,
)

__all__ = ["VaultConnection", "VaultSession", "read_unseal_keys"]

T = TypeVar("T")

# Fields a key file may carry: the sys/init API answer ("keys"), or the output of
# `bao operator init -format=json` / `vault operator init -format=json`.
_KEY_FIELDS = ("keys", "unseal_keys_hex", "unseal_keys_b64", "keys_base64")


class VaultConnection(BaseModel):
    """Where Vault is and how to log in; the environment names are in the comments."""

    model_config = ConfigDict(frozen=True)
    address: str  # VAULT_ADDRESS, e.g. https://vault:8200
    role_id: str | None = None  # VAULT_ROLE_ID
    secret_id: SecretStr | None = None  # VAULT_SECRET_ID
    token: SecretStr | None = None  # VAULT_TOKEN: tests and development only
    ca: Path | None = None  # VAULT_CA: PEM bundle that signed Vault's TLS certificate
    unseal_key_file: Path | None = None  # VAULT_UNSEAL_KEY_FILE
    approle_mount: str = "approle"
    timeout_seconds: float = 10.0


def read_unseal_keys(path: Path) -> list[str]:
    """Unseal keys from JSON (``{"keys": [...]}``) or one key per line; never logged."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise EngineMisconfigured(
            f"VAULT_UNSEAL_KEY_FILE: cannot read {path}: {exc.strerror}"
        ) from exc
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EngineMisconfigured(
                f"VAULT_UNSEAL_KEY_FILE: {path} is not valid JSON"
            ) from exc
        found = next((document[f] for f in _KEY_FIELDS if f in document), None)
        keys = found if isinstance(found, list) else []
    else:
        keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise EngineMisconfigured(f"VAULT_UNSEAL_KEY_FILE: no unseal keys in {path}")
    return keys


class VaultSession:
    """An hvac client that is unsealed-for and logged in; ``call`` runs one request."""

    def __init__(self, connection: VaultConnection) -> None:
        self._connection = connection
        self._client = _client(connection)
        self._login_lock = threading.Lock()
        try:
            with self._translated():
                self._unseal_if_sealed()
                self._login()
        except BaseException:
            self._client.adapter.close()
            raise

    @property
    def address(self) -> str:
        return self._connection.address

    def call(self, operation: Callable[[hvac.Client], T]) -> T:
        """Run one request, translating errors; an expired AppRole token is renewed."""
        with self._translated():
            try:
                return operation(self._client)
            except hvac_errors.Forbidden:
                if self._connection.token is not None:
                    raise
            # AppRole tokens expire (token_ttl); log in again once and retry.
            with self._login_lock:
                self._login()
            return operation(self._client)

    def close(self) -> None:
        self._client.adapter.close()

    def _unseal_if_sealed(self) -> None:
        status = self._client.sys.read_seal_status()
        address = self._connection.address
        if not status["initialized"]:
            raise EngineMisconfigured(
                f"VAULT_ADDRESS: Vault at {address} is not initialised"
            )
        if not status["sealed"]:
            return
        path = self._connection.unseal_key_file
        if path is None:
            raise EngineMisconfigured(
                f"VAULT_UNSEAL_KEY_FILE: Vault at {address} is sealed and no unseal "
                "key file is configured"
            )
        keys = read_unseal_keys(path)
        try:
            status = self._client.sys.submit_unseal_keys(keys)
        except hvac_errors.InvalidRequest as exc:
            # Drop the partial progress so the next attempt starts clean.
            self._client.sys.submit_unseal_key(reset=True)
            raise EngineMisconfigured(
                f"VAULT_UNSEAL_KEY_FILE: Vault rejected a key in {path}"
            ) from exc
        if status["sealed"]:
            raise EngineMisconfigured(
                f"VAULT_UNSEAL_KEY_FILE: {len(keys)} key(s) in {path}, "
                f"Vault needs {status['t']}"
            )
        self._await_active_node()

    def _await_active_node(self) -> None:
        """Wait, bounded, until some node is active: a just-unsealed HA/raft node
        answers "local node not active" until it has won or found a leader."""
        deadline = time.monotonic() + self._connection.timeout_seconds
        while True:
            leader = self._client.sys.read_leader_status()
            if not leader.get("ha_enabled") or leader.get("leader_address"):
                return
            if time.monotonic() > deadline:
                raise EngineUnavailable(
                    f"VAULT_ADDRESS: {self._connection.address} was unsealed but "
                    "has no active node yet"
                )
            time.sleep(0.1)

    def _login(self) -> None:
        connection = self._connection
        if connection.token is not None:
            self._client.token = connection.token.get_secret_value()
            try:
                self._client.auth.token.lookup_self()
            except hvac_errors.Forbidden as exc:
                raise EngineMisconfigured(
                    "VAULT_TOKEN: Vault rejected the token"
                ) from exc
            return
        if connection.role_id is None or connection.secret_id is None:
            raise EngineMisconfigured(
                "VAULT_ROLE_ID, VAULT_SECRET_ID: both are needed for AppRole login"
            )
        try:
            self._client.auth.approle.login(
                connection.role_id,
                connection.secret_id.get_secret_value(),
                mount_point=connection.approle_mount,
            )
        except (hvac_errors.InvalidRequest, hvac_errors.Forbidden) as exc:
            # Vault answers "invalid role or secret ID" without saying which.
            raise EngineMisconfigured(
                "VAULT_SECRET_ID: AppRole login rejected (check VAULT_SECRET_ID and "
                "VAULT_ROLE_ID)"
            ) from exc

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Map hvac and requests exceptions onto the engine error tree, in one place."""
        address = self._connection.address
        try:
            yield
        except requests.exceptions.SSLError as exc:
            raise EngineMisconfigured(
                f"VAULT_CA: TLS verification of {address} failed"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise EngineUnavailable(f"VAULT_ADDRESS: cannot reach {address}") from exc
        except (hvac_errors.VaultDown, hvac_errors.BadGateway) as exc:
            raise EngineUnavailable(f"Vault at {address} is sealed or down") from exc
        except hvac_errors.InternalServerError as exc:
            # e.g. "local node not active": a server-side state that may pass.
            raise EngineUnavailable(f"Vault at {address}: {exc}") from exc
        except (hvac_errors.Forbidden, hvac_errors.Unauthorized) as exc:
            who = "VAULT_ROLE_ID" if self._connection.token is None else "VAULT_TOKEN"
            raise EngineMisconfigured(
                f"{who}: permission denied on {exc.url} (check its policy)"
            ) from exc
        except hvac_errors.InvalidPath as exc:
            raise KeyNotFound(f"nothing at {exc.url}") from exc
        except hvac_errors.VaultError as exc:
            raise EngineError(f"Vault: {exc}") from exc


def _client(connection: VaultConnection) -> hvac.Client:
    if not connection.address.startswith(("http://", "https://")):
        raise EngineMisconfigured(
            f"VAULT_ADDRESS: {connection.address!r} is not an http(s) URL"
        )
    verify: str | bool = True
    if connection.ca is not None:
        if not connection.ca.is_file():
            raise EngineMisconfigured(f"VAULT_CA: {connection.ca} does not exist")
        verify = str(connection.ca)
    return hvac.Client(
        url=connection.address, verify=verify, timeout=connection.timeout_seconds
    )
