"""When the project's connections use TLS (plain to a server on this machine, the user's sslmode always), how
they are named, and what an error from Postgres means to a caller (unreachable, a refused value, a bug)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.domain.errors import InvalidBody, StoreUnreachable
from shared.store.db import (
    answering_unavailable,
    connect_options,
    is_local_host,
    is_unreachable,
    server_settings,
    share_niceness,
    tls_choice,
)
from tests.fixtures.polling import eventually

BASE = "postgres://user:password@{host}/order_engine"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:5432",
        "LOCALHOST",
        "127.0.0.1",
        "127.0.0.1:5432",
        "127.8.9.10:6543",
        "[::1]",
        "[::1]:5432",
        "",
        "%2Fvar%2Frun%2Fpostgresql",
        "localhost:5432,127.0.0.1:5433",
    ],
)
def test_a_server_on_this_machine_is_spoken_to_in_plain_text(host: str) -> None:
    assert tls_choice(BASE.format(host=host), {}) is False


@pytest.mark.parametrize(
    "host",
    ["db.example.com", "10.0.0.5:5432", "192.168.1.2", "[2001:db8::1]:5432", "localhost,db.example.com"],
)
def test_any_other_server_keeps_asyncpgs_default(host: str) -> None:
    assert tls_choice(BASE.format(host=host), {}) is None


@pytest.mark.parametrize(
    "query", ["sslmode=require", "sslmode=disable", "sslmode=prefer", "ssl=true", "service=x"]
)
@pytest.mark.parametrize("host", ["localhost", "db.example.com"])
def test_the_users_sslmode_is_passed_through_untouched(host: str, query: str) -> None:
    assert tls_choice(f"{BASE.format(host=host)}?{query}", {}) is None


def test_pgsslmode_in_the_environment_is_the_users_word_too() -> None:
    assert tls_choice(BASE.format(host="localhost"), {"PGSSLMODE": "require"}) is None


def test_a_url_without_host_is_judged_by_its_host_parameter_then_pghost() -> None:
    assert tls_choice("postgres:///order_engine?host=/run/postgresql", {}) is False
    assert tls_choice("postgres:///order_engine?host=db.example.com", {}) is None
    assert tls_choice("postgres:///order_engine", {"PGHOST": "db.example.com"}) is None
    assert tls_choice("postgres:///order_engine", {"PGHOST": "/run/postgresql"}) is False
    assert tls_choice("postgres:///order_engine", {}) is False


def test_connect_options_turn_tls_off_only_when_the_choice_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("PGHOST", raising=False)
    assert connect_options(BASE.format(host="localhost")) == {"ssl": False}
    assert connect_options(BASE.format(host="localhost") + "?sslmode=require") == {}
    assert connect_options(BASE.format(host="db.example.com")) == {}


@pytest.mark.parametrize(
    "host,local",
    [("/tmp", True), ("localhost.", True), ("127.0.0.53", True), ("::1", True), ("128.0.0.1", False)],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local


def test_pool_connections_carry_the_process_id_unless_the_user_named_them() -> None:
    named = server_settings(BASE.format(host="localhost"), {})
    assert named["application_name"] == f"order-engine pid {os.getpid()}"
    assert "application_name" not in server_settings(
        BASE.format(host="localhost") + "?application_name=mine", {}
    )
    assert "application_name" not in server_settings(BASE.format(host="localhost"), {"PGAPPNAME": "mine"})


def test_pool_statements_keep_one_plan_unless_the_url_says_otherwise() -> None:
    assert server_settings(BASE.format(host="localhost"), {})["plan_cache_mode"] == "force_generic_plan"
    assert "plan_cache_mode" not in server_settings(
        BASE.format(host="localhost") + "?plan_cache_mode=auto", {}
    )


class Served:
    """What `share_niceness` reads of a connection: its server process and its socket's address."""

    def __init__(self, pid: int, sockname: object) -> None:
        self._pid = pid
        self._transport = self  # asyncpg keeps its socket's transport here
        self._sockname = sockname

    def get_server_pid(self) -> int:
        return self._pid

    def get_extra_info(self, name: str) -> object:
        assert name == "sockname"
        return self._sockname


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Processes that look like what /proc shows of a Postgres backend: named `postgres`, with a title."""
    started: list[subprocess.Popen[bytes]] = []
    postgres = tmp_path / "postgres"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", postgres)

    def start(
        title: str = "postgres: user order_engine [local] idle", name: Path = postgres
    ) -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen([title, "60"], executable=name))
        cmdline = Path(f"/proc/{started[-1].pid}/cmdline")
        # Popen may return before the exec
        eventually(lambda: cmdline.read_bytes().startswith(title.encode()), f"{cmdline} shows {title!r}")
        return started[-1]

    yield start
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def at_nice_7(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reads as niceness 7 (a stage's), whatever the test runner's own is."""
    real = os.getpriority
    monkeypatch.setattr(os, "getpriority", lambda which, who: 7 if who == 0 else real(which, who))


