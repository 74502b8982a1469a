"""`python -m shared.runtime.cli COMMAND`: the operational commands every deployment needs.

migrate        apply the SQL migrations to DATABASE_URL
topics         create the topic catalogue on KAFKA_BOOTSTRAP_SERVERS
proxy-config   render infra/nginx.conf.in for PORT / INGRESS_PORT / NOTIFIER_PORT into .local/
prometheus-config  render a Prometheus configuration scraping every process of this host into .local/
supervisor-config  render the Procfile as a supervisord configuration into .local/ (what `make run` runs)
schemas        regenerate docs/schemas/*.json and docs/asyncapi.json (the topics' contracts) from the models
api-key NAME   print a new API key for principal NAME, and the line that admits it in the API_KEYS file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from shared.messaging.contracts import write_asyncapi, write_schemas
from shared.messaging.topics import ensure_topics
from shared.runtime.config import Settings
from shared.runtime.supervise import EVENTS as SUPERVISE_EVENTS
from shared.store.db import migrate
from shared.web.apikeys import key_line, new_key

ROOT = Path(__file__).resolve().parents[2]

# The unprivileged system user that the services, Prometheus and nginx's workers run as when `make run` is
# started by root (scripts/infra_install.py adds it): only installing needs root, so nothing else keeps it.
SERVICE_USER = "order-engine"
# Procfile programs that drop root themselves: nginx's master reads its configuration and opens its logs as
# root, and its workers, which talk to clients, run as SERVICE_USER (render_proxy_config's `user`).
DROP_ROOT_THEMSELVES = frozenset({"proxy"})


def service_user(*needed: Path) -> str | None:
    """SERVICE_USER, if this process is root, the user exists and it can read every path of `needed` (the
    virtualenv's Python and what it links to, the code, the folders it uses); else None: the programs then
    run as this process does."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    for path in needed:
        readable = subprocess.run(["runuser", "-u", SERVICE_USER, "--", "test", "-r", str(path)], check=False)
        if readable.returncode != 0:
            return None
    return SERVICE_USER


def upstream_servers(port: int, replicas: list[int]) -> str:
    """nginx `server` lines for a service's process on `port` and any replicas on this host."""
    return "\n".join(f"        server 127.0.0.1:{p};" for p in (port, *replicas))


def render_proxy_config(settings: Settings, local: Path) -> Path:
    run, logs = local / "run", local / "logs"
    for folder in (run, logs):
        folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "infra" / "nginx.conf.in").read_text()
    worker = service_user(run)
    values = {
        # nginx's master binds and reads as root; its workers, which talk to clients, run as `worker`
        "USER": f"user {worker};" if worker else ("user root;" if os.geteuid() == 0 else ""),
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


def scrape_targets(settings: Settings) -> dict[str, list[str]]:
    """Every process's /metrics on this host, by service (a replica of ingress or notifier too)."""
    return {
        "ingress": [f"127.0.0.1:{p}" for p in (settings.ingress_port, *settings.ingress_replica_ports)],
        "notifier": [f"127.0.0.1:{p}" for p in (settings.notifier_port, *settings.notifier_replica_ports)],
        "router": [f"127.0.0.1:{settings.router_metrics_port}"],
        "executor": [f"127.0.0.1:{settings.executor_metrics_port}"],
    }


def render_prometheus_config(settings: Settings, local: Path, *, scrape_interval: str = "5s") -> Path:
    """A Prometheus configuration (JSON, which Prometheus reads as the YAML it is) scraping every process
    of `make run`; the Procfile's `prometheus` serves it at 127.0.0.1:9090."""
    local.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in scrape_targets(settings).items()
        ],
    }
    out = local / "prometheus.yml"
    out.write_text(json.dumps(config, indent=2) + "\n")
    return out


# A service that dies after running STARTSECS is restarted at once; one that dies sooner is retried after 1 s,
# 2 s, 3 s ... (supervisord's backoff), up to START_RETRIES times in a row, and then goes FATAL, where
# supervisord would leave it for good. Our event listener (shared/runtime/supervise.py) starts a FATAL
# service again after a delay that doubles up to a ceiling (60 s), for as long as it takes.
STARTSECS = 5
START_RETRIES = 3
STOP_WAIT_S = 20  # past SHUTDOWN_GRACE_MS (15 s): in-flight swaps finish before a SIGKILL


def procfile_programs(procfile: Path) -> dict[str, str]:
    """`name: command` lines of a Procfile, in order."""
    programs: dict[str, str] = {}
    for line in procfile.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            programs[name.strip()] = command.strip()
    return programs


