"""Proof-of-possession linking (RFC 7030 §3.5): a CSR whose challengePassword is the
base64 of the TLS connection's tls-unique (RFC 5929 §3) was made for this connection,
so whoever holds the key is the client that authenticated.

Only TLS 1.2 has tls-unique; TLS 1.3 has none (RFC 8446 §C.5 drops the finished-message
binding, RFC 9266 defines tls-exporter instead, which EST clients do not send). So on
TLS 1.3, and behind a proxy (the TLS connection is the proxy's), a request is simply not
linked: a challengePassword there is not checked, and a DMS that requires linking refuses
it, saying it needs TLS 1.2. A challengePassword on a direct TLS 1.2 connection must
match, or the request is refused (403).

The gateway also keeps which labels some active DMS requiring linking may enroll with,
fed by ``dms.create`` / ``dms.update``, so that /csrattrs asks for challengePassword there.
"""

from __future__ import annotations

import base64
import hmac
import ssl

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from contracts.dms import DMSStatus, DMSView
from est_gateway.errors import Forbidden

__all__ = ["CHALLENGE_PASSWORD", "PopPolicy", "linked"]

CHALLENGE_PASSWORD = AttributeOID.CHALLENGE_PASSWORD


def linked(
    csr: x509.CertificateSigningRequest,
    ssl_object: ssl.SSLObject | None,
    *,
    proxied: bool,
) -> bool:
    """Whether the CSR is linked to this TLS 1.2 connection; a challengePassword that
    should be its tls-unique and is not is refused."""
    try:
        password = csr.attributes.get_attribute_for_oid(CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return False
    if proxied or ssl_object is None or ssl_object.version() != "TLSv1.2":
        return False
    binding = ssl_object.get_channel_binding("tls-unique")
    if binding is None:
        return False
    if not hmac.compare_digest(password.strip(), base64.b64encode(binding)):
        raise Forbidden(
            "the CSR's challengePassword is not this TLS connection's tls-unique"
            " (RFC 7030 §3.5): the CSR was not made for this connection"
        )
    return True


class PopPolicy:
    """Which labels some active DMS that requires linking may enroll with."""

    def __init__(self) -> None:
        self._dmss: dict[str, DMSView] = {}

    def learn(self, view: DMSView) -> None:
        """A DMS as its latest event shows it; events may repeat."""
        self._dmss[view.name] = view

    def required_for(self, label: str) -> bool:
        return any(
            view.require_pop
            and view.status is DMSStatus.ACTIVE
            and label in view.authorized_cas
            for view in self._dmss.values()
        )
