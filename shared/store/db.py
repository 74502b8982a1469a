"""The asyncpg pool and the migrations that shape the database.

Every connection the project opens (pool, one-off, migrations, probes, tests) goes through `connect` or
`create_pool` here, so each is made the same way: see `tls_choice` for when TLS is used."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import orjson

from shared.domain.errors import InvalidBody, StoreUnreachable
from shared.runtime.priority import lower_priority

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
MIGRATION_LOCK = 7_306_001  # pg_advisory_lock key: concurrent starters apply migrations one at a time
TLS_QUERY_KEYS = ("sslmode", "ssl")


def _url_hosts(dsn: str) -> list[str]:
    """The hosts a postgres:// URL names, as asyncpg reads them: the netloc's (comma-separated, with or
    without ports, IPv6 in brackets), else the query's `host=`; empty when it names none."""
    parts = urlsplit(dsn)
    hostspec = parts.netloc.rpartition("@")[2]
    if not hostspec:
        hostspec = ",".join(parse_qs(parts.query).get("host", []))
    hosts = []
    for item in unquote(hostspec).split(","):
        item = item.strip()
        if item.startswith("["):
            item = item[1 : item.find("]")]
        elif item.count(":") == 1:
            item = item.partition(":")[0]
        if item:
            hosts.append(item)
    return hosts


def is_local_host(host: str) -> bool:
    """A unix socket directory, `localhost`, or a loopback address (127.0.0.0/8, ::1)."""
    if host.startswith("/") or host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_choice(dsn: str, environ: Mapping[str, str]) -> Literal[False] | None:
    """Whether to turn TLS off for this URL (`False`) or leave it to asyncpg (`None`).

    The user's word wins: `sslmode` (or `ssl`) in the URL's query, a `service=` entry (whose file may say
    sslmode), or PGSSLMODE in the environment, and we leave TLS alone. Otherwise a server on this machine
    (loopback address, `localhost`, unix socket, or no host at all, which asyncpg reads as the local
    sockets then localhost, or PGHOST when set) is spoken to in plain text: encrypting loopback traffic
    protects nothing and cost a fifth of each stage's CPU against Debian's Postgres, which has ssl=on and
    so accepts asyncpg's default `prefer`. Any other host keeps asyncpg's default (`prefer`).

    `environ` is asyncpg's own view of the libpq variables (PGSSLMODE, PGHOST); the caller passes
    `os.environ`."""
    query = parse_qs(urlsplit(dsn).query, keep_blank_values=True)
    if any(key in query for key in (*TLS_QUERY_KEYS, "service")) or environ.get("PGSSLMODE"):
        return None
    return False if is_local_server(dsn, environ) else None


def is_local_server(dsn: str, environ: Mapping[str, str]) -> bool:
    """Whether every host the URL (or PGHOST, when it names none) may connect to is on this machine; no host
    at all means the local sockets then localhost, as asyncpg reads it."""
    hosts = _url_hosts(dsn)
    if not hosts:
        hosts = [h for h in environ.get("PGHOST", "").split(",") if h.strip()]
    return all(is_local_host(h.strip()) for h in hosts)


def connect_options(dsn: str) -> dict[str, Any]:
    """The keyword arguments every asyncpg.connect/create_pool of ours adds to the URL (see tls_choice)."""
    ssl = tls_choice(dsn, os.environ)
    return {} if ssl is None else {"ssl": ssl}


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads
    )


