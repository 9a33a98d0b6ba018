"""The PEM text of the ``certificate_pem`` fields (RFC 7468 §2), from stored DER.

Pure encoding: base64 in 64-column lines between the labels. The DER was parsed and
checked when it was stored, so it is not parsed again for every view.
"""

from __future__ import annotations

import base64

__all__ = ["certificate_pem"]


def certificate_pem(der: bytes) -> str:
    text = base64.b64encode(der).decode()
    lines = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"
