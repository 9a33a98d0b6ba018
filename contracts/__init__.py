"""Pydantic v2 models of every command, query, reply and event, plus bus names.

No I/O here: nothing in this package imports aio-pika, asyncpg or structlog.
"""

from contracts.asyncapi import asyncapi_document
from contracts.ca import (
    CAs,
    CAStatusUpdate,
    CAView,
    Certificates,
    CertificateStatus,
    CertificateStatusUpdate,
    CertificateView,
    CreateCA,
    GetCA,
    GetCertificate,
    ListCAs,
    ListCertificates,
    RevocationReason,
    RevokeCA,
    RevokeCertificate,
    SignCertificate,
)
from contracts.catalog import COMMANDS, EVENTS, Operation
from contracts.envelope import CloudEvent, new_message
from contracts.errors import ErrorBody, ErrorCode, Reply
from contracts.keys import KeyType
from contracts.names import Topology

__all__ = [
    "COMMANDS",
    "EVENTS",
    "CAStatusUpdate",
    "CAView",
    "CAs",
    "CertificateStatus",
    "CertificateStatusUpdate",
    "CertificateView",
    "Certificates",
    "CloudEvent",
    "CreateCA",
    "ErrorBody",
    "ErrorCode",
    "GetCA",
    "GetCertificate",
    "KeyType",
    "ListCAs",
    "ListCertificates",
    "Operation",
    "Reply",
    "RevocationReason",
    "RevokeCA",
    "RevokeCertificate",
    "SignCertificate",
    "Topology",
    "asyncapi_document",
    "new_message",
]
