"""The credentials directory: one ``<role>.env`` file per identity, mode 0600.

``KEY=value`` lines, as systemd's ``EnvironmentFile=`` and compose's ``env_file`` read
them; ``lamassu bus setup`` writes the AMQP lines, ``lamassu db setup`` the PostgreSQL
ones, and ``lamassu up`` lays a service's file over its environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["env_file", "read_env", "write_env"]


def env_file(directory: Path, role: str) -> Path:
    return directory / f"{role}.env"


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (systemd ``EnvironmentFile=`` and compose ``env_file``)."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            found[key.strip()] = value.strip()
    return found


def write_env(path: Path, values: Mapping[str, str]) -> None:
    """Write ``values`` over what the file holds, created with mode 0600 (secrets)."""
    merged = read_env(path) | dict(values)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in merged.items())
    path.chmod(0o600)  # a file that existed keeps its mode through O_CREAT
