"""`python -m analytics [--group NAME] [--json]`: a report over everything on `order.status` so far."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from analytics.report import build_report, render
from shared.messaging.topics import ANALYTICS_GROUP
from shared.runtime.config import Settings
from shared.runtime.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m analytics", description=__doc__)
    parser.add_argument("--group", default=ANALYTICS_GROUP, help="consumer group (prefixed)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    settings = Settings()
    configure_logging("analytics", settings.log_level, sys.stderr.buffer)  # stdout is the report's
    summary = asyncio.run(build_report(settings, args.group)).summary()
    sys.stdout.write((orjson.dumps(summary).decode() if args.json else render(summary)) + "\n")


if __name__ == "__main__":
    main()
