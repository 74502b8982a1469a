"""The client's identity (shared/web/edge.py `client_address`, used by ingress and the notifier alike): one
canonical spelling per address, and an X-Forwarded-For entry that cannot be an identity (too long, or an IPv6
scope id) refused as a 400 naming the header rather than stored and indexed with orders."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from starlette.requests import Request

from shared.domain.errors import InvalidBody
from shared.web.edge import LONGEST_IDENTITY, client_address

TRUSTED = [ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")]
HOSTILE = "fe80::1%" + "x" * 8000  # ipaddress accepts a scope id of any length


def request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("127.0.0.1", "0:0::1", "::1"),
        ("127.0.0.1", "2001:DB8:0:0::0001", "2001:db8::1"),
        ("127.0.0.1", "::ffff:198.51.100.1", "198.51.100.1"),  # IPv4-mapped: the IPv4 client
        ("127.0.0.1", "0000:0000:0000:0000:0000:ffff:c633:6401", "198.51.100.1"),
        ("::ffff:203.0.113.9", None, "203.0.113.9"),  # a dual-stack socket's IPv4 peer
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),  # ... which is the trusted local proxy
        ("fe80::1%eth0", None, "fe80::1%eth0"),  # a peer's scope id comes from the OS: kept
    ],
)
def test_one_address_is_one_identity_however_it_is_spelt(
    peer: str, forwarded: str | None, expected: str
) -> None:
    """Bug caught: spellings of one address as distinct identities (each its own rate-limit bucket, key scope
    and order list). Mutant killed: `canonical_address` returning the text as given."""
    assert client_address(request(peer, forwarded), TRUSTED) == expected


@pytest.mark.parametrize(
    "forwarded",
    [
        HOSTILE,
        "fe80::1%eth0",  # short, but a scope id names an interface of the proxy's host, not a client
        f"{HOSTILE}, 10.0.0.7",  # behind a trusted proxy of the chain: still the client's entry
        "x" * (LONGEST_IDENTITY + 1),  # too long to be an address, and to be stored
    ],
)
def test_an_entry_that_cannot_be_an_identity_is_a_400_naming_the_header(forwarded: str) -> None:
    """Bug caught: an ~8 KB identity reaching the orders_by_client index and the idempotency_keys key, whose
    btree row limit fails the whole group commit. Mutants killed: no length bound (the 8 KB value is
    returned), no scope check (`fe80::1%eth0` is returned)."""
    with pytest.raises(InvalidBody) as refused:
        client_address(request("127.0.0.1", forwarded), TRUSTED)
    assert refused.value.code == "invalid_body" and refused.value.http_status == 400
    assert [d["field"] for d in refused.value.details or []] == ["X-Forwarded-For"]


@pytest.mark.parametrize(
    "peer,forwarded,expected",
    [
        ("203.0.113.9", HOSTILE, "203.0.113.9"),  # an untrusted peer's header is not read at all
        ("127.0.0.1", f"{HOSTILE}, 198.51.100.1", "198.51.100.1"),  # left of the client: never examined
        ("127.0.0.1", "x" * LONGEST_IDENTITY, "127.0.0.1"),  # short and no address: ignored, as before
    ],
)
def test_only_the_entry_that_would_be_the_identity_is_judged(
    peer: str, forwarded: str, expected: str
) -> None:
    """Bug caught: refusing requests over text the identity does not come from (a direct client's header, or
    what a client prepended before the proxy's entry). Mutant killed: checking every entry of the header."""
    assert client_address(request(peer, forwarded), TRUSTED) == expected
