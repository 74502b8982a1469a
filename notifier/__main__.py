"""`python -m notifier`: serve the WebSocket endpoint."""

from notifier.transport import protocol_class
from notifier.ws import create_app
from shared.runtime.config import get_settings
from shared.web.app import serve

settings = get_settings()
serve(
    "notifier",
    create_app(settings),
    settings.notifier_host,
    settings.notifier_port,
    settings,
    ws=protocol_class(settings.ws_write_buffer_bytes),  # websockets-sansio, see notifier.transport
    ws_ping_interval=None,  # the app owns the heartbeat (protocol and application pings, notifier.ws)
    ws_ping_timeout=None,
    ws_max_size=64 * 1024,  # clients only send pongs
    ws_per_message_deflate=False,  # small JSON messages; a deflate context per socket costs memory
)
