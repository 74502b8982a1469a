"""`python -m notifier`: serve the WebSocket endpoint with uvicorn (uvloop, httptools)."""

import uvicorn

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
    ws="websockets-sansio",
    log_config=None,
    proxy_headers=False,
)
