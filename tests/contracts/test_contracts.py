"""Contracts: frozen, tolerant readers, an explicit public API, an AsyncAPI document."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

import contracts
from contracts import COMMANDS, EVENTS, CreateCA, asyncapi_document


def test_exported_members_are_sorted_and_exist() -> None:
    """__all__ lists every public name once, and each exists."""
    assert len(set(contracts.__all__)) == len(contracts.__all__)
    assert all(hasattr(contracts, name) for name in contracts.__all__)


@pytest.mark.parametrize(
    "model",
    [op.request for op in COMMANDS.values()] + list(EVENTS.values()),
    ids=lambda m: m.__name__,
)
def test_models_are_frozen_and_ignore_unknown_fields(model: type[BaseModel]) -> None:
    """Every contract model is frozen and ignores fields it does not know (tolerant reader)."""
    assert model.model_config.get("frozen") is True
    assert "ignore" == model.model_config.get("extra")


def test_unknown_fields_are_dropped_and_missing_ones_refused() -> None:
    """A newer producer's extra field is ignored; a missing required field is an error."""
    assert CreateCA(name="a") == CreateCA.model_validate(
        {"name": "a", "from_the_future": 1}
    )
    with pytest.raises(ValidationError):
        CreateCA.model_validate({})


def test_asyncapi_documents_every_type() -> None:
    """The AsyncAPI document has a message for every command and event type."""
    document = asyncapi_document()
    expected = {f"command.{t}" for t in COMMANDS} | {f"event.{t}" for t in EVENTS}
    assert expected == set(document["components"]["messages"])
    assert "3.0.0" == document["asyncapi"]
