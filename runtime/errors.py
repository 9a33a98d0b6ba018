"""Failures a handler may raise, each carrying the closed-set error code of its reply.

Failure
 ├── NotFound       not_found
 ├── Conflict       conflict     (exists already, or the state forbids it)
 ├── Invalid        invalid      (a malformed field, CSR, ...)
 ├── Unauthorized   unauthorized (no credential)
 ├── Forbidden      forbidden    (a credential, but not allowed)
 ├── Unavailable    unavailable  (cannot be done, and retrying will not change that:
 │                                a CA whose key is missing; answered at once)
 └── Transient      unavailable  (retry later: the work is tried again with backoff)

Workers subclass these in their own ``errors.py``; only the edges map them to AMQP or HTTP.
"""

from __future__ import annotations

from typing import ClassVar

from contracts.errors import ErrorCode

__all__ = [
    "Conflict",
    "Failure",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Transient",
    "Unauthorized",
    "Unavailable",
]


class Failure(Exception):  # noqa: N818 - the error codes name outcomes, not errors
    code: ClassVar[ErrorCode]


class NotFound(Failure):
    code = ErrorCode.NOT_FOUND


class Conflict(Failure):
    code = ErrorCode.CONFLICT


class Invalid(Failure):
    code = ErrorCode.INVALID


class Unauthorized(Failure):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(Failure):
    code = ErrorCode.FORBIDDEN


class Unavailable(Failure):
    code = ErrorCode.UNAVAILABLE


class Transient(Failure):
    code = ErrorCode.UNAVAILABLE
