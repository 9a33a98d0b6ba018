"""The closed set of error codes and the reply every command and query answers with."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ErrorBody", "ErrorCode", "Reply", "first_error"]


class ErrorCode(enum.StrEnum):
    """Why a request failed; closed set (DESIGN §2)."""

    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"


class ErrorBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    code: ErrorCode
    message: str = Field(description="One line, for a human.")


class Reply(BaseModel):
    """``{ok, result}`` or ``{ok: false, error: {code, message}}``."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    ok: bool
    result: dict[str, Any] | list[dict[str, Any]] | None = None
    error: ErrorBody | None = None

    @classmethod
    def success(cls, result: BaseModel | None) -> Reply:
        return cls(
            ok=True, result=None if result is None else result.model_dump(mode="json")
        )

    @classmethod
    def failure(cls, code: ErrorCode, message: str) -> Reply:
        return cls(ok=False, error=ErrorBody(code=code, message=message))


def first_error(exc: ValidationError) -> str:
    """One line from a pydantic error: the field path and what is wrong with it."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "message"
    return f"{where}: {err['msg']}"
