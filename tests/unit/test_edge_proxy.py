"""The edge proxy's part in who a client is, checked by structure (no Docker engine runs here, and the local
proxy's behaviour is tests/integration/test_identity.py's): both nginx configurations overwrite
X-Forwarded-For with the peer they saw and keep /metrics private, and compose believes X-Forwarded-For from
the proxy's own fixed address only."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PROXIES = ["infra/nginx.conf.in", "infra/nginx.compose.conf"]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def directives(config: str) -> str:
    """The configuration without its comments."""
    return re.sub(r"#[^\n]*", "", (ROOT / config).read_text())


@pytest.mark.parametrize("config", PROXIES)
def test_the_proxy_names_the_peer_it_saw_never_what_the_client_sent(config: str) -> None:
    """Appending ($proxy_add_x_forwarded_for) keeps the client's own X-Forwarded-For in front of the peer,
    and a service that believes the proxy then believes the client: it could name any identity."""
    text = directives(config)
    assert re.findall(r"proxy_set_header\s+X-Forwarded-For\s+(\S+);", text) == ["$remote_addr"]
    assert "$proxy_add_x_forwarded_for" not in text and "$http_x_forwarded_for" not in text


@pytest.mark.parametrize("config", PROXIES)
def test_the_proxy_answers_metrics_itself_with_a_404_in_the_envelope(config: str) -> None:
    text = directives(config)
    block = re.search(r"location \^~ /metrics \{(.*?)\}", text, re.S)
    assert block is not None, "/metrics would be proxied to ingress"
    assert re.search(r"return 404 '\{\"error\":\"not_found\"", block.group(1))
    assert "proxy_pass" not in block.group(1)


def test_compose_trusts_the_proxys_fixed_address_and_nothing_else() -> None:
    services = COMPOSE["services"]
    proxy_address = ip_address(services["proxy"]["networks"]["default"]["ipv4_address"])
    pool = COMPOSE["networks"]["default"]["ipam"]["config"][0]
    assert proxy_address in ip_network(pool["subnet"])
    assert proxy_address not in ip_network(pool["ip_range"]), "another container could be given its address"
    for name in ("ingress", "notifier"):
        environment = services[name]["environment"]
        trusted = Settings(
            _env_file=None, trusted_proxies=environment["TRUSTED_PROXIES"]
        ).trusted_proxy_networks
        assert trusted == [ip_network(f"{proxy_address}/32")], name
        assert "networks" not in services[name]  # on the proxy's network (the default one)
