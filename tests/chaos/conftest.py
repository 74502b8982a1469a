"""Prints the chaos table at the end of the session (it shows in CI's log, whatever pytest's verbosity)."""

from __future__ import annotations

import pytest

from tests.chaos.checker import HEADER, RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("chaos: invariant violations per scenario (the bar: zero in lost..misreported)")
    terminalreporter.write_line(HEADER)
    for findings in RESULTS:
        terminalreporter.write_line(findings.row())
        if findings.violations:
            terminalreporter.write_line(f"    {findings.details()}")
        terminalreporter.write_line(f"    slowest: {'; '.join(findings.slowest)}")
