"""Errors raised by crypto engines.

EngineError
 ├── KeyNotFound          the key id names no key in this engine
 ├── KeyExists            the name is taken already (a Vault PKI CA mount)
 ├── EngineUnavailable    the backend cannot be reached right now (retry later)
 └── EngineMisconfigured  a setting is wrong; the process should stop at start
"""

from __future__ import annotations

__all__ = [
    "EngineError",
    "EngineMisconfigured",
    "EngineUnavailable",
    "KeyExists",
    "KeyNotFound",
]


class EngineError(Exception):
    """Base of every engine failure."""


class KeyNotFound(EngineError):  # noqa: N818 - reads as a fact, like httpx's names
    """No key with that id exists in the engine."""


class KeyExists(EngineError):  # noqa: N818
    """A key or CA with that name exists already."""


class EngineUnavailable(EngineError):  # noqa: N818
    """The backend is down or unreachable; the operation may succeed later."""


class EngineMisconfigured(EngineError):  # noqa: N818
    """A configuration value is wrong; the message names the setting."""
