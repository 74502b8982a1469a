"""Where the browser tests' screenshots went, listed at the end of the run."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots the console tests recorded (record_property "screenshot")."""
    paths = {
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", ())
        if name == "screenshot"
    }
    if paths:
        terminalreporter.write_sep("-", "console screenshots")
        for path in sorted(paths):
            terminalreporter.write_line(str(path))
