"""Shared fixtures. Integration tests need the services of `scripts/infra.py up` (`make test` starts them).
The list of the browser tests' screenshots is printed from here: under pytest-xdist only the controller
writes the summary, and it loads this conftest, not the test folders' own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.runtime.config import Settings
from shared.runtime.health import check_kafka, check_postgres_url, check_redis_url
from tests.fixtures.stack import Stack, running_stack


@pytest.fixture(scope="session")
async def infrastructure() -> Settings:
    settings = Settings()
    for name, probe in (
        ("Kafka", check_kafka(settings.kafka_servers)),
        ("PostgreSQL", check_postgres_url(settings.database_url)),
        ("Redis", check_redis_url(settings.redis_url)),
    ):
        try:
            await probe
        except Exception as exc:
            pytest.fail(f"{name} is not reachable ({exc!r}): run `make infra-up` (or `make test`) first")
    return settings


@pytest.fixture(scope="session")
async def stack(infrastructure: Settings) -> AsyncIterator[Stack]:
    """Every service and the proxy as separate processes, shared by the session's integration tests."""
    async with running_stack() as started:
        yield started


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
