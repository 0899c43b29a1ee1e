"""The annotation page (SPEC §9) and the API's docs, served by the ingress from files inside
the Python package: no CDN, no build step, so both work in a cluster without internet.

The page (`deployments/web/`: HTML, ES modules, CSS) is at `/` and `/page/...`; Swagger UI's
and ReDoc's assets come from the `fastapi-offline` package at `/static-offline-docs/...`.
These paths are open when API keys are on: a browser cannot send a key for the page itself,
and they hold nothing but public files. The page then asks for a key and sends it with every
API call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, Response

WEB = Path(__file__).with_name("web")
PAGE_PREFIX = "/page"
# fastapi_offline.FastAPIOffline's default mount of Swagger UI's and ReDoc's files.
DOCS_ASSETS_PREFIX = "/static-offline-docs"

# Paths served without an API key (exact paths, and prefixes ending in "/").
OPEN_PATHS = ("/healthz", "/")
OPEN_PREFIXES = (f"{PAGE_PREFIX}/", f"{DOCS_ASSETS_PREFIX}/")


# ---- Browser decoding (onnxruntime-web in a Web Worker) ---------------------------------
# WASM threads need SharedArrayBuffer, which a browser grants only to a cross-origin isolated
# page (COOP + COEP, on the page and everything it loads); onnxruntime-web compiles its WASM
# ('wasm-unsafe-eval') and starts its threads as workers. Merge with any other security
# headers here: these are what the local decoder needs.
DECODER_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Content-Security-Policy": "script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:",
}
# ------------------------------------------------------------------------------------------


class _Revalidated(StaticFiles):
    """Static files a browser revalidates (ETag) on every load, so an upgraded service's
    page never runs with modules cached from the previous version."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(DECODER_HEADERS)
        return response


def add_page(app: FastAPI) -> None:
    """Serve the page: `index.html` at `/`, the rest of `deployments/web/` under `/page/`."""
    app.mount(PAGE_PREFIX, _Revalidated(directory=WEB), name="page")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            WEB / "index.html", headers={"Cache-Control": "no-cache", **DECODER_HEADERS}
        )
