"""HTTP-level failures of the EST gateway; each carries its status and a one-line reason.

EstError(status, reason)
 ├── BadRequest            400  malformed body, CSR, path part or header
 ├── Unauthorized          401  no credential; carries the WWW-Authenticate value
 ├── Forbidden             403  a credential, but not allowed
 ├── NotFound              404  unknown label or operation
 ├── SlowRequest           408  the body did not arrive in time
 ├── PayloadTooLarge       413
 ├── UnsupportedMediaType  415
 └── Unavailable           503  the broker or the pipeline is away; carries Retry-After

Only the gateway's error middleware turns these into responses (DESIGN §3: never a bare
500 for a client mistake).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "EstError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "SlowRequest",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
]


class EstError(Exception):
    """A failure the gateway answers with ``status`` and ``reason`` as the body."""

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        # One line, always: the reason may end up in a log line or a response body, and a
        # newline taken from a client's input must never split either.
        self.status = status
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)


class _StatusError(EstError):
    default_status: ClassVar[int]

    def __init__(self, reason: str) -> None:
        super().__init__(self.default_status, reason)


class BadRequest(_StatusError):  # noqa: N818 - named for the status, as HTTP does
    default_status = 400


class Unauthorized(EstError):  # noqa: N818
    """No credential was presented; RFC 9110 §11.6.1 requires a challenge."""

    def __init__(self, reason: str, www_authenticate: str) -> None:
        super().__init__(401, reason)
        self.www_authenticate = www_authenticate


class Forbidden(_StatusError):  # noqa: N818
    default_status = 403


class NotFound(_StatusError):  # noqa: N818
    default_status = 404


class PayloadTooLarge(_StatusError):  # noqa: N818
    default_status = 413


class SlowRequest(_StatusError):  # noqa: N818
    """The body did not arrive within EST_READ_TIMEOUT_SECONDS (RFC 9110 §15.5.9)."""

    default_status = 408


class UnsupportedMediaType(_StatusError):  # noqa: N818
    default_status = 415


class Unavailable(EstError):  # noqa: N818
    """The pipeline cannot be reached; ``retry_after`` seconds feeds ``Retry-After``."""

    def __init__(self, reason: str, retry_after: int | None = None) -> None:
        super().__init__(503, reason)
        self.retry_after = retry_after
