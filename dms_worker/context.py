"""What every DMS handler is given: its dependencies, built once in ``__main__``, and
the per-message context; and the two things every handler module builds from them,
outgoing messages and parsed CSRs."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from contracts.envelope import CloudEvent, new_message
from contracts.message import Message
from contracts.names import Source
from contracts.pki import CSRRejected, load_csr
from dms_worker.ca_client import CAClient
from dms_worker.errors import BadCSR
from dms_worker.settings import Settings
from dms_worker.store import Store
from runtime.routes import Context

__all__ = ["SOURCE", "DmsContext", "DmsDeps", "csr", "message"]

SOURCE = Source.DMS


@dataclass(frozen=True, slots=True)
class DmsDeps:
    """What every DMS handler may use, built once in ``__main__``'s setup."""

    store: Store
    cas: CAClient  # the bus to the CA worker, with its cache of CA certificates
    dms_manager_ca: x509.Certificate
    settings: Settings


# Per message: the connection, the clock reading, the causing request, the deps.
DmsContext = Context[DmsDeps]


def message(
    ctx: DmsContext,
    subject: str,
    data: Message,
    *,
    id_: str | None = None,
) -> CloudEvent:
    return new_message(
        source=SOURCE,
        subject=subject,
        data=data,
        now=ctx.now,
        correlation_id=ctx.correlation_id,
        id_=id_,
    )


def csr(pem: str, *, check_signature: bool = True) -> x509.CertificateSigningRequest:
    try:
        return load_csr(pem.encode(), check_signature=check_signature)
    except CSRRejected as exc:
        raise BadCSR(str(exc)) from None
