"""The fault suite's report: the time from each fault's end to the next 200."""

from __future__ import annotations

import pytest

from tests.faults.test_faults import RECOVERY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(RECOVERY, [])
    if not rows:
        return
    terminalreporter.section("fault recovery (fault over -> next 200)")
    for fault, seconds, statuses in rows:
        shown = "no 200 after it" if seconds < 0 else f"{seconds:6.2f} s"
        terminalreporter.write_line(f"{fault:32} {shown}   responses {statuses}")
