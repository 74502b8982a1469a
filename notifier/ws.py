"""The notifier's app: WS /api/orders/execute?orderId=<uuid>[&lastSeq=n], plus /health and /ready.

Messages, each with a `type`: first `snapshot` {orderId, status, seq, logs}, then one `status` message per
later event of the order, in seq order without gaps or repeats; after a terminal event the server closes
with 1000. Errors use the common envelope with `type: "error"`, then a close code: 4400 invalid orderId,
4404 unknown order, 1013 when the client reads too slowly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import orjson
from fastapi import FastAPI, Request, WebSocket
from prometheus_client import make_asgi_app
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from notifier import repository
from notifier.service import Hub, Subscription
from shared.config import Settings, get_settings
from shared.db import create_pool
from shared.events import utcnow
from shared.health import check_postgres
from shared.http import CorrelationMiddleware, error_body, install_error_handlers, json_response
from shared.logging import get_logger
from shared.metrics import WS_CONNECTIONS, WS_DELIVERY_SECONDS, WS_EVENTS_DELIVERED

logger = get_logger(__name__)

CLOSE_INVALID = 4400
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 1013


async def send_json(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(orjson.dumps(message).decode())


async def send_error(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    await send_json(ws, {"type": "error", **error_body(code, message)})
    await ws.close(close_code)


def status_message(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "status", **event}


class OrderStream:
    """One WebSocket connection following one order."""

    def __init__(self, ws: WebSocket, subscription: Subscription, app: FastAPI) -> None:
        self.ws = ws
        self.subscription = subscription
        self.pool = app.state.pool
        self.last_seq = 0

    async def send_snapshot(self, last_seq: int | None) -> bool:
        """Sends the snapshot; False if the order is unknown (an error was sent and the socket closed)."""
        found = await repository.snapshot(self.pool, self.subscription.order_id)
        if found is None:
            await send_error(
                self.ws, "not_found", f"order {self.subscription.order_id} not found", CLOSE_NOT_FOUND
            )
            return False
        status, seq, logs = found
        if last_seq is not None:
            logs = [e for e in logs if e["seq"] > last_seq]
        await send_json(
            self.ws,
            {
                "type": "snapshot",
                "orderId": str(self.subscription.order_id),
                "status": status.value,
                "seq": seq,
                "logs": logs,
            },
        )
        self.last_seq = seq
        if status.terminal:
            await self.ws.close(1000)
        return not status.terminal

    async def forward(self) -> None:
        """Send live events until the terminal one, then close normally."""
        queue = self.subscription.queue
        while True:
            event = await queue.get()
            if event.seq <= self.last_seq:
                continue
            if event.seq > self.last_seq + 1:
                await self._catch_up(event.seq)
            await send_json(self.ws, status_message(event.to_dict()))
            WS_EVENTS_DELIVERED.inc()
            WS_DELIVERY_SECONDS.observe((utcnow() - event.at).total_seconds())
            self.last_seq = event.seq
            if event.status.terminal:
                await self.ws.close(1000)
                return

    async def _catch_up(self, before_seq: int) -> None:
        """Fill a gap (an event this process never saw) from the durable log."""
        found = await repository.snapshot(self.pool, self.subscription.order_id)
        logs = found[2] if found else []
        for entry in logs:
            if self.last_seq < entry["seq"] < before_seq:
                await send_json(self.ws, status_message(entry))
                self.last_seq = entry["seq"]
        if self.last_seq + 1 < before_seq:
            logger.warning(
                "ws.gap_unfillable",
                orderId=str(self.subscription.order_id),
                have=self.last_seq,
                next=before_seq,
            )

    async def drain_client(self) -> None:
        """Read (and for now ignore) client messages until it disconnects."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.database_url, max_size=20)
        app.state.hub = Hub(settings)
        await app.state.hub.start()
        try:
            yield
        finally:
            await app.state.hub.stop()
            await app.state.pool.close()

    app = FastAPI(title="Order execution engine: notifier", version="1", lifespan=lifespan)
    app.add_middleware(CorrelationMiddleware)
    app.mount("/metrics", make_asgi_app())
    install_error_handlers(app)

    @app.websocket("/api/orders/execute")
    async def order_updates(ws: WebSocket) -> None:
        await ws.accept()
        raw_id, raw_last = ws.query_params.get("orderId"), ws.query_params.get("lastSeq")
        try:
            order_id = UUID(raw_id or "")
            last_seq = int(raw_last) if raw_last is not None else None
        except ValueError:
            await send_error(
                ws, "invalid_body", "orderId must be a UUID and lastSeq an integer", CLOSE_INVALID
            )
            return
        hub: Hub = ws.app.state.hub
        subscription = hub.subscribe(order_id)  # before the snapshot: see notifier.service
        stream = OrderStream(ws, subscription, ws.app)
        try:
            with WS_CONNECTIONS.track_inprogress():
                if await stream.send_snapshot(last_seq):
                    await _follow(stream)
        except WebSocketDisconnect:
            pass
        finally:
            hub.unsubscribe(subscription)

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
        ok = db_ok and hub.positioned.is_set()
        return json_response({"status": "ready" if ok else "not_ready"}, 200 if ok else 503)

    return app


async def _follow(stream: OrderStream) -> None:
    """Forward events while watching for the client leaving or falling behind; whichever ends first wins."""
    tasks = {
        asyncio.create_task(stream.forward()),
        asyncio.create_task(stream.drain_client()),
        asyncio.create_task(stream.subscription.overflowed.wait()),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if stream.subscription.overflowed.is_set():
            await send_error(
                stream.ws, "too_slow", "the client did not keep up with its events", CLOSE_TOO_SLOW
            )
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
