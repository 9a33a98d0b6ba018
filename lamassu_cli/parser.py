"""The CLI's argument parser and its one way of failing.

With ``--json`` anywhere on the command line, every failure (a usage mistake, a
refusal, an unreachable broker) is one JSON object on stdout,
``{"ok": false, "error": {"code": ..., "message": ...}}``, with the same exit status
as the human form (``error: ...`` on stderr): 1 refused, 2 usage, 3 unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

__all__ = ["Parser", "UsageError", "fail"]


class UsageError(Exception):
    """A command line argparse refused; ``usage`` is the parser's usage line."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """An ArgumentParser (and subcommand parsers) that raises instead of exiting,
    so that ``main`` reports usage errors like every other failure."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", self.format_usage())


def fail(
    as_json: bool,
    code: str,
    message: str,
    exit_code: int,
    *,
    human: str | None = None,
) -> int:
    """Report a failure; returns ``exit_code``."""
    if as_json:
        error = {"code": code, "message": message}
        print(json.dumps({"ok": False, "error": error}))
    else:
        print(f"error: {human or f'{code}: {message}'}", file=sys.stderr)
    return exit_code
