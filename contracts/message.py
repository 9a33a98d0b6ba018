"""The two bases of every contract model, and the one shape of an update event.

``Model`` is a value: a reply's result or a part of a message (frozen, and tolerant of
fields a newer sender adds). ``Message`` is what travels on its own, a command, a
query or an event: its ``TYPE`` is the CloudEvents ``type`` and the routing key
(DESIGN §2), so a type string is written once, on its class, and everything else
(routes, bindings, the catalog, the sender table) reads it from there.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Self, TypeVar, cast

from pydantic import BaseModel, ConfigDict

__all__ = ["Message", "Model", "Update"]


class Model(BaseModel):
    """A contract value: frozen, and extra fields ignored (a newer sender's)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


E = TypeVar("E", bound="Message")


class Message(Model):
    """A command, query or event; ``TYPE`` is its CloudEvents type and routing key."""

    TYPE: ClassVar[str]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        generic = cls.__pydantic_generic_metadata__
        # A generic base (Update) and its parametrisations have no type of their own.
        if not hasattr(cls, "TYPE") and not (
            generic["origin"] or generic["parameters"]
        ):
            raise TypeError(f"{cls.__name__} is a Message without a TYPE")

    @classmethod
    def of(cls, value: Model) -> Self:
        """This message made of a value of its shape (an event whose data is a view:
        ``CertificateCreated.of(view)``), without validating it again."""
        return cast(Self, cls.model_construct(value.model_fields_set, **dict(value)))


T = TypeVar("T", bound=Model)


class Update(Message, Generic[T]):
    """An update event's data: the thing before and after (DESIGN §2), as the original
    system's ``{"previous": ..., "updated": ...}`` events have it."""

    previous: T
    updated: T
