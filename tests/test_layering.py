"""The package layering (issue 12), read from the source with ``ast``; nothing is imported.

    contracts            pure vocabulary and PKI rules; the bottom of the graph
    runtime              the messaging kernel; contracts only
    engines              key and CA backends; contracts and runtime
    workers, gateway     ca_worker, dms_worker, ... each on its own; never another one
    lamassu_cli          reaches the workers through contracts and the bus (runtime)

A worker that needs what another worker knows asks it over the bus; a rule two of them
need moves down into contracts (``contracts.pki``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKERS = frozenset(
    {
        "alerts_worker",
        "ca_worker",
        "cloud_proxy",
        "device_worker",
        "dms_worker",
        "est_gateway",
        "va_worker",
    }
)
PACKAGES = frozenset({"contracts", "runtime", "engines", "lamassu_cli"} | WORKERS)

# What each package must not import (besides itself, always allowed).
FORBIDDEN: dict[str, frozenset[str]] = {
    "contracts": PACKAGES - {"contracts"},
    "runtime": PACKAGES - {"contracts", "runtime"},
    "engines": WORKERS | {"lamassu_cli"},
    "lamassu_cli": WORKERS | {"engines"},
    **{worker: WORKERS - {worker} | {"lamassu_cli"} for worker in WORKERS},
}

# The documented exceptions, as (importing module, imported package). ``lamassu engine
# check`` (lamassu_cli.engine) probes a crypto engine from the operator's machine
# before any worker runs, with the very settings and code the CA worker will use: it
# has to load engines itself, and nothing else in the CLI does.
EXCEPTIONS = frozenset({("lamassu_cli.engine", "engines")})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every absolute module name ``path`` imports, at any depth (functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _violations() -> list[str]:
    found = []
    for package in sorted(PACKAGES):
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = _module_name(path)
            for imported in _imports(path):
                top = imported.partition(".")[0]
                if top in FORBIDDEN[package] and (importer, top) not in EXCEPTIONS:
                    found.append(f"{importer} imports {imported}")
    return found


def test_packages_respect_the_layering() -> None:
    """No package imports a package above it or beside it (see the module docstring)."""
    violations = _violations()

    assert [] == violations, "layering violations:\n" + "\n".join(violations)


def test_every_package_is_in_the_table() -> None:
    """A new top-level package is placed in the layering before it can import anything."""
    on_disk = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in {"tests", "bench"}
    }

    assert PACKAGES == on_disk