def share_niceness(conn: asyncpg.Connection) -> None:
    """Run the Postgres backend that serves `conn` at this process's niceness, if it runs ahead of it.

    The stages lower their own priority (STAGE_NICE) so that on shared cores ingress answers first, but
    the SQL a stage sends runs in its backend, at the server's priority: ingress's flushes then queued for
    a core behind the stages' statements. A backend leads its own session, so on a kernel with autogroups
    only its group's niceness ranks it against other processes (`lower_priority` sets both): with the
    stages and their backends lowered that way, at 500/s, HTTP p99 B/A 0.63 and ingress's wait for a core
    0.59 in four pairs, e2e p99 1.04 (docs/performance.md, "Autogroups").

    Best effort, for a server on this machine only (the caller checks): it only lowers a priority, only
    that of the process serving this very connection (a Postgres process whose title names this socket's
    port, or any Postgres process for a unix socket), and where the OS refuses (another user's process,
    without CAP_SYS_NICE) nothing changes."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    if nice <= 0:
        return
    pid = conn.get_server_pid()
    transport = getattr(conn, "_transport", None)  # asyncpg has no public accessor for its socket
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if sockname is None:  # which process serves us cannot be checked: leave every one alone
        return
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return
        if isinstance(sockname, tuple):  # TCP: the backend's title names its client as "host(port)"
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if f"({sockname[1]})" not in title:
                return
    except OSError:  # the process is gone, or there is no /proc
        return
    lower_priority(pid, nice)


async def _init_pool_connection(conn: asyncpg.Connection, *, local: bool) -> None:
    await _init_connection(conn)
    if local:
        share_niceness(conn)


async def connect(
    dsn: str, *, connect_timeout_s: float = COMMAND_TIMEOUT_S, jsonb: bool = True
) -> asyncpg.Connection:
    """One connection outside the pool; with `jsonb` (the default) it speaks JSONB as Python objects, like
    the pool's (without, it skips a type introspection: probes, migrations, admin)."""
    conn = await asyncpg.connect(dsn, timeout=connect_timeout_s, **connect_options(dsn))
    if jsonb:
        await _init_connection(conn)
    return conn


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does first (roll back a transaction
    left open, forget `add_listener` callbacks), which costs no round trip when there is nothing to undo.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` on
    every release: a round trip per pool use, ~9 % of the executor's CPU (py-spy). It undoes
    session state, and our pool users leave none: no session advisory locks (migrate takes its lock on a
    connection of its own), no LISTEN, no cursors held past a transaction, no session SET. That is the
    contract for code that uses the pool: session state belongs in a transaction (`SET LOCAL`,
    `pg_advisory_xact_lock`) or on a connection of its own (`connect`), never on a pool connection."""


def server_settings(dsn: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The session settings of our pool connections; one the user gives in the URL's query wins (asyncpg
    would let ours override it).

    - `application_name`: this process (`pg_stat_activity`), so an operator (or the chaos suite) can tell
      which process holds a connection or a lock. PGAPPNAME wins too.
    - `plan_cache_mode = force_generic_plan`: a pool runs the same few statements all day, prepared once
      per connection. Postgres plans a prepared statement afresh for its first five runs and whenever it
      judges a custom plan cheaper, which for the stages' array-parameter batches (`unnest($1::uuid[])`,
      `id = ANY($1)`) was one run in six: 13 % of the transitions statement's time went to planning
      (pg_stat_statements with track_planning at 300/s), and Postgres used 4-13 % less CPU per order
      without it (docs/performance.md). Our statements are shaped so that one plan serves every argument
      (the list query writes out only the filters given: ingress/repository.py)."""
    query = parse_qs(urlsplit(dsn).query)
    settings: dict[str, str] = {}
    if "application_name" not in query and not environ.get("PGAPPNAME"):
        settings["application_name"] = f"order-engine pid {os.getpid()}"
    if "plan_cache_mode" not in query:
        settings["plan_cache_mode"] = "force_generic_plan"
    return settings


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, command_timeout_s: float = COMMAND_TIMEOUT_S
) -> asyncpg.Pool:
    """A pool whose connections speak JSONB as Python objects; commands time out instead of hanging;
    release costs no round trip (see `_keep_session`); each statement keeps one plan (`server_settings`);
    a local server's backends run at this process's niceness (`share_niceness`)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        timeout=command_timeout_s,
        init=partial(_init_pool_connection, local=is_local_server(dsn, os.environ)),
        reset=_keep_session,
        **connect_options(dsn),
        server_settings=server_settings(dsn, os.environ),
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def exclusive(pool: asyncpg.Pool, key: int) -> AsyncIterator[asyncpg.Connection | None]:
    """The session advisory lock `key`, on one pool connection, for the block: the connection, or None when
    another session holds the lock. A pool connection must not keep session state (`_keep_session`), so
    the lock is released however the block ends; and if taking it or releasing it fails (a timeout, a broken
    connection, a second cancellation) the connection is terminated, which releases it too, rather than
    going back to the pool perhaps holding it (the relay or the sweep would then be stuck cluster-wide:
    other sessions' try-locks fail, and the holder's own succeed on top of the level it leaked)."""
    async with pool.acquire() as conn:
        try:
            taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except BaseException:
            # Timed out or cancelled: the try-lock may have run and its answer be on the way, so the session
            # may hold the lock; the pool would take the connection back once the answer came.
            conn.terminate()
            raise
        if not taken:
            yield None
            return
        try:
            yield conn
        finally:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except BaseException:
                conn.terminate()
                raise


def _migration_files() -> list[Traversable]:
    return sorted(
        (f for f in files("shared.store.migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )


async def require_migrated(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Refuse to serve a database that lacks a migration of this code: one step applies them
    (`python -m shared.runtime.cli migrate`, run by `make run`, the compose file's setup and the test
    stacks), not whichever service starts first."""
    try:
        done = {r["name"] for r in await db.fetch("SELECT name FROM schema_migrations")}
    except asyncpg.UndefinedTableError:
        done = set()
    missing = [f.name for f in _migration_files() if f.name not in done]
    if missing:
        raise RuntimeError(
            f"the database lacks migrations {missing}: run `python -m shared.runtime.cli migrate` first"
        )


async def migrate(dsn: str) -> list[str]:
    """Apply the SQL files in shared/store/migrations that this database has not seen, in name order."""
    conn = await connect(dsn, jsonb=False)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        applied = []
        for script in _migration_files():
            if script.name in done:
                continue
            async with conn.transaction():
                await conn.execute(script.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", script.name)
            logger.info("migration applied", extra={"migration": script.name})
            applied.append(script.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()


# A value Postgres (or asyncpg, on the way) refused: about what was sent, never about the connection, so
# retrying cannot help. asyncpg.DataError is SQLSTATE class 22 (out of range, too long, bad text for the
# type), and also what asyncpg raises for an argument it cannot encode (a datetime with no UTC equivalent,
# an int past int8). asyncpg also defines an InterfaceError-flavoured DataError (exceptions._base); being an
# InterfaceError it matches UNREACHABLE too, so an `except BAD_VALUE` must come before an `except
# UNREACHABLE`, or use `is_unreachable`.
BAD_VALUE: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg.exceptions._base.DataError)

