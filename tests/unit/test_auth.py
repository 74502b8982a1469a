"""API keys without a server: the key file, the check of a presented key, the ingress's 401 and 403 in the
envelope, the notifier's handshake (the key as a header or as a subprotocol), and the CLI that mints keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.requests import Request
from starlette.testclient import TestClient, WebSocketDenialResponse

from ingress.api import create_app
from notifier import handshake
from shared.domain.errors import EngineError, Forbidden, Unauthorized
from shared.runtime.cli import main as cli
from shared.runtime.config import Settings
from shared.web.apikeys import (
    ANONYMOUS,
    KeyFileError,
    KeyRing,
    Principal,
    authenticate,
    bearer_key,
    hash_key,
    key_line,
    new_key,
    offered_key,
)
from shared.web.envelope import install_error_handlers

ALICE, BOB = new_key(), new_key()


def ring(*holders: tuple[str, str]) -> KeyRing:
    return KeyRing.parse([key_line(principal, key) for principal, key in holders])


def test_a_key_is_known_by_its_hash_and_names_its_principal() -> None:
    keys = KeyRing.parse(
        [
            "# the team's keys",
            "",
            f"alice {hash_key(ALICE)}",
            f"  bob   {hash_key(BOB)}  ",
            f"alice {hash_key('old')}",
        ]
    )
    assert keys.principal_of(ALICE) == "alice" and keys.principal_of(BOB) == "bob"
    assert keys.principal_of("old") == "alice"  # a principal may hold two keys while clients move over
    for unknown in (new_key(), "", ALICE[:-1], ALICE + " ", hash_key(ALICE)):
        assert keys.principal_of(unknown) is None, unknown


@pytest.mark.parametrize(
    "line",
    [
        f"alice {hash_key(ALICE)} extra",  # three fields
        f"alice:1 {hash_key(ALICE)}",  # a colon: a principal could read as an IPv6 address
        f"10.0.0.1 {hash_key(ALICE)}",  # a digit first: it could read as an IPv4 address
        f"alice {hash_key(ALICE).upper()}",  # the hash in lowercase hex only
        f"alice {hash_key(ALICE)[:-1]}",
        f"alice {ALICE}",  # the key itself pasted instead of its hash
    ],
    # fixed ids: the keys are new each run, and pytest-xdist's workers must collect the same names
    ids=["three-fields", "colon", "digit-first", "uppercase-hash", "short-hash", "key-not-hash"],
)
def test_a_malformed_line_fails_the_start_without_quoting_it(line: str) -> None:
    with pytest.raises(KeyFileError, match="line 2") as refused:
        KeyRing.parse(["# keys", line])
    assert ALICE not in str(refused.value) and hash_key(ALICE) not in str(refused.value)


def test_an_empty_file_a_repeated_hash_and_a_missing_file_fail_the_start(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key"):
        KeyRing.parse(["# nothing yet"])
    with pytest.raises(KeyFileError, match="twice"):
        KeyRing.parse([key_line("alice", ALICE), key_line("bob", ALICE)])
    with pytest.raises(KeyFileError, match="cannot read"):
        KeyRing.load(tmp_path / "missing")
    path = tmp_path / "keys"
    path.write_text(key_line("alice", ALICE) + "\n")
    assert KeyRing.load(path).principal_of(ALICE) == "alice"


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("abc", None),
    ],
)
def test_the_key_comes_from_a_bearer_authorization(header: str | None, key: str | None) -> None:
    assert bearer_key(header) == key


def test_a_websocket_offers_its_key_as_a_bearer_subprotocol() -> None:
    assert offered_key(["bearer", "bearer.abc"]) == "abc"
    assert offered_key(["bearer.abc", "bearer"]) == "abc"
    assert offered_key(["bearer", "bearer."]) is None
    assert offered_key(["chat", "abc"]) is None


def test_new_keys_are_fresh_and_fit_a_subprotocol() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(
        k.startswith("oe_") and len(k) >= 40 and k.replace("-", "").replace("_", "").isalnum() for k in keys
    )
    with pytest.raises(ValueError, match="principal"):
        key_line("has space", ALICE)


def test_the_cli_prints_a_key_and_the_line_that_admits_it(capsys: pytest.CaptureFixture[str]) -> None:
    cli(["api-key", "carol"])
    key_text, line_text = capsys.readouterr().out.splitlines()
    key = key_text.rsplit(" ", 1)[1]
    line = line_text.split(":", 1)[1].strip()
    assert KeyRing.parse([line]).principal_of(key) == "carol"
    with pytest.raises(SystemExit):
        cli(["api-key", "9lives"])


# --- the ingress: 401 and 403 in the envelope -----------------------------------------------------------


@pytest.fixture
def keyed_ingress(tmp_path: Path) -> FastAPI:
    """The ingress app with API_KEYS (not started: GET /api/tokens needs nothing but the auth hook)."""
    path = tmp_path / "keys"
    path.write_text(f"{key_line('alice', ALICE)}\n")
    return create_app(Settings(_env_file=None, api_keys=path))


async def get_tokens(app: FastAPI, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get("/api/tokens", headers=headers)


async def test_the_ingress_answers_401_without_a_key_403_for_an_unknown_one(keyed_ingress: FastAPI) -> None:
    missing = await get_tokens(keyed_ingress, {})
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["correlationId"] == missing.headers["x-request-id"]
    not_bearer = await get_tokens(keyed_ingress, {"Authorization": f"Basic {ALICE}"})
    assert not_bearer.status_code == 401
    unknown = await get_tokens(keyed_ingress, {"Authorization": f"Bearer {BOB}"})
    assert unknown.status_code == 403 and unknown.json()["error"] == "forbidden"
    assert BOB not in unknown.text
    known = await get_tokens(keyed_ingress, {"Authorization": f"Bearer {ALICE}"})
    assert known.status_code == 200 and "SOL" in known.json()["tokens"]


async def test_without_api_keys_the_ingress_admits_everyone() -> None:
    app = create_app(Settings(_env_file=None))
    assert (await get_tokens(app, {})).status_code == 200
    assert (await get_tokens(app, {"Authorization": "Bearer whatever"})).status_code == 200


# --- the notifier's handshake ---------------------------------------------------------------------------


def handshake_app(keys: KeyRing | None) -> FastAPI:
    """The notifier's handshake steps around a socket that reports who it is from."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.keys, app.state.read_limiter = keys, None

    @app.websocket("/ws")
    async def endpoint(ws: WebSocket) -> None:
        try:
            client = await handshake.admit(ws, [])
        except EngineError as exc:
            await ws.send_denial_response(handshake.refusal(exc))
            return
        await ws.accept(handshake.subprotocol(ws))
        await ws.send_text(client)
        await ws.close()

    return app


