"""structlog configured once per process: JSON when stderr is not a tty, secrets redacted.

Context (message id, type, correlation id) is bound per message with contextvars by the
dispatcher, so each handler's log line carries it without passing a logger around.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact_secrets"]

_SECRET_KEY = re.compile(r"pin|token|password|secret|private_key", re.IGNORECASE)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of any key that names a secret (rule: never log PINs or keys)."""
    for key in event_dict:
        if _SECRET_KEY.search(key):
            event_dict[key] = "**redacted**"
    return event_dict


def configure_logging(
    level: str = "info", fmt: str = "auto", *, cache: bool = True
) -> None:
    """Set up structlog for this process; call once, from ``__main__``."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # Libraries (aio-pika, asyncpg) log through the standard library: same format, same level.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            # No local variables in tracebacks: they may hold PINs, tokens or keys.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
            if as_json
            else _keep,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line (``print`` makes two: the text, then the newline), so the
        # lines of processes sharing stderr (``lamassu up``) never interleave: a
        # write of up to PIPE_BUF bytes to a pipe is atomic (POSIX write(2)).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache,
    )


def _keep(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event_dict
