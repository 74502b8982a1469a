"""`python -m notifier`: serve the WebSocket endpoint with uvicorn (uvloop, httptools)."""

import uvicorn

from notifier.transport import protocol_class
from notifier.ws import create_app
from shared.config import get_settings
from shared.logging import configure_logging

settings = get_settings()
configure_logging("notifier", settings.log_level)
uvicorn.run(
    create_app(settings),
    host=settings.notifier_host,
    port=settings.notifier_port,
    loop="uvloop",
    http="httptools",
    ws=protocol_class(settings.ws_write_buffer_bytes),  # websockets-sansio, see notifier.transport
    ws_ping_interval=None,  # the app owns the heartbeat (protocol and application pings, notifier.ws)
    ws_ping_timeout=None,
    ws_max_size=64 * 1024,  # clients only send pongs
    ws_per_message_deflate=False,  # small JSON messages; a deflate context per socket costs memory
    log_config=None,
    proxy_headers=False,  # the app reads X-Forwarded-For from TRUSTED_PROXIES itself (notifier.limits)
)
