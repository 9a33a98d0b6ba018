"""What the CLI says when an argument is refused: in the operator's words.

The contracts validate every request before it is sent; their errors are written
for programmers (``String should match pattern '^[A-Za-z0-9]…'``, ``Input should be
less than or equal to 3650``). Here each becomes one line that names the option as
typed and says what a valid value is.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

__all__ = ["explain", "explain_setting", "option_name"]

# Contract fields as the command line spells them.
_OPTIONS = {
    "about_to_expire_days": "--about-to-expire",
    "validity_days": "--validity",
    "authorized_cas": "--authorized-ca",
    "csr_pem": "--csr",
    "name": "name",
    "parent": "--parent",
    "ca": "--ca",
    "dms": "--dms",
    "slots": "--slot",
    "limit": "--limit",
    "shards": "--shards",
    "key_type": "--key-type",
    "id": "id",
    "serial": "serial",
}

_NAME_RULE = (
    "a name is 1 to 64 letters, digits, '.', '_' or '-', "
    "and starts with a letter or a digit"
)
# What a value matching each contract pattern looks like.
_PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$": _NAME_RULE,
    r"^[A-Za-z0-9._\-]*$": "use only letters, digits, '.', '_' and '-'",
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$": (
        "a sweep id is a UUID, as `lamassu sweep run` prints it"
    ),
}
_DAY_FIELDS = {"about_to_expire_days", "validity_days"}


def option_name(loc: tuple[int | str, ...]) -> str:
    """The option a field path came from (``authorized_cas.0`` -> ``--authorized-ca``)."""
    field = next((str(p) for p in loc if isinstance(p, str)), "value")
    return _OPTIONS.get(field, field.replace("_", "-"))


def explain_setting(exc: ValidationError) -> str:
    """The first error of a settings class as ``VARIABLE: what is wrong``."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error.get("loc", ()))
    variable = str(loc[0]).upper() if loc else "settings"
    return f"{variable}: {_what(error, '')}"


def explain(exc: ValidationError) -> str:
    """The first error of ``exc`` as one human line."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error.get("loc", ()))
    field = next((str(p) for p in loc if isinstance(p, str)), "")
    return f"{option_name(loc)}: {_what(error, field)}"


# Pydantic's bound errors: the context key holding the bound, and the words.
_BOUNDS = {
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
}
_FIXED = {
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
}
# Pydantic's own phrasing, never shown: a message with it falls back to a plain one.
_PYDANTIC = ("Input should", "String should", "Value error", "Field required", "^")


def _what(error: Any, field: str) -> str:  # noqa: PLR0911 - one answer per kind
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    unit = " days" if field in _DAY_FIELDS else ""
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        if kind == "greater_than" and ctx.get(key) == 0:
            return "must be positive"
        return f"{words} {_days(ctx.get(key), unit)}"
    if kind == "string_pattern_mismatch":
        rule = _PATTERNS.get(str(ctx.get("pattern")), "it is not in the valid form")
        return f"{_shown(error.get('input'))} is not valid: {rule}"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind in {"enum", "literal_error"}:
        return f"must be one of: {ctx.get('expected', '?')}".replace("'", "")
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])  # a validator's own one-line reason
    message = str(error.get("msg", ""))
    if kind in _FIXED or not message or any(p in message for p in _PYDANTIC):
        return _FIXED.get(kind, "is required" if kind == "missing" else "is not valid")
    return message


def _days(value: object, unit: str) -> str:
    if unit and isinstance(value, int) and value % 365 == 0 and value:
        return f"{value} days ({value // 365}y)"
    return f"{value}{unit}"


def _shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")
