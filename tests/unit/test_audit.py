"""`make audit`'s verdict on pip-audit's report: a vulnerability fails, a service that knows none of our
packages is a skip that says so, a clean audit passes."""

from __future__ import annotations

from tests.fixtures.stack import load_script

audit = load_script("audit")


def test_a_known_vulnerability_fails_and_names_the_fix() -> None:
    report = {
        "dependencies": [
            {"name": "aiohttp", "version": "3.0", "vulns": [{"id": "GHSA-x", "fix_versions": ["3.9.4"]}]},
            {"name": "orjson", "version": "3.10", "vulns": []},
        ]
    }
    code, lines = audit.verdict(report)
    assert code == 1
    assert lines == [
        "aiohttp 3.0: GHSA-x (fixed in 3.9.4)",
        "audit: 2 packages checked, 0 unknown to the service, 1 vulnerable",
    ]


def test_a_service_that_knows_none_of_our_packages_is_a_skip_not_a_pass() -> None:
    report = {"dependencies": [{"name": "orjson", "skip_reason": "Dependency not found on PyPI"}]}
    code, lines = audit.verdict(report)
    assert code == 0 and lines[0].startswith("audit skipped:")


def test_a_clean_audit_passes() -> None:
    code, lines = audit.verdict({"dependencies": [{"name": "orjson", "version": "3.10", "vulns": []}]})
    assert (code, lines) == (0, ["audit: 1 packages checked, 0 unknown to the service, 0 vulnerable"])
