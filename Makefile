# The two commands: `make run` (the whole system) and `make test` (the whole suite). Both bootstrap what is
# missing: the Python environment, Kafka's jars (Maven Central), PostgreSQL, Redis, nginx and Prometheus
# (apt-get); `make test` also Chromium (apt-get) and the Node tools that check the contracts (npm).
# Debian's own Python where there is one: a virtualenv made from it can be run by `make run`'s unprivileged
# service user (shared/runtime/cli.py), one made from a Python installed under /root (pyenv's) cannot.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test unit integration bench bench-quick lint audit format bootstrap node-tools infra-up infra-down infra-status migrate topics clean

run: bootstrap
	scripts/run.sh

# Every stack a test starts is isolated (its own database, topic prefix, Redis prefix and ports), so most
# modules run on TEST_WORKERS pytest-xdist processes, a module's tests on one worker. The modules marked
# `serial` then run alone: they time a burst of orders or kill processes, and on two cores a second worker
# starved them. The chaos suite runs with them, as it stops and restarts the shared Postgres.
# TEST_WORKERS=1 runs the first part in one process.
TEST_WORKERS ?= 2

test: infra-up node-tools
	$(VENV)/bin/pytest -m "not serial and not chaos" $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
	$(VENV)/bin/pytest -m "serial or chaos"

unit: bootstrap
	$(VENV)/bin/pytest tests/unit

integration: infra-up node-tools
	$(VENV)/bin/pytest -m integration

# The benchmark (docs/performance.md): every scenario, a table on stdout and a JSON file under .local/bench/.
# Flags pass through ARGS, e.g. `make bench ARGS="--scenario b --rate 300"`.
bench: infra-up
	$(PY) -m benchmarks.bench $(ARGS)

bench-quick: infra-up
	$(PY) -m benchmarks.bench --quick $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# pip-audit over the pinned dependencies; skips (and says so) where the vulnerability service cannot answer.
audit: bootstrap
	$(PY) scripts/audit.py

format: bootstrap
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bootstrap: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The Node tools CI checks contracts with (tools/node: the AsyncAPI parser, newman), installed exactly as
# locked; again only when package-lock.json changes (npm ci writes node_modules/.package-lock.json).
NODE_TOOLS := tools/node

node-tools: $(NODE_TOOLS)/node_modules/.package-lock.json

$(NODE_TOOLS)/node_modules/.package-lock.json: $(NODE_TOOLS)/package-lock.json $(NODE_TOOLS)/package.json
	npm ci --no-audit --no-fund --prefix $(NODE_TOOLS)
	touch $@

infra-up: bootstrap
	$(PY) scripts/infra.py up

infra-down: bootstrap
	$(PY) scripts/infra.py down

infra-status: bootstrap
	$(PY) scripts/infra.py status

migrate: bootstrap
	$(PY) -m shared.runtime.cli migrate

topics: bootstrap
	$(PY) -m shared.runtime.cli topics

clean: infra-down
	rm -rf .local
