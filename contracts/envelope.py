"""The CloudEvents 1.0 structured-JSON envelope every message on the bus travels in.

Commands and queries use it too, so one decoder serves every queue; ``type`` is the
routing key. The ``correlationid`` extension (CloudEvents §3.1.1 naming rules) carries the
id of the request that caused a message across hops. The ``deadline`` extension says
when the sender of a command stops waiting: a worker that takes it later does not
apply it, so a command the sender reported as not done is never done afterwards.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from typing_extensions import TypeVar

from contracts.message import Message

__all__ = ["CloudEvent", "envelope_of", "new_message"]

# Bare ``CloudEvent`` is ``CloudEvent[Any]``: an envelope read without its route.
D = TypeVar("D", default=Any)
M = TypeVar("M", bound=Message)


class CloudEvent(BaseModel, Generic[D]):
    """A CloudEvents 1.0 envelope whose ``data`` is a contract model.

    ``CloudEvent[SignCertificate].model_validate_json(body)`` validates the envelope
    and its data in one pass (the dispatcher does so with the route's model); the bare
    ``CloudEvent`` leaves ``data`` as parsed JSON, for code that only reads the
    envelope. Serialising writes ``data`` as its own class (a subclass included).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    subject: str | None = None
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    correlationid: str | None = None
    deadline: AwareDatetime | None = None
    data: D


def envelope_of(model: type[M]) -> type[CloudEvent[M]]:
    """``CloudEvent[model]`` for a model known only at run time (a route's); pydantic
    builds each parametrisation once."""
    generic: Any = CloudEvent
    return cast(type[CloudEvent[M]], generic[model])


def new_message(
    *,
    source: str,
    data: M,
    now: datetime,
    subject: str | None = None,
    correlation_id: str | None = None,
    id_: str | None = None,
    deadline: datetime | None = None,
) -> CloudEvent[M]:
    """Wrap a message in a fresh envelope of its ``TYPE`` with a unique id (``id_``
    when the caller derives it from what caused the message, so that a repeat has the
    same). The model is kept as it is, serialised once when the envelope is."""
    return CloudEvent(
        id=id_ or str(uuid.uuid4()),
        source=source,
        type=data.TYPE,
        subject=subject,
        time=now,
        correlationid=correlation_id,
        deadline=deadline,
        data=data,
    )
