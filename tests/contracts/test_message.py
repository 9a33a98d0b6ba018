"""The message bases: a type on every message, events of a view's shape, one update
shape, and envelopes whose data is validated once, as its route's model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

import pytest
from pydantic import ValidationError

from contracts import COMMANDS, EVENTS, CertificateCreated, ListCAs, SignCertificate
from contracts.ca import CAStatusUpdate, CAView, CertificateStatus, CertificateView
from contracts.envelope import CloudEvent, new_message
from contracts.keys import KeyType
from contracts.message import Message, Model, Update

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = datetime(2027, 1, 1, tzinfo=UTC)
CA_VIEW = CAView(
    name="device-ca",
    parent=None,
    internal=False,
    key_type=KeyType.EC_P256,
    key_id="k1",
    engine="gopem",
    serial="0a",
    subject="CN=device-ca",
    status=CertificateStatus.ACTIVE,
    not_before=NOW,
    not_after=LATER,
    certificate_pem="PEM",
)
CERTIFICATE_VIEW = CertificateView(
    serial="0b",
    ca="device-ca",
    subject="CN=dev-1",
    issuer="CN=device-ca",
    status=CertificateStatus.ACTIVE,
    not_before=NOW,
    not_after=LATER,
    csr_fingerprint="f" * 64,
    certificate_pem="PEM",
    device_id="dev-1",
    slot="default",
)


def test_every_catalogued_type_is_its_model_s_type() -> None:
    """The catalog's keys are read from the classes: one home for each type string."""
    assert all(op.request.TYPE == type_ for type_, op in COMMANDS.items())
    assert all(model.TYPE == type_ for type_, model in EVENTS.items())


def test_a_message_without_a_type_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="Untyped is a Message without a TYPE"):

        class Untyped(Message):
            x: int


def test_an_event_of_a_view_s_shape_serialises_as_the_view() -> None:
    """``certificate.create`` data is the certificate's view, field for field."""
    made = CertificateCreated.of(CERTIFICATE_VIEW)
    assert isinstance(made, CertificateView)
    assert CERTIFICATE_VIEW.model_dump_json() == made.model_dump_json()


def test_an_update_is_previous_and_updated() -> None:
    revoked = CA_VIEW.model_copy(update={"status": CertificateStatus.REVOKED})
    update = CAStatusUpdate(previous=CA_VIEW, updated=revoked)
    assert {"previous", "updated"} == set(update.model_dump())
    with pytest.raises(ValidationError):
        CAStatusUpdate.model_validate({"previous": CA_VIEW.model_dump()})


def test_update_is_generic_in_its_thing() -> None:
    class Thing(Model):
        n: int

    class ThingUpdate(Update[Thing]):
        TYPE: ClassVar[str] = "thing.update"

    update = ThingUpdate.model_validate({"previous": {"n": 1}, "updated": {"n": 2}})
    assert Thing(n=2) == update.updated
    with pytest.raises(ValidationError):
        ThingUpdate.model_validate({"previous": {"n": "one"}, "updated": {"n": 2}})


def test_new_message_takes_its_type_from_the_message() -> None:
    envelope = new_message(source="tests", data=ListCAs(), now=NOW)
    assert ListCAs.TYPE == envelope.type
    assert isinstance(envelope.data, ListCAs)


def test_a_typed_envelope_validates_its_data_as_the_model() -> None:
    """What the dispatcher does with a route's model: one pass, data typed."""
    sign = SignCertificate(ca="device-ca", csr_pem="PEM")
    body = new_message(source="tests", data=sign, now=NOW).model_dump_json()
    parsed = CloudEvent[SignCertificate].model_validate_json(body)
    assert sign == parsed.data
    bare = CloudEvent.model_validate_json(body)
    assert sign.model_dump(mode="json") == bare.data
    with pytest.raises(ValidationError, match="ca"):
        CloudEvent[SignCertificate].model_validate_json(
            body.replace('"ca":"device-ca"', '"ca":""')
        )


def test_an_event_model_serialises_whole_inside_an_envelope() -> None:
    """The envelope writes data as its own class, subclass fields included."""
    created = CertificateCreated.of(CERTIFICATE_VIEW)
    body = new_message(source="tests", data=created, now=NOW).model_dump_json()
    parsed = CloudEvent[CertificateCreated].model_validate_json(body)
    assert CERTIFICATE_VIEW.model_dump() == parsed.data.model_dump()
