"""API keys and tenants over HTTP (`deployments/middleware.py`; README, `SAM3_API_KEYS`)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from deployments.owners import owner_key
from sam3_core.calls import ImageRequest
from tests.unit.http_client import B64, CLICK, OTHER_B64, make_client


class TestApiKeys:
    @pytest.fixture
    def secured(self, engine) -> TestClient:
        return make_client(engine, api_keys="k-one, k-two")[0]

    def test_every_route_but_healthz_the_page_and_the_docs_needs_a_key(self, secured):
        for path in ("/healthz", "/docs", "/redoc", "/openapi.json"):
            assert secured.get(path).status_code == 200, path
        for method, path in [
            ("post", "/sam3/concept_segment"),
            ("post", "/sam3/embed_image"),
            ("post", "/sam3/visual_segment"),
        ]:
            response = getattr(secured, method)(path)
            assert response.status_code == 401, path
            assert response.json()["code"] == "unauthorized"

    def test_bearer_query_and_body(self, secured):
        body = {"image": {"type": "base64", "value": B64}}
        assert (
            secured.post(
                "/sam3/embed_image", json=body, headers={"Authorization": "Bearer k-two"}
            ).status_code
            == 200
        )
        assert secured.post("/sam3/embed_image?api_key=k-one", json=body).status_code == 200
        assert (
            secured.post("/sam3/embed_image", json={**body, "api_key": "k-one"}).status_code == 200
        )

    def test_wrong_keys(self, secured):
        body = {"image": {"type": "base64", "value": B64}}
        assert (
            secured.post(
                "/sam3/embed_image", json=body, headers={"Authorization": "Bearer nope"}
            ).status_code
            == 401
        )
        assert (
            secured.post(
                "/sam3/embed_image", json=body, headers={"Authorization": "Basic azE6"}
            ).status_code
            == 401
        )
        assert secured.post("/sam3/embed_image?api_key=k-on", json=body).status_code == 401
        assert secured.post("/sam3/embed_image", json={**body, "api_key": 1}).status_code == 401
        # A wrong header key is not rescued by a right body key.
        assert (
            secured.post(
                "/sam3/embed_image",
                json={**body, "api_key": "k-one"},
                headers={"Authorization": "Bearer x"},
            ).status_code
            == 401
        )

    @pytest.mark.parametrize(
        "headers",
        [[], [(b"authorization", b"Bearer wrong")], [(b"authorization", b"Basic azE6")]],
        ids=["no-key", "wrong-bearer", "not-bearer"],
    )
    def test_no_body_byte_is_read_before_the_key_is_checked(self, secured, headers):
        """A client without a valid key makes the ingress hold none of its body (40 MiB
        each, 256 in flight, were ~10 GiB when the body limit read first)."""
        declared = [(b"content-length", str(30 * 2**20).encode())]
        status, reads = asyncio.run(_call(secured.app, "/sam3/embed_image", headers + declared))
        assert status == 401 and reads == 0

    def test_a_key_in_the_header_is_checked_before_the_body_limit(self, secured):
        declared = [(b"content-length", str(50 * 2**20).encode())]
        key = [(b"authorization", b"Bearer k-one")]
        assert asyncio.run(_call(secured.app, "/sam3/embed_image", declared))[0] == 401
        assert asyncio.run(_call(secured.app, "/sam3/embed_image", key + declared)) == (413, 0)

    def test_a_body_key_only_in_a_small_body(self, engine):
        body = json.dumps({"image": {"type": "base64", "value": B64}, "api_key": "k-one"})
        size, typed = len(body), {"content-type": "application/json"}
        api, _ = make_client(engine, api_keys="k-one", max_body_key_bytes=size - 1)
        response = api.post("/sam3/embed_image", content=body, headers=typed)
        assert response.status_code == 401
        assert "SAM3_MAX_BODY_KEY_BYTES" in response.json()["message"]
        # Streamed without a length: refused once the bound is passed, unread beyond it.
        assert asyncio.run(_call(api.app, "/sam3/embed_image", [], chunks=100))[0] == 401
        header = {"Authorization": "Bearer k-one", **typed}
        assert api.post("/sam3/embed_image", content=body, headers=header).status_code == 200
        api, _ = make_client(engine, api_keys="k-one", max_body_key_bytes=size)
        assert api.post("/sam3/embed_image", content=body, headers=typed).status_code == 200

    def test_auth_comes_before_schema_errors(self, secured):
        assert secured.post("/sam3/visual_segment", json={"prompts": "nonsense"}).status_code == 401

    def test_keys_are_not_logged(self, engine, caplog):
        api, _ = make_client(engine, api_keys="secret-key-123")
        api.post("/sam3/embed_image?api_key=wrong-key-456", json={})
        api.post(
            "/sam3/embed_image",
            json={"image": {"type": "url", "value": "x"}},
            headers={"Authorization": "Bearer secret-key-123"},
        )
        # The service's logs; the test client's own (httpx logs each URL it calls) are not.
        logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")
        assert "secret-key-123" not in logged and "wrong-key-456" not in logged


class TestTenants:
    """With API keys, each key sees only the images it sent."""

    @pytest.fixture
    def secured(self, engine) -> TestClient:
        return make_client(engine, api_keys="k-one, k-two")[0]

    def test_another_key_can_neither_click_nor_overwrite(self, secured):
        one, two = {"Authorization": "Bearer k-one"}, {"Authorization": "Bearer k-two"}
        mine = {"image": {"type": "base64", "value": B64}, "image_id": "shared-name"}
        assert secured.post("/sam3/embed_image", json=mine, headers=one).status_code == 200
        click = {"image_id": "shared-name", "prompts": CLICK, "format": "rle"}
        other = secured.post("/sam3/visual_segment", json=click, headers=two)
        assert other.status_code == 404 and other.json()["code"] == "image_not_cached"
        theirs = {**mine, "image": {"type": "base64", "value": OTHER_B64}}
        response = secured.post("/sam3/embed_image", json=theirs, headers=two)
        assert response.headers["x-sam3-embedding-cache"] == "miss"  # a separate entry
        own = secured.post("/sam3/visual_segment", json=click, headers=one)
        direct = secured.post(
            "/sam3/visual_segment",
            json={"image": {"type": "base64", "value": B64}, "prompts": CLICK, "format": "rle"},
            headers=one,
        )
        assert own.json()["predictions"] == direct.json()["predictions"]
        # The key in the body names the same tenant as in the header.
        body_key = secured.post("/sam3/visual_segment", json={**click, "api_key": "k-one"})
        assert body_key.status_code == 200
        for response in (own, other, body_key):
            assert not any("k-one" in v or "k-two" in v for v in response.headers.values())

    def test_routing_keeps_one_owner_per_tenant_and_id(self):
        mine = ImageRequest(image_id="x", tenant="aaaa")
        assert owner_key(mine) != owner_key(ImageRequest(image_id="x", tenant="bbbb"))
        assert owner_key(ImageRequest(image_id="x")) == "x"


async def _call(
    app, path: str, headers: list[tuple[bytes, bytes]], chunks: int = 1
) -> tuple[int, int]:
    """POST `path` to the ASGI app with a body of 64 KiB messages (`chunks` of them, or
    endless where Content-Length is declared); returns the status and how many body messages
    the app read."""
    reads = 0
    status = 0
    endless = any(name == b"content-length" for name, _ in headers)

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        more = endless or reads < chunks
        return {"type": "http.request", "body": b"x" * 65536, "more_body": more}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return status, reads
