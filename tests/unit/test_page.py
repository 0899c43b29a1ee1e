"""The annotation page and the docs' assets, served by the ingress (`deployments/page.py`)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.unit.http_client import make_client

WEB = Path(__file__).parents[2] / "deployments" / "web"
TEST_IDS = (
    "image-input",
    "canvas",
    "concept-input",
    "concept-submit",
    "object-list",
    "export-coco",
    "status",
    "next-image",
    "prev-image",
    "image-index",
    "decode-path",
    "folder-input",
    "dataset-list",
    "clear-dataset",
    # The video mode.
    "video-input",
    "video-slider",
    "video-frame",
    "play",
    "propagate",
    "stop-propagation",
    "video-progress",
    "export-ytvis",
    "export-video-coco",
    "close-video",
)


def linked(html: str) -> list[str]:
    """The URLs an HTML page loads: src and href attributes, CSS url()s."""
    attributes = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    return attributes + re.findall(r"""url\(["']?([^"')]+)""", html)


class TestPageAndDocs:
    def test_the_page_is_served_with_its_test_hooks(self, api):
        page = api.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for test_id in TEST_IDS:
            assert f'data-testid="{test_id}"' in page.text, test_id
        assets = [url for url in linked(page.text) if url != "docs"]
        assert {"page/app.js", "page/style.css"} <= set(assets)
        for url in assets:
            response = api.get("/" + url)
            assert response.status_code == 200, url
        assert api.get("/page/app.js").headers["content-type"].startswith("text/javascript")

    def test_the_page_and_its_files_are_cross_origin_isolated(self, api):
        """WASM threads (the local decoder) need COOP + COEP on the page and its files."""
        for url in ("/", "/page/app.js", "/page/decode-worker.js", "/page/vendor/ort.wasm.min.mjs"):
            response = api.get(url)
            assert response.status_code == 200, url
            assert response.headers["cross-origin-opener-policy"] == "same-origin"
            assert response.headers["cross-origin-embedder-policy"] == "require-corp"
            assert "'wasm-unsafe-eval'" in response.headers["content-security-policy"]
        wasm = api.get("/page/vendor/ort-wasm-simd-threaded.wasm")
        assert wasm.headers["content-type"] == "application/wasm"

    def test_the_page_loads_nothing_from_other_hosts(self):
        """No CDN: it must work in a cluster without internet. (vendor/ holds onnxruntime-web's
        files, checked against its npm package by test_web_vendor.py.)"""
        for path in filter(Path.is_file, WEB.iterdir()):
            text = path.read_text()
            for url in linked(text):
                assert not urlsplit(url).netloc and not url.startswith("//"), (path.name, url)
            imports = re.findall(r'^import .* from "([^"]+)";', text, re.M)
            assert all(module.startswith("./") for module in imports), (path.name, imports)

    def test_the_page_ships_inside_the_package(self):
        """setuptools' package data carries the page (pip, wheel, Docker image)."""
        pyproject = (WEB.parents[1] / "pyproject.toml").read_text()
        (globs,) = re.findall(
            r"\[tool\.setuptools\.package-data\]\n(?:#.*\n)*deployments = \[(.+)\]", pyproject
        )
        patterns = re.findall(r'"([^"]+)"', globs)
        shipped = {path for pattern in patterns for path in WEB.parent.glob(pattern)}
        files = {p for p in WEB.rglob("*") if p.is_file() and "node_modules" not in p.parts}
        assert {p for p in shipped if p.is_file()} == files and WEB / "index.html" in shipped

    @pytest.mark.parametrize("path", ["/docs", "/redoc"])
    def test_docs_load_their_assets_from_the_service(self, api, path):
        html = api.get(path)
        assert html.status_code == 200
        urls = linked(html.text)
        assert urls, html.text
        for url in urls:
            assert not urlsplit(url).netloc, f"{path} loads {url} from another host"
            assert api.get(url).status_code == 200, url
        assert "fonts.googleapis" not in html.text

    def test_with_keys_the_page_and_doc_assets_need_none_and_the_api_does(self, engine):
        secured = make_client(engine, api_keys="k-one")[0]
        for path in (
            "/",
            "/page/app.js",
            "/page/style.css",
            "/static-offline-docs/swagger-ui-bundle.js",
        ):
            assert secured.get(path).status_code == 200, path
        # The page's "API docs" link, and everything the docs load, answer without a key.
        (docs_link,) = [url for url in linked(secured.get("/").text) if url == "docs"]
        docs = secured.get("/" + docs_link)
        assert docs.status_code == 200
        for url in [*linked(docs.text), "/openapi.json", "/redoc"]:
            assert secured.get(url).status_code == 200, url
        for path in ("/sam3/embed_image", "/sam3/visual_segment"):
            assert secured.post(path, json={}).status_code == 401, path
        # The open prefix serves files only: a path that climbs out of it is not the API.
        climbed = secured.get("/page/%2e%2e/openapi.json")
        assert climbed.status_code == 404 and "paths" not in climbed.text


class TestSecurityHeaders:
    @pytest.mark.parametrize("path", ["/", "/page/app.js", "/page/style.css", "/page/api.js"])
    def test_the_page_and_its_assets(self, api, path):
        headers = api.get(path).headers
        policy = dict(
            directive.strip().split(" ", 1)
            for directive in headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'self'"
        # What a WebAssembly decoder in a Web Worker (onnxruntime-web) needs, and no more.
        assert policy["script-src"] == "'self' 'wasm-unsafe-eval'"
        assert policy["worker-src"] == "'self' blob:"
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"

    def test_the_page_needs_no_inline_script_or_style(self):
        """What the policy refuses is not in the page (the browser tests run it too)."""
        html = (WEB / "index.html").read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert "<style" not in html and " style=" not in html
        assert not re.search(r"\son[a-z]+=", html)

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("get", "/docs"),
            ("get", "/openapi.json"),
            ("get", "/healthz"),
            ("post", "/sam3/embed_image"),
        ],
    )
    def test_every_other_response(self, engine, method, path):
        for api in (make_client(engine)[0], make_client(engine, api_keys="k")[0]):
            headers = getattr(api, method)(path).headers
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            assert headers["content-security-policy"] == "frame-ancestors 'none'"
