"""What a process says while the task or the producer it needs is down, before it has exited or while its
producer is being replaced: ingress refuses orders (503), the notifier refuses handshakes (503)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from ingress.admission import Admission, Sample, Stage
from notifier.ws import create_app
from shared.domain.errors import ServiceUnavailable
from shared.runtime.config import Settings

ROUTER = Stage("router", slots=100, service_s=0.2, measured_rate=0.0)
EXECUTOR = Stage("executor", slots=10, service_s=2.5, measured_rate=0.0)
IDLE = Sample(
    at=0.0, routing=0, open=0, router=ROUTER, executor=EXECUTOR, oldest_waiting_s=0.0, outbox_lag_s=0.0
)


@dataclass
class Outbox:
    """What admission reads of the process's outbox."""

    publishing: bool

    async def kafka_answers(self) -> object:
        return {}


@pytest.mark.parametrize("publishing", [True, False])
def test_ingress_refuses_orders_with_503_while_its_outbox_cannot_publish(publishing: bool) -> None:
    """An idle engine, fresh sample: only the outbox's state decides. Orders taken while the producer is
    replaced would wait for it (or for good, if it could not be replaced)."""
    admission = Admission(Settings(), pool=None)
    admission.follow(Outbox(publishing))  # type: ignore[arg-type]
    admission._sample = replace(IDLE, at=time.monotonic())
    if publishing:
        admission.check()
    else:
        with pytest.raises(ServiceUnavailable):
            admission.precheck()
        with pytest.raises(ServiceUnavailable):
            admission.check()


@dataclass
class Hub:
    consuming: bool


@pytest.mark.parametrize("consuming", [True, False])
def test_a_notifier_whose_hub_is_not_consuming_refuses_handshakes_with_503(consuming: bool) -> None:
    """The request is one the notifier would otherwise accept (to close it at once: the orderId is not a
    UUID), so that only the hub's state tells the two answers apart."""
    app = create_app(Settings())  # no lifespan: the state it would build is set here
    app.state.hub, app.state.read_limiter = Hub(consuming), None
    client = TestClient(app)
    url = f"/api/orders/execute?orderId=not-{uuid.uuid4()}"
    if consuming:
        with client.websocket_connect(url) as ws:
            assert ws.receive_json()["error"] == "invalid_body"
        return
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(url):
        pass
    assert refused.value.status_code == 503
    assert refused.value.json()["error"] == "service_unavailable"
    assert refused.value.headers["retry-after"] == "1"
