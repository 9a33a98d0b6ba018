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
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["CloudEvent", "new_message"]


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope; ``data`` is the contract model dumped to JSON."""

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
    data: dict[str, Any] = Field(default_factory=dict)


def new_message(
    *,
    type_: str,
    source: str,
    data: BaseModel,
    now: datetime,
    subject: str | None = None,
    correlation_id: str | None = None,
    id_: str | None = None,
    deadline: datetime | None = None,
) -> CloudEvent:
    """Wrap a contract model in a fresh envelope with a unique id (``id_`` when the
    caller derives it from what caused the message, so that a repeat has the same)."""
    return CloudEvent(
        id=id_ or str(uuid.uuid4()),
        source=source,
        type=type_,
        subject=subject,
        time=now,
        correlationid=correlation_id,
        deadline=deadline,
        data=data.model_dump(mode="json"),
    )
