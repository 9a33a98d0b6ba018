"""Failures of the validation authority, each a subclass of the shared tree in
``runtime.errors``.

Failure
 └── NotFound ── CRLNotFound
"""

from __future__ import annotations

from runtime.errors import NotFound

__all__ = ["CRLNotFound"]


class CRLNotFound(NotFound):
    def __init__(self, ca: str, *, delta: bool) -> None:
        kind = "delta CRL" if delta else "CRL"
        super().__init__(f"no {kind} for CA {ca!r} (unknown CA, or none signed yet)")
