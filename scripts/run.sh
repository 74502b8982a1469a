#!/usr/bin/env bash
# `make run`: infrastructure up, schema and topics in place, then every service of the Procfile under
# supervisord, which restarts any that exits (with backoff, saying why). Ctrl-C stops the services and then
# the infrastructure that this run started (not what it reused).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

session=".local/run/session-$$"
mkdir -p .local/run
python scripts/infra.py up --record "$session"
trap 'python scripts/infra.py down --record "$session"' EXIT
python -m shared.runtime.cli migrate
python -m shared.runtime.cli topics
PROXY_CONFIG="$(python -m shared.runtime.cli proxy-config)"
PROMETHEUS_CONFIG="$(python -m shared.runtime.cli prometheus-config)"
export PROXY_CONFIG PROMETHEUS_CONFIG
port="$(python -c 'from shared.runtime.config import Settings; print(Settings().port)')"
SUPERVISOR_CONFIG="$(python -m shared.runtime.cli supervisor-config)"
echo "[run] POST and WebSocket: http://127.0.0.1:${port}/api/orders/execute  (Ctrl-C stops everything)"
echo "[run] console: http://127.0.0.1:${port}/   Prometheus: http://127.0.0.1:9090/ (README: useful queries)"
echo "[run] services: supervisorctl -c ${SUPERVISOR_CONFIG} status | restart NAME | tail -f NAME"
supervisord -c "$SUPERVISOR_CONFIG"
