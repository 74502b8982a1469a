"""The web console: a static page at `/` (plain HTML, CSS and JavaScript modules shipped under
`ingress/console/`) that places, follows, lists and cancels orders through the public API on the same
address, and GET /api/tokens, the token catalogue its order form offers.

The files are read once, when the app is built: there is no path from a request to the filesystem, and a
missing file fails the start, not a request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ingress.auth import authenticate
from shared.domain.errors import NotFound
from shared.venue.model import KNOWN_TOKENS
from shared.web.envelope import error_responses

INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Scripts and styles only from this origin, no inline code, and fetch/WebSocket only to it (`ws:`/`wss:`
# because CSP's 'self' did not cover the WebSocket schemes in every browser). The form is sent by script,
# so the browser itself may submit nowhere.
CONSOLE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self' ws: wss:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


class TokenCatalogue(BaseModel):
    tokens: list[str] = Field(
        description="The symbols an order may name as tokenIn or tokenOut (a base58 mint is accepted too)."
    )


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str

    def response(self, request: Request) -> Response:
        # Revalidated on every load (no-cache), so a new version shows at once; a 304 carries the same
        # headers, as a browser replaces the cached ones with them (the API's CSP would break the page).
        headers = {
            "ETag": self.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONSOLE_CSP,
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def load_assets() -> dict[str, Asset]:
    """Every file of `ingress/console/` with a known type, by name."""
    assets = {}
    for entry in resources.files("ingress").joinpath("console").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[entry.name] = Asset(body, MEDIA_TYPES[suffix], etag)
    if INDEX not in assets:
        raise RuntimeError(f"the console's {INDEX} is missing from the ingress package")
    return assets


def install_console(app: FastAPI) -> None:
    """GET / (the page), GET /console/{name} (its scripts, styles and icon), GET /api/tokens."""
    assets = load_assets()
    catalogue = TokenCatalogue(tokens=sorted(KNOWN_TOKENS))

    @app.get("/", include_in_schema=False)
    async def console_page(request: Request) -> Response:
        return assets[INDEX].response(request)

    @app.get("/console/{name}", include_in_schema=False)
    async def console_asset(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound(f"console file {name!r}")
        return asset.response(request)

    @app.get(
        "/api/tokens",
        response_model=TokenCatalogue,
        responses=error_responses(431, 500),
        dependencies=[Depends(authenticate)],
        summary="The token symbols an order may name",
    )
    async def tokens() -> TokenCatalogue:
        return catalogue