def render_supervisor_config(procfile: Path, local: Path, only: Iterable[str] | None = None) -> Path:
    """A supervisord configuration that runs the Procfile's programs (or `only` those) in the foreground,
    restarts whichever exits (with backoff, logging why; never giving up: the `supervise` event listener
    starts a FATAL one again), and stops them all on SIGINT/SIGTERM. Each program's output goes straight to
    the terminal; `$VARS` in commands are expanded now, from this environment (supervisord does not run a
    shell)."""
    run, logs = local / "run", local / "logs"
    for folder in (run, logs):
        folder.mkdir(parents=True, exist_ok=True)
    wanted = set(only) if only is not None else None
    user = service_user(ROOT / ".venv" / "bin" / "python", ROOT / "shared" / "__init__.py")
    if user is None and os.geteuid() == 0:
        print(
            f"[run] the services run as root: {SERVICE_USER} cannot run {ROOT / '.venv'} (a checkout other"
            " users may not enter, or a virtualenv of a Python under /root: see the Makefile's PYTHON)",
            file=sys.stderr,
        )
    if user is not None and (wanted is None or "prometheus" in wanted):
        # What a program writes becomes its own: Prometheus's data (the Procfile's --storage.tsdb.path), which
        # an earlier run as root may have left. supervisord and its event listener stay root's.
        data = ROOT / ".local" / "prometheus"
        data.mkdir(parents=True, exist_ok=True)
        for path in (data, *data.rglob("*")):
            shutil.chown(path, user)
    sections = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={run / 'supervisord.pid'}",
        f"childlogdir={logs}",
        "",
        "[unix_http_server]",
        f"file={run / 'supervisor.sock'}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{run / 'supervisor.sock'}",
        "",
        "[eventlistener:supervise]",
        "command=python -m shared.runtime.supervise",
        f"directory={ROOT}",
        f"events={','.join(SUPERVISE_EVENTS)}",
        "autorestart=true",
        "stderr_logfile=/dev/stdout",  # its stdout is supervisord's protocol channel
        "stderr_logfile_maxbytes=0",
    ]
    for name, command in procfile_programs(procfile).items():
        if wanted is not None and name not in wanted:
            continue
        argv = [os.path.expandvars(arg) for arg in shlex.split(command)]
        sections += [
            "",
            f"[program:{name}]",
            f"command={shlex.join(argv).replace('%', '%%')}",
            f"directory={ROOT}",
            *([f"user={user}"] if user is not None and name not in DROP_ROOT_THEMSELVES else []),
            "autorestart=true",
            f"startsecs={STARTSECS}",
            f"startretries={START_RETRIES}",
            f"stopwaitsecs={STOP_WAIT_S}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            "stdout_logfile=/dev/stdout",
            "stdout_logfile_maxbytes=0",
        ]
    out = local / "supervisord.conf"
    out.write_text("\n".join(sections) + "\n")
    return out


def print_api_key(parser: argparse.ArgumentParser, principal: str) -> None:
    """A fresh key, shown once: only its hash goes in the API_KEYS file, so a lost key is replaced, not
    recovered (a principal may hold several keys while its clients move to the new one)."""
    key = new_key()
    try:
        line = key_line(principal, key)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"key (shown once; give it to {principal}): {key}")
    print(f"line to add to the API_KEYS file:  {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.runtime.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate")
    sub.add_parser("topics")
    sub.add_parser("schemas")
    proxy = sub.add_parser("proxy-config")
    proxy.add_argument("--local", type=Path, default=ROOT / ".local")
    prometheus = sub.add_parser("prometheus-config")
    prometheus.add_argument("--local", type=Path, default=ROOT / ".local")
    api_key = sub.add_parser("api-key", help="a new API key and its line for the API_KEYS file")
    api_key.add_argument("principal", help="who holds the key: a letter, then letters, digits, . _ -")
    supervisor = sub.add_parser("supervisor-config")
    supervisor.add_argument("--local", type=Path, default=ROOT / ".local")
    args = parser.parse_args(argv)
    if args.command == "api-key":
        print_api_key(parser, args.principal)
        return
    settings = Settings()
    if args.command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
    elif args.command == "topics":
        created = asyncio.run(ensure_topics(settings))
        print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    elif args.command == "schemas":
        for path in [*write_schemas(), write_asyncapi()]:
            print(path.relative_to(ROOT))
    elif args.command == "proxy-config":
        print(render_proxy_config(settings, args.local))
    elif args.command == "prometheus-config":
        print(render_prometheus_config(settings, args.local))
    elif args.command == "supervisor-config":
        print(render_supervisor_config(ROOT / "Procfile", args.local))


if __name__ == "__main__":
    main()
