"""Queries an operator's tools ask the CA worker: its engines' state, its counts.

``lamassu engine check`` and ``lamassu status`` use them, so what they report is what
the running worker sees (its environment, its key directory), not the caller's.
"""

from __future__ import annotations

from typing import ClassVar

from contracts.ca import CertificateStatus
from contracts.message import Message, Model

__all__ = [
    "CAStats",
    "CertificateCount",
    "CheckEngines",
    "EngineCheck",
    "EngineChecks",
    "GetCAStats",
]


class CheckEngines(Message):
    """Check each engine the CA worker has configured, from inside the worker."""

    TYPE: ClassVar[str] = "ca.engines"


class EngineCheck(Model):
    """One checked fact about one engine (``engines.check.CheckLine``)."""

    engine: str
    check: str
    ok: bool
    detail: str


class EngineChecks(Model):
    items: list[EngineCheck]
    next: str | None = None


class GetCAStats(Message):
    """How many CAs, and how many certificates each has per status."""

    TYPE: ClassVar[str] = "ca.stats"


class CertificateCount(Model):
    ca: str
    status: CertificateStatus
    count: int


class CAStats(Model):
    cas: int
    certificates: list[CertificateCount]
