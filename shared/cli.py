"""`python -m shared.cli COMMAND`: the operational commands every deployment needs.

migrate        apply the SQL migrations to DATABASE_URL
topics         create the topic catalogue on KAFKA_BOOTSTRAP_SERVERS
proxy-config   render infra/nginx.conf.in for PORT / INGRESS_PORT / NOTIFIER_PORT into .local/
schemas        regenerate docs/schemas/*.json (the topics' public contracts) from the models
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from shared.config import Settings
from shared.contracts import write_schemas
from shared.db import migrate
from shared.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent


def upstream_servers(port: int, replicas: list[int]) -> str:
    """nginx `server` lines for a service's process on `port` and any replicas on this host."""
    return "\n".join(f"        server 127.0.0.1:{p};" for p in (port, *replicas))


def render_proxy_config(settings: Settings, local: Path) -> Path:
    run, logs = local / "run", local / "logs"
    for folder in (run, logs):
        folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "infra" / "nginx.conf.in").read_text()
    values = {
        "USER": "user root;" if os.geteuid() == 0 else "",
        "RUN": str(run),
        "LOGS": str(logs),
        "PORT": str(settings.port),
        "INGRESS_SERVERS": upstream_servers(settings.ingress_port, settings.ingress_replica_ports),
        "NOTIFIER_SERVERS": upstream_servers(settings.notifier_port, settings.notifier_replica_ports),
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    out = local / f"nginx-{settings.port}.conf"
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate")
    sub.add_parser("topics")
    sub.add_parser("schemas")
    proxy = sub.add_parser("proxy-config")
    proxy.add_argument("--local", type=Path, default=ROOT / ".local")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
    elif args.command == "topics":
        created = asyncio.run(ensure_topics(settings))
        print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    elif args.command == "schemas":
        for path in write_schemas():
            print(path.relative_to(ROOT))
    elif args.command == "proxy-config":
        print(render_proxy_config(settings, args.local))


if __name__ == "__main__":
    main()
