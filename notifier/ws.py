"""The notifier's app: WS /api/orders/execute?orderId=<uuid>[&lastSeq=n], plus /health, /ready and /metrics.

The contract (README "Watch it" and docs/architecture.md "Notifier fan-out"):

- Handshake refusals, as HTTP responses carrying the error envelope (the socket is never opened):
  with API_KEYS, 401 `unauthorized` without a key and 403 `forbidden` for an unknown one (the key comes as
  `Authorization: Bearer` or, from a browser, as the subprotocol `bearer.<key>`: notifier/handshake.py);
  400 `invalid_body` for an X-Forwarded-For (from a trusted proxy) whose client address is too long or
  scoped (shared/web/edge.py `client_address`), 429 `rate_limited` when the client's read bucket is empty
  (READ_RATE_LIMIT, shared with ingress's GETs) or for a 4th concurrent connection to one orderId from one
  client (the key's principal, else the IP), 503 `service_unavailable` when this process holds
  WS_MAX_CONNECTIONS, or while its `order.status` consumer is not running (with Retry-After).
- Messages, each with a `type`: first `snapshot` {orderId, status, seq, logs} (logs after `lastSeq` if given,
  at most ORDER_LOGS_MAX), then one `status` message per later event of the order in seq order, with no gap
  and no repeat; `ping` {"type":"ping"} every PING_INTERVAL; `error` (the common envelope) before a close
  for a reason other than the end of the order.
- Close codes: 1000 after the terminal event (or right after the snapshot of a terminal order); 4400 invalid
  orderId or lastSeq; 4404 unknown order; 4408 heartbeat timeout; 1013 a client that reads too slowly;
  1011 `service_unavailable` when Postgres fails us (reconnect with lastSeq).
- Heartbeat: every PING_INTERVAL the server sends a protocol ping frame and {"type":"ping"}. Any answer
  within PONG_TIMEOUT counts: a pong frame (every RFC 6455 client sends it by itself), {"type":"pong"}, or
  any other message. Two heartbeats in a row without an answer close the socket (4408). A client may also
  send {"type":"ping"}; it gets {"type":"pong"}.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from uuid import UUID

import orjson
from fastapi import FastAPI, Request, WebSocket
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from notifier import handshake, repository
from notifier.fanout import Hub, Subscription
from notifier.iplimit import IpLeases
from notifier.limits import ConnectionLimits, Refusal
from notifier.transport import EXTENSION, Link
from shared.domain.errors import EngineError
from shared.domain.events import StatusEvent
from shared.runtime.clock import following_postgres, utcnow
from shared.runtime.config import Settings, get_settings
from shared.runtime.health import check_postgres
from shared.runtime.logging import get_logger
from shared.runtime.metrics import WS_CONNECTIONS, WS_DELIVERY_SECONDS, WS_EVENTS_DELIVERED
from shared.runtime.tasks import exit_if_essential_died
from shared.store.db import FAILED, create_pool, require_migrated
from shared.store.redis import open_redis
from shared.web.apikeys import load_keys
from shared.web.app import install_metrics
from shared.web.edge import CorrelationMiddleware
from shared.web.envelope import error_body, error_response, install_error_handlers, json_response
from shared.web.ratelimit import Bucket, limiter

logger = get_logger(__name__)

CLOSE_NORMAL = 1000
CLOSE_UNAVAILABLE = 1011
CLOSE_TOO_SLOW = 1013
CLOSE_INVALID = 4400
CLOSE_NOT_FOUND = 4404
CLOSE_HEARTBEAT = 4408


class TooSlow(Exception):
    """A send did not complete within WS_SEND_TIMEOUT_MS, or the client's queue overflowed."""


def status_message(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "status", **event}


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", **error_body(code, message)}


