"""Engine configuration: the discriminated union, secrets, and the public names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

import engines
from engines import (
    EngineConfig,
    GopemConfig,
    PemFileEngine,
    Pkcs11Config,
    VaultPkiConfig,
    VaultTransitConfig,
    open_engine,
)

ADAPTER: TypeAdapter[EngineConfig] = TypeAdapter(EngineConfig)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "gopem", "data": "/var/lib/keys"}, GopemConfig),
        (
            {"kind": "pkcs11", "driver": "/x.so", "label": "ca", "pin": "1234"},
            Pkcs11Config,
        ),
        (
            {"kind": "vault-transit", "address": "https://v:8200", "role_id": "r"},
            VaultTransitConfig,
        ),
    ],
    ids=["gopem", "pkcs11", "vault-transit"],
)
def test_kind_selects_the_config_model(data: dict[str, str], expected: type) -> None:
    """The ``kind`` field picks the engine's config model."""
    assert expected is type(ADAPTER.validate_python(data))


def test_unknown_kind_is_rejected() -> None:
    """A kind no engine has fails validation."""
    with pytest.raises(ValidationError):
        ADAPTER.validate_python({"kind": "aws-kms"})


def test_pin_never_shows_in_repr() -> None:
    """The PKCS#11 PIN is a SecretStr, hidden in repr and str."""
    pin = SecretStr("s3cret-pin")
    config = Pkcs11Config(driver=Path("/x.so"), label="ca", pin=pin)
    assert "s3cret-pin" not in repr(config)
    assert "s3cret-pin" not in str(config)


def test_vault_pki_defaults_to_the_pki_prefix() -> None:
    """VAULT_PKI_CA_PATH defaults to ``pki-`` and the Transit mount to ``transit``."""
    assert "pki-" == VaultPkiConfig(address="https://v:8200").ca_path
    assert "transit" == VaultTransitConfig(address="https://v:8200").mount


def test_open_engine_builds_the_named_engine(tmp_path: Path) -> None:
    """open_engine returns the engine its config names."""
    engine = open_engine(GopemConfig(data=tmp_path))
    try:
        assert isinstance(engine, PemFileEngine)
        assert "gopem" == engine.name
    finally:
        engine.close()


def test_exported_members() -> None:
    """``engines.__all__`` is sorted and names only what the package defines."""
    assert sorted(engines.__all__) == engines.__all__
    for name in engines.__all__:
        assert hasattr(engines, name), name