def test_a_handshake_is_admitted_with_its_key_as_a_header_or_a_subprotocol() -> None:
    with TestClient(handshake_app(ring(("alice", ALICE)))) as client:
        with client.websocket_connect("/ws", subprotocols=["bearer", f"bearer.{ALICE}"]) as ws:
            assert ws.accepted_subprotocol == "bearer"  # the key itself is never echoed
            assert ws.receive_text() == "alice"
        with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {ALICE}"}) as ws:
            assert ws.accepted_subprotocol is None and ws.receive_text() == "alice"


@pytest.mark.parametrize(
    ("connect", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"subprotocols": ["bearer"]}, 401, "unauthorized"),
        ({"subprotocols": ["bearer", f"bearer.{BOB}"]}, 403, "forbidden"),
        ({"headers": {"Authorization": f"Bearer {BOB}"}}, 403, "forbidden"),
    ],
)
def test_a_handshake_without_a_known_key_is_refused_in_the_envelope(
    connect: dict[str, Any], status: int, code: str
) -> None:
    client = TestClient(handshake_app(ring(("alice", ALICE))))
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/ws", **connect):
        pass
    assert refused.value.status_code == status and refused.value.json()["error"] == code
    assert (refused.value.headers.get("www-authenticate") is not None) == (status == 401)


def test_without_api_keys_a_handshake_is_its_address_and_a_stored_key_does_no_harm() -> None:
    client = TestClient(handshake_app(None))
    with client.websocket_connect("/ws", subprotocols=["bearer", f"bearer.{ALICE}"]) as ws:
        assert ws.accepted_subprotocol == "bearer"  # else a browser would fail the handshake
        assert ws.receive_text() == "testclient"


def test_authenticate_names_the_principal_or_refuses() -> None:
    def request(authorization: str | None) -> Request:
        headers = [(b"authorization", authorization.encode())] if authorization else []
        return Request({"type": "http", "headers": headers})

    keys = ring(("alice", ALICE))
    assert authenticate(None, request(None)) is ANONYMOUS
    assert authenticate(keys, request(f"Bearer {ALICE}")) == Principal("alice")
    with pytest.raises(Unauthorized):
        authenticate(keys, request(None))
    with pytest.raises(Forbidden):
        authenticate(keys, request(f"Bearer {BOB}"))
