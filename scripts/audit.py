"""`make audit`: pip-audit over the installed, pinned dependencies.

Fails on a known vulnerability. Where the vulnerability service cannot answer for our packages (these build
machines reach only a package mirror, whose JSON API knows none of them), it says so and skips instead of
failing: an audit that could not look is not a pass, and not a build failure either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

AUDIT = [
    str(Path(sys.executable).with_name("pip-audit")),
    "--vulnerability-service",
    "pypi",
    "--progress-spinner",
    "off",
    "--format",
    "json",
]


def verdict(report: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit code and the lines to print for a pip-audit JSON report."""
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        example = f" (e.g. {dependencies[0]['skip_reason']})" if dependencies else ""
        return 0, [f"audit skipped: the service knows none of our {len(dependencies)} packages{example}"]
    lines = []
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            lines.append(f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})")
    summary = f"{len(audited)} packages checked, {len(dependencies) - len(audited)} unknown to the service"
    lines.append(f"audit: {summary}, {len(vulnerable)} vulnerable")
    return (1 if vulnerable else 0), lines


def main() -> int:
    done = subprocess.run(AUDIT, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        reason = (done.stderr.strip().splitlines() or ["no report"])[-1]
        print(f"audit skipped: the vulnerability service did not answer ({reason})")
        return 0
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
