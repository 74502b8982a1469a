"""shared/http.py pieces that need no server: the client's address behind (un)trusted proxies."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from starlette.requests import Request

from shared.http import client_address

TRUSTED = [ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")]


def request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("203.0.113.9", None, "203.0.113.9"),  # no proxy
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer's X-Forwarded-For is ignored
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),  # the local proxy says who the client is
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # what the client prepended is not believed
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # a chain of trusted proxies
        ("127.0.0.1", None, "127.0.0.1"),  # the proxy itself
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "10.0.0.5", "10.0.0.5"),  # only proxies in the chain: the first hop
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(request(peer, forwarded), TRUSTED) == expected
