"""`python -m ingress`: serve the HTTP API with uvicorn (uvloop, httptools)."""

import uvicorn

from ingress.api import create_app
from shared.config import get_settings
from shared.logging import configure_logging

settings = get_settings()
configure_logging("ingress", settings.log_level)
uvicorn.run(
    create_app(settings),
    host=settings.ingress_host,
    port=settings.ingress_port,
    loop="uvloop",
    http="httptools",
    log_config=None,
    proxy_headers=False,
)