# Errors that mean "Postgres cannot be reached right now" (503, or retry later), not a bug in our SQL. The
# plain InterfaceError is asyncpg's word for a connection that closed or a pool that is closing (leaving
# `async with conn.transaction()` after the connection dropped raises one); its ValueError subclasses are
# not about the connection: see BAD_VALUE and `is_unreachable`.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# What one row of a batched statement can cause on its own, so that writing the rows one by one leaves the
# others unharmed: a refused value, a broken constraint, a limit passed (an index row too large), a row that
# meets another of the same batch. Anything else (a connection, a timeout, a read-only server, our SQL)
# would fail every row alike.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    *BAD_VALUE,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    asyncpg.CardinalityViolationError,
)

# A statement that did not succeed, whatever the reason (unreachable, or refused by the server): what a
# best-effort background task (heartbeat, pruning, a probe) logs and tries again later.
FAILED: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *UNREACHABLE)


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says Postgres cannot be reached now (retry later), rather than that what we sent was
    refused (BAD_VALUE, which an `except UNREACHABLE` alone would also catch)."""
    return isinstance(exc, UNREACHABLE) and not isinstance(exc, BAD_VALUE)


@contextmanager
def answering_unavailable() -> Iterator[None]:
    """Around a request's use of Postgres: "cannot reach it" becomes StoreUnreachable (503, the client may
    retry); a value it refuses becomes InvalidBody (400: the same request would fail again). The edge
    should have refused such a value with the field named, so one that gets this far is logged. Anything
    else is a bug and stays what it is."""
    try:
        yield
    except BAD_VALUE as exc:
        logger.warning("store refused a request's value", extra={"error": repr(exc)})
        raise InvalidBody("a value of the request is outside what the order store accepts") from exc
    except UNREACHABLE as exc:
        raise StoreUnreachable() from exc
