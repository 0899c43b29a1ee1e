"""The annotation page and the API's docs, served by the ingress from files inside
the Python package: no CDN, no build step, so both work in a cluster without internet.

The page (`deployments/web/`: HTML, ES modules, CSS) is at `/` and `/page/...`; Swagger UI's
and ReDoc's assets come from the `fastapi-offline` package at `/static-offline-docs/...`.
These paths, the docs (`/docs`, `/redoc`) and the OpenAPI document are open when API keys are
on: a browser cannot send a key for the page itself or follow its "API docs" link with one,
and they hold nothing but public files and the API's description. The page then asks for a
key and sends it with every API call.

Every response carries the security headers of `SECURITY_HEADERS`; the page and its assets
the page's content security policy as well (`PAGE_HEADERS`): scripts, styles and workers
from the service only (WebAssembly allowed, for a decoder in a Web Worker), no framing, and
cross-origin isolation (which WebAssembly threads need).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import sam3_core.demo

WEB = Path(__file__).with_name("web")
# Held-out scenes of shapes for the demo model, shipped beside it (`sam3_core.demo` imports
# no torch).
SAMPLES = Path(sam3_core.demo.__file__).with_name("samples")
PAGE_PREFIX = "/page"
# fastapi_offline.FastAPIOffline's default mount of Swagger UI's and ReDoc's files.
DOCS_ASSETS_PREFIX = "/static-offline-docs"

DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")

# Paths served without an API key (exact paths, and prefixes ending in "/").
OPEN_PATHS = ("/healthz", "/readyz", "/", *DOCS_PATHS)
OPEN_PREFIXES = (f"{PAGE_PREFIX}/", f"{DOCS_ASSETS_PREFIX}/")

# Every response: no MIME sniffing, no framing, no referrer sent on.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The docs' HTML runs inline scripts (FastAPI's Swagger UI and ReDoc pages): no script
    # policy there, only the framing one.
    "Content-Security-Policy": "frame-ancestors 'none'",
}
# The page and its assets. The one place its policy is defined: 'wasm-unsafe-eval' and
# blob: workers let it run a WebAssembly decoder (onnxruntime-web) in a Web Worker, and
# COOP + COEP isolate it cross-origin, which WebAssembly threads (SharedArrayBuffer) need.
PAGE_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "worker-src 'self' blob:",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        # The video mode shows a video file the person opened (a blob: URL) to read its frames.
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": PAGE_CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _Revalidated(StaticFiles):
    """Static files a browser revalidates (ETag) on every load, so an upgraded service's
    page never runs with modules cached from the previous version."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def add_page(app: FastAPI) -> None:
    """Serve the page: `index.html` at `/`, the rest of `deployments/web/` under `/page/`."""
    # Before the page's mount, which would otherwise answer for these paths.
    app.mount(f"{PAGE_PREFIX}/samples", _Revalidated(directory=SAMPLES), name="page-samples")
    app.mount(PAGE_PREFIX, _Revalidated(directory=WEB), name="page")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response, `PAGE_HEADERS` to the page's (a header the
    app set itself is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        is_page = path == "/" or path.startswith(f"{PAGE_PREFIX}/")
        added = PAGE_HEADERS if is_page else SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in added.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