class OrderStream:
    """One WebSocket connection following one order: snapshot, live events, heartbeat, slow-client cut."""

    def __init__(self, ws: WebSocket, subscription: Subscription, settings: Settings) -> None:
        self.ws = ws
        self.subscription = subscription
        self.settings = settings
        self.pool = ws.app.state.pool
        self.link: Link | None = ws.scope.get("extensions", {}).get(EXTENSION)
        self.loop = asyncio.get_running_loop()
        self.last_seq = 0
        self.last_heard = self.loop.time()  # loop time of the client's last message

    @property
    def open(self) -> bool:
        """False once this side has sent its close (a ping due in the same loop turn must not follow it)."""
        return self.ws.application_state is WebSocketState.CONNECTED

    async def send(self, message: dict[str, Any]) -> None:
        if not self.open:
            return
        try:
            async with asyncio.timeout(self.settings.ws_send_timeout_ms / 1000):
                await self.ws.send_text(orjson.dumps(message).decode())
        except TimeoutError:
            raise TooSlow from None

    async def run(self, last_seq: int | None) -> None:
        outcome: tuple[int, str, str] | None
        try:
            if not await self.send_snapshot(last_seq):
                return
        except TooSlow:
            outcome = CLOSE_TOO_SLOW, "too_slow", "the client did not take its snapshot"
        else:
            outcome = await self._follow()
        if outcome is not None:
            code, error, message = outcome
            await self.shut(code, error, message)

    async def send_snapshot(self, last_seq: int | None) -> bool:
        """Sends the snapshot; False when the stream is over (unknown order, or already terminal)."""
        order_id = self.subscription.order_id
        found = await repository.snapshot(self.pool, order_id)
        if found is None:
            await self.shut(CLOSE_NOT_FOUND, "not_found", f"order {order_id} not found")
            return False
        status, seq, logs = found
        if last_seq is not None:
            logs = [e for e in logs if e["seq"] > last_seq]
        await self.send(
            {"type": "snapshot", "orderId": str(order_id), "status": status.value, "seq": seq, "logs": logs}
        )
        self.last_seq = max(seq, last_seq or 0)  # never resend what the client says it has
        if status.terminal:
            await self.ws.close(CLOSE_NORMAL)
            return False
        return True

    async def _follow(self) -> tuple[int, str, str] | None:
        """Forward events while listening to the client and keeping the heartbeat; the first to finish
        decides: None (terminal sent, or the client left) or the (close code, error, message) to end with."""
        forward = asyncio.create_task(self.forward())
        listen = asyncio.create_task(self.listen())
        heartbeat = asyncio.create_task(self.heartbeat())
        overflow = asyncio.create_task(self.subscription.overflowed.wait())
        tasks = {forward, listen, heartbeat, overflow}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            errors = [e for e in (t.exception() for t in done if t is not overflow) if e is not None]
            for error in errors:
                if not isinstance(error, TooSlow):
                    raise error  # WebSocketDisconnect is handled by the caller; anything else is a bug
            if overflow in done or errors:
                return CLOSE_TOO_SLOW, "too_slow", "the client did not keep up with its events"
            if heartbeat in done:
                return CLOSE_HEARTBEAT, "heartbeat_timeout", "no pong to two consecutive pings"
            return None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def forward(self) -> None:
        """Send live events until the terminal one, then close normally."""
        queue = self.subscription.queue
        while True:
            event = await queue.get()
            if event.seq <= self.last_seq:
                continue
            if event.seq > self.last_seq + 1:
                await self._catch_up(event.seq)
            await self._deliver(event.to_dict(), event)
            if event.status.terminal:
                await self.ws.close(CLOSE_NORMAL)
                return

    async def _deliver(self, payload: dict[str, Any], event: StatusEvent) -> None:
        await self.send(status_message(payload))
        WS_EVENTS_DELIVERED.inc()
        WS_DELIVERY_SECONDS.observe(max(0.0, (utcnow() - event.at).total_seconds()))
        self.last_seq = event.seq

    async def _catch_up(self, before_seq: int) -> None:
        """Fill a gap (an event this process never saw) from the durable log."""
        found = await repository.snapshot(self.pool, self.subscription.order_id)
        logs = found[2] if found else []
        for entry in logs:
            if self.last_seq < entry["seq"] < before_seq:
                await self._deliver(entry, StatusEvent.model_validate(entry))
        if self.last_seq + 1 < before_seq:
            logger.warning(
                "ws.gap_unfillable",
                orderId=str(self.subscription.order_id),
                have=self.last_seq,
                next=before_seq,
            )

    async def listen(self) -> None:
        """Read client messages until it leaves: each one is a sign of life; {"type":"ping"} gets a pong."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_heard = self.loop.time()
            text = message.get("text")
            if text and '"ping"' in text:
                with suppress(orjson.JSONDecodeError):
                    body = orjson.loads(text)
                    if isinstance(body, dict) and body.get("type") == "ping":
                        await self.send({"type": "pong"})

    async def heartbeat(self) -> None:
        """Ping every PING_INTERVAL (a ping frame and {"type":"ping"}); return after two unanswered ones."""
        interval = self.settings.ping_interval / 1000
        timeout = self.settings.pong_timeout / 1000
        misses = 0
        next_ping = self.loop.time() + interval
        while misses < 2:
            await asyncio.sleep(max(0.0, next_ping - self.loop.time()))
            sent = self.loop.time()
            next_ping = sent + interval
            if not self.open:  # the stream has ended: nothing to ping, and no timeout to report
                await asyncio.Event().wait()
            if self.link is not None:
                self.link.ping()
            await self.send({"type": "ping"})
            await asyncio.sleep(timeout)
            answered = self.last_heard >= sent or (self.link is not None and self.link.last_pong >= sent)
            misses = 0 if answered else misses + 1

    async def shut(self, code: int, error: str, message: str) -> None:
        """Send the error envelope and close with `code`; a socket that does not drain is dropped instead."""
        if code in (CLOSE_TOO_SLOW, CLOSE_HEARTBEAT):
            logger.info("ws.closed", reason=error, orderId=str(self.subscription.order_id))
        if self.link is not None and self.link.buffered_bytes > 0 and code == CLOSE_TOO_SLOW:
            self.link.abort()  # a close frame would queue behind what the client is not reading
            return
        try:
            await self.send(error_message(error, message))
            async with asyncio.timeout(self.settings.ws_send_timeout_ms / 1000):
                await self.ws.close(code)
        except (TooSlow, TimeoutError):
            if self.link is not None:
                self.link.abort()
            return
        if code == CLOSE_HEARTBEAT and self.link is not None:
            self.link.close()  # flush the close frame, then hang up: a silent peer will not answer it


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    proxies = settings.trusted_proxy_networks

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.database_url, max_size=20)
        await require_migrated(app.state.pool)
        app.state.hub = Hub(settings)
        app.state.limits = ConnectionLimits(
            per_order_ip=settings.ws_max_per_order_ip, per_process=settings.ws_max_connections
        )
        reads_limited = settings.read_rate_limit_per_minute > 0
        needs_redis = bool(settings.ws_max_per_ip) or reads_limited
        redis = open_redis(settings.redis_url, timeout_s=1.0) if needs_redis else None
        app.state.ip_leases = app.state.read_limiter = None
        if redis is not None and reads_limited:  # handshakes take from the read bucket ingress's GETs use
            app.state.read_limiter = limiter(Bucket.READ, redis, settings)
        if redis is not None and settings.ws_max_per_ip:
            app.state.ip_leases = IpLeases(
                redis, limit=settings.ws_max_per_ip, key_prefix=settings.redis_key_prefix
            )
            app.state.ip_leases.start()
        await app.state.hub.start()
        try:
            async with following_postgres(app.state.pool):
                yield
        finally:
            try:
                await app.state.hub.stop()
                if app.state.ip_leases is not None:
                    await app.state.ip_leases.stop()
                if redis is not None:
                    await redis.aclose()
                await app.state.pool.close()
            finally:
                exit_if_essential_died()  # last: see shared/runtime/tasks.py

    app = FastAPI(title="Order execution engine: notifier", version="1", lifespan=lifespan)
    app.add_middleware(CorrelationMiddleware)
    install_metrics(app)
    install_error_handlers(app)
    app.state.keys = load_keys(settings.api_keys)

    @app.websocket("/api/orders/execute")
    async def order_updates(ws: WebSocket) -> None:
        if not ws.app.state.hub.consuming:  # no event would reach the socket: the process is on its way out
            await ws.send_denial_response(_not_consuming_response())
            return
        try:
            client = await handshake.admit(ws, proxies)
        except EngineError as exc:  # no key or an unknown one, no usable client address, no read token
            await ws.send_denial_response(handshake.refusal(exc))
            return
        protocol = handshake.subprotocol(ws)
        raw_id, raw_last = ws.query_params.get("orderId"), ws.query_params.get("lastSeq")
        try:
            order_id = UUID(raw_id or "")
            last_seq = int(raw_last) if raw_last is not None else None
        except ValueError:
            await ws.accept(protocol)
            message = error_message("invalid_body", "orderId must be a UUID and lastSeq an integer")
            await ws.send_text(orjson.dumps(message).decode())
            await ws.close(CLOSE_INVALID)
            return
        limits: ConnectionLimits = ws.app.state.limits
        refusal = limits.acquire(client, order_id)
        if refusal is not None:
            await ws.send_denial_response(_refusal_response(refusal, settings))
            return
        leases: IpLeases | None = ws.app.state.ip_leases
        lease = await leases.acquire(client) if leases is not None else ""
        if lease is None:
            limits.release(client, order_id)
            await ws.send_denial_response(_refusal_response(Refusal.PER_IP, settings))
            return
        hub: Hub = ws.app.state.hub
        try:
            subscription = hub.subscribe(order_id)  # before the snapshot: see notifier.fanout
            try:
                stream = OrderStream(ws, subscription, settings)
                await ws.accept(protocol)
                with WS_CONNECTIONS.track_inprogress():
                    await stream.run(last_seq)
            except WebSocketDisconnect:
                pass
            except FAILED as exc:  # Postgres refused or timed out: the client should come back
                logger.warning(
                    "ws.dependency_failed", orderId=str(order_id), error=f"{type(exc).__name__}: {exc}"
                )
                with suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await stream.shut(CLOSE_UNAVAILABLE, "service_unavailable", "try again shortly (lastSeq)")
            finally:
                hub.unsubscribe(subscription)
        finally:
            limits.release(client, order_id)
            if leases is not None:
                await leases.release(client, lease)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> Response:
        hub: Hub = request.app.state.hub
        try:
            db_ok = await asyncio.wait_for(check_postgres(request.app.state.pool), 3.0)
        except Exception:
            db_ok = False
        ok = db_ok and hub.positioned.is_set() and hub.consuming
        return json_response({"status": "ready" if ok else "not_ready"}, 200 if ok else 503)

    return app


def _not_consuming_response() -> Response:
    response = error_response(
        503, "service_unavailable", "this notifier is not receiving order events: connect again (lastSeq)"
    )
    response.headers["Retry-After"] = "1"
    return response


def _refusal_response(refusal: Refusal, settings: Settings) -> Response:
    if refusal is Refusal.PER_ORDER_IP:
        return error_response(
            429,
            "rate_limited",
            f"at most {settings.ws_max_per_order_ip} concurrent connections per order per client",
        )
    if refusal is Refusal.PER_IP:
        return error_response(
            429, "rate_limited", f"at most {settings.ws_max_per_ip} concurrent connections per client"
        )
    response = error_response(503, "service_unavailable", "this notifier is at its connection limit")
    response.headers["Retry-After"] = "1"
    return response
