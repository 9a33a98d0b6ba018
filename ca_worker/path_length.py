"""RFC 5280 §4.2.1.9 pathLenConstraint when creating a CA below another, pure."""

from __future__ import annotations

from cryptography import x509

from ca_worker.errors import PathLengthExceeded
from contracts.ca import CAView

__all__ = ["path_length_below"]


def path_length_below(parent: CAView, asked: int | None) -> int | None:
    """RFC 5280 §4.2.1.9: below a parent with pathLenConstraint n, at most n - 1 (and
    n - 1 when none is asked); below 0, no CA at all."""
    certificate = x509.load_pem_x509_certificate(parent.certificate_pem.encode())
    limit = certificate.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value.path_length
    if limit is None:
        return asked
    if limit == 0:
        raise PathLengthExceeded(
            f"CA {parent.name!r} has path length 0: no CA may be created below it"
        )
    if asked is None:
        return limit - 1
    if asked > limit - 1:
        raise PathLengthExceeded(
            f"CA {parent.name!r} has path length {limit}: a CA below it takes at most"
            f" {limit - 1}, not {asked}"
        )
    return asked
