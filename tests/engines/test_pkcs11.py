"""PKCS#11 specifics the conformance suite cannot see: key attributes and sessions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pkcs11 import Attribute, ObjectClass

from engines import EngineMisconfigured, KeySpec, KeyType, Pkcs11Config, Pkcs11Engine

# SoftHSM2 and OpenBao fixtures, shared with tests/ca_worker (see engine_backends.py).
pytest_plugins = ["tests.engines.engine_backends"]

pytestmark = pytest.mark.softhsm


def open_pkcs11(config: Pkcs11Config) -> Pkcs11Engine:
    return Pkcs11Engine(config.driver, config.label, config.pin)


@pytest.fixture
def engine(softhsm_config: Pkcs11Config) -> Iterator[Pkcs11Engine]:
    engine = open_pkcs11(softhsm_config)
    yield engine
    engine.close()


def test_private_key_is_sensitive_never_extractable_and_named_by_key_id(
    engine: Pkcs11Engine,
) -> None:
    """The token key is sensitive, never extractable, sign-only, and named by key id."""
    key_id = engine.create_key(KeySpec(KeyType.EC_P256))
    session = engine._session
    private = session.get_key(ObjectClass.PRIVATE_KEY, id=key_id.encode("ascii"))
    attributes = private.get_attributes(
        [
            Attribute.SENSITIVE,
            Attribute.EXTRACTABLE,
            Attribute.NEVER_EXTRACTABLE,
            Attribute.TOKEN,
            Attribute.SIGN,
            Attribute.DECRYPT,
            Attribute.DERIVE,
            Attribute.LABEL,
        ]
    )
    assert attributes[Attribute.SENSITIVE]
    assert not attributes[Attribute.EXTRACTABLE]
    assert attributes[Attribute.NEVER_EXTRACTABLE]
    assert attributes[Attribute.TOKEN]
    assert attributes[Attribute.SIGN]
    assert not attributes[Attribute.DECRYPT]
    assert not attributes[Attribute.DERIVE]
    assert key_id == attributes[Attribute.LABEL]
    public = session.get_key(ObjectClass.PUBLIC_KEY, id=key_id.encode("ascii"))
    assert key_id == public.label


def test_no_temporary_objects_are_left_behind(engine: Pkcs11Engine) -> None:
    """After creation only key-id-named objects remain: the temporary names are gone."""
    engine.create_key(KeySpec(KeyType.RSA_2048))
    labels = [obj[Attribute.LABEL] for obj in engine._session.get_objects({})]
    assert [] == [label for label in labels if label.startswith("lamassu-tmp-")]


def test_second_engine_on_the_same_token_is_refused(
    engine: Pkcs11Engine, softhsm_config: Pkcs11Config
) -> None:
    """A second engine on a token this process has open fails naming PKCS11_LABEL."""
    with pytest.raises(EngineMisconfigured, match=r"^PKCS11_LABEL: .*already open"):
        open_pkcs11(softhsm_config)


def test_token_offers_every_key_type(engine: Pkcs11Engine) -> None:
    """SoftHSM2's mechanism list covers every key type the CA offers."""
    assert list(KeyType) == engine.key_types()
