"""`python -m ingress`: serve the HTTP API."""

from ingress.api import create_app
from shared.runtime.config import get_settings
from shared.web.app import serve

settings = get_settings()
serve("ingress", create_app(settings), settings.ingress_host, settings.ingress_port, settings)
