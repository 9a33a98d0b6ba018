"""Each log line is written whole, so processes sharing stderr never interleave."""

from __future__ import annotations

import json
import os
import subprocess
import sys

WRITER = """
import structlog
from runtime.log import configure_logging
configure_logging("info", "json")
log = structlog.get_logger("test")
for i in range(400):
    log.info("line", writer={name!r}, i=i, padding="x" * 1500)
"""


def test_lines_of_two_processes_on_one_pipe_stay_whole() -> None:
    """Two processes log 400 long lines each onto one pipe: every line is JSON."""
    read, write = os.pipe()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(name=name)],
            stderr=write,
            stdout=subprocess.DEVNULL,
        )
        for name in ("a", "b")
    ]
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        output = stream.read()
    for writer in writers:
        assert 0 == writer.wait(30)
    lines = output.decode().splitlines()
    assert 800 == len(lines)
    parsed = [json.loads(line) for line in lines]
    assert {("a", 399), ("b", 399)} <= {(p["writer"], p["i"]) for p in parsed}
