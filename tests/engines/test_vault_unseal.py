"""Unsealing: a sealed OpenBao (raft, 1 key share) is unsealed from VAULT_UNSEAL_KEY_FILE."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import hvac
import pytest

from engines import (
    EngineMisconfigured,
    KeyLister,
    KeySpec,
    KeyType,
    VaultTransitConfig,
    open_engine,
)

# SoftHSM2 and OpenBao fixtures, shared with tests/ca_worker (see engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

pytestmark = pytest.mark.vault


def is_sealed(address: str) -> bool:
    client = hvac.Client(url=address)
    try:
        return bool(client.sys.is_sealed())
    finally:
        client.adapter.close()


def test_engine_unseals_from_the_key_file(sealed_vault: VaultTransitConfig) -> None:
    """Opening the engine on a sealed Vault unseals it with the key file, then works."""
    engine = open_engine(sealed_vault)
    try:
        assert isinstance(engine, KeyLister)
        key_id = engine.create_key(KeySpec(KeyType.EC_P256))
        assert key_id in engine.list_keys()
    finally:
        engine.close()
    assert not is_sealed(sealed_vault.address)


def test_sealed_without_key_file_is_misconfigured(
    sealed_vault: VaultTransitConfig,
) -> None:
    """A sealed Vault and no key file fail at open, naming VAULT_UNSEAL_KEY_FILE."""
    config = sealed_vault.model_copy(update={"unseal_key_file": None})
    with pytest.raises(EngineMisconfigured, match=r"^VAULT_UNSEAL_KEY_FILE: "):
        open_engine(config)
    assert is_sealed(sealed_vault.address)


def test_wrong_unseal_key_is_misconfigured(
    sealed_vault: VaultTransitConfig, tmp_path: Path
) -> None:
    """A key file with a wrong key fails at open without echoing the key."""
    wrong_key = secrets.token_hex(32)
    key_file = tmp_path / "wrong.json"
    key_file.write_text(json.dumps({"keys": [wrong_key]}))
    config = sealed_vault.model_copy(update={"unseal_key_file": key_file})
    with pytest.raises(
        EngineMisconfigured, match=r"^VAULT_UNSEAL_KEY_FILE: "
    ) as caught:
        open_engine(config)
    assert wrong_key not in str(caught.value)
    assert is_sealed(sealed_vault.address)
