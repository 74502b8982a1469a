"""No Docker engine runs here, so the compose stack is checked by structure: every command exists, every
variable is a setting, every port agrees with Settings and with the proxy and Prometheus configs."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.config import Settings
from shared.web.app import KEEP_ALIVE_S

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {name: svc for name, svc in SERVICES.items() if svc.get("image") == "order-engine:latest"}
DEFAULTS = Settings(_env_file=None)


def test_every_engine_process_runs_from_the_one_image() -> None:
    assert set(APP_SERVICES) == {"setup", "ingress", "router", "executor", "notifier"}
    assert all(svc["build"] == "." for svc in APP_SERVICES.values())


@pytest.mark.parametrize("name", ["ingress", "router", "executor", "notifier"])
def test_each_service_command_is_a_runnable_module(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[:2] == ["python", "-m"]
    assert importlib.util.find_spec(f"{command[2]}.__main__") is not None
    assert f"{name}: python -m {name}" in (ROOT / "Procfile").read_text()
    assert f"COPY {name} ./{name}" in (ROOT / "Dockerfile").read_text()


def test_setup_runs_the_cli_commands_that_exist() -> None:
    script = " ".join(SERVICES["setup"]["command"])
    for sub in re.findall(r"shared\.cli (\S+)", script):
        assert sub in {"migrate", "topics", "schemas", "proxy-config"}


def test_every_environment_variable_is_a_setting() -> None:
    for name, svc in APP_SERVICES.items():
        for key in svc["environment"]:
            assert key.lower() in Settings.model_fields, f"{name}: {key} is not a Settings field"


def test_ports_agree_with_settings_proxy_and_prometheus() -> None:
    ingress, notifier = DEFAULTS.ingress_port, DEFAULTS.notifier_port
    assert str(ingress) in " ".join(SERVICES["ingress"]["healthcheck"]["test"])
    assert str(notifier) in " ".join(SERVICES["notifier"]["healthcheck"]["test"])
    assert SERVICES["proxy"]["ports"] == [f"{DEFAULTS.port}:{DEFAULTS.port}"]
    proxy = (ROOT / "infra/nginx.compose.conf").read_text()
    assert f"server ingress:{ingress};" in proxy and f"server notifier:{notifier};" in proxy
    assert f"listen {DEFAULTS.port};" in proxy
    prometheus = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    ports = {job["job_name"]: job["dns_sd_configs"][0]["port"] for job in prometheus["scrape_configs"]}
    assert ports == {
        "ingress": ingress,
        "notifier": notifier,
        "router": DEFAULTS.router_metrics_port,
        "executor": DEFAULTS.executor_metrics_port,
    }


def test_the_seeds_database_and_the_brokers_version() -> None:
    pg = SERVICES["postgres"]["environment"]
    assert DEFAULTS.database_url.endswith(
        f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@localhost:5432/{pg['POSTGRES_DB']}"
    )
    infra = (ROOT / "scripts/infra.py").read_text()
    version = re.search(r'KAFKA_VERSION = "([\d.]+)"', infra)
    assert version and SERVICES["kafka"]["image"] == f"apache/kafka:{version.group(1)}"


def test_dependencies_wait_for_health() -> None:
    for name in ("kafka", "postgres", "redis"):
        assert SERVICES["setup"]["depends_on"][name]["condition"] == "service_healthy"
        assert "healthcheck" in SERVICES[name]
    for name in ("ingress", "router", "executor", "notifier"):
        assert SERVICES[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("config", ["infra/nginx.conf.in", "infra/nginx.compose.conf"])
def test_the_proxy_lets_go_of_idle_upstream_connections_before_the_services_do(config: str) -> None:
    """Otherwise a POST can go out on a keep-alive connection the service is closing at that moment, and
    the proxy answers it 502 (seen in `make test`: eight POSTs of a burst after a quiet spell)."""
    text = (ROOT / config).read_text()
    upstream = re.search(r"upstream ingress \{(.*?)\}", text, re.S)
    assert upstream is not None
    timeout = re.search(r"keepalive_timeout (\d+)s;", upstream.group(1))
    assert timeout is not None, "nginx's default (60 s) would be longer than uvicorn's default (5 s)"
    assert int(timeout.group(1)) < KEEP_ALIVE_S


def test_the_image_carries_every_package_the_project_installs() -> None:
    """Kills a Dockerfile that lists packages by hand and misses one (the image's `orderflow` entry point was
    broken that way): every package setuptools finds is copied into the build stage."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for pattern in include["include"]:
        name = pattern.rstrip("*")
        assert f"COPY {name} ./{name}" in dockerfile, name


def test_the_build_context_leaves_out_what_is_local_to_one_machine() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".local", ".git"} <= set(ignored)
