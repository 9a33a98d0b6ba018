"""Envelopes of any type, for tests that send what no producer would: a forged or
bogus type, a view under an event's type, a test-only model. Production code wraps
messages with ``contracts.envelope.new_message``, which takes the type from the model."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from contracts.envelope import CloudEvent


def raw_envelope(
    *,
    type_: str,
    source: str,
    data: BaseModel,
    now: datetime,
    subject: str | None = None,
    correlation_id: str | None = None,
    id_: str | None = None,
) -> CloudEvent:
    return CloudEvent(
        id=id_ or str(uuid.uuid4()),
        source=source,
        type=type_,
        subject=subject,
        time=now,
        correlationid=correlation_id,
        data=data,
    )