def niceness(process: subprocess.Popen[bytes]) -> int:
    return os.getpriority(os.PRIO_PROCESS, process.pid)


@pytest.mark.usefixtures("at_nice_7")
def test_the_backend_serving_the_connection_runs_at_our_niceness(
    stand_in: Callable[..., subprocess.Popen[bytes]],
) -> None:
    unix = stand_in()
    share_niceness(Served(unix.pid, ""))
    assert niceness(unix) == 7
    tcp = stand_in("postgres: user order_engine 127.0.0.1(50123) idle")
    share_niceness(Served(tcp.pid, ("127.0.0.1", 50123)))
    assert niceness(tcp) == 7


@pytest.mark.usefixtures("at_nice_7")
def test_a_process_not_proven_to_serve_the_connection_is_left_alone(
    stand_in: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    before = os.getpriority(os.PRIO_PROCESS, os.getpid())
    other_client = stand_in("postgres: user order_engine 127.0.0.1(50999) idle")
    share_niceness(Served(other_client.pid, ("127.0.0.1", 50123)))
    not_postgres = stand_in(name=Path(shutil.which("sleep") or "/bin/sleep"))
    share_niceness(Served(not_postgres.pid, ""))
    unknown_socket = stand_in()
    share_niceness(Served(unknown_socket.pid, None))
    assert [niceness(p) for p in (other_client, not_postgres, unknown_socket)] == [before] * 3


# --- what an error from Postgres means to a caller --------------------------------------------------------

# asyncpg raises asyncpg.DataError (a PostgresError) for an argument it cannot encode; its other DataError,
# in exceptions._base, is an InterfaceError and so falls inside UNREACHABLE's InterfaceError.
ENCODING = asyncpg.DataError(
    "invalid input for query argument $1: datetime(1, 1, 1) (date value out of range)"
)
INTERFACE_FLAVOURED = asyncpg.exceptions._base.DataError("invalid input for query argument $1")
GONE = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
CLOSED = asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed")


@pytest.mark.parametrize(
    "exc,unreachable",
    [
        (ENCODING, False),
        (INTERFACE_FLAVOURED, False),
        (
            asyncpg.ProgramLimitExceededError("index row size 8040 exceeds btree version 4 maximum 2704"),
            False,
        ),
        (GONE, True),
        (CLOSED, True),  # what leaving a transaction raises once its connection dropped
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
    ],
)
def test_only_connection_level_errors_are_unreachable(exc: BaseException, unreachable: bool) -> None:
    """Bug caught: a refused value classed "database unreachable" (a retriable 503 that fails forever, a sweep
    pass ended). Mutant killed: `is_unreachable` as a bare `isinstance(exc, UNREACHABLE)`."""
    assert is_unreachable(exc) is unreachable


@pytest.mark.parametrize("exc", [ENCODING, INTERFACE_FLAVOURED])
def test_a_refused_value_in_a_request_is_a_400(exc: BaseException) -> None:
    """Mutant killed: answering_unavailable without its BAD_VALUE clause (503 for the InterfaceError-flavoured
    one, a 500 for asyncpg.DataError)."""
    with pytest.raises(InvalidBody) as refused, answering_unavailable():
        raise exc
    assert refused.value.http_status == 400 and refused.value.__cause__ is exc


@pytest.mark.parametrize("exc", [GONE, CLOSED])
def test_a_lost_connection_in_a_request_is_a_503(exc: BaseException) -> None:
    with pytest.raises(StoreUnreachable), answering_unavailable():
        raise exc


def test_any_other_postgres_error_in_a_request_stays_what_it_is() -> None:
    """A bug of ours (here a constraint our SQL should have kept) is a 500, not disguised as the caller's."""
    with pytest.raises(asyncpg.UniqueViolationError), answering_unavailable():
        raise asyncpg.UniqueViolationError("duplicate key value violates unique constraint")
