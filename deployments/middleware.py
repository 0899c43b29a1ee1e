"""ASGI middleware that refuses a request before it reaches a route: a missing or wrong API
key (401), then a body over the size limit (413); and the clock of each request.

Starlette and FastAPI have neither a request-body limit nor API-key auth that also accepts
the key inside a JSON body (Roboflow's clients send it there), hence these two classes. The
key check comes first and reads no body byte when the key is in a header or the query; a
key in the body is looked for only in bodies up to a small bound, so an unauthenticated
client can make the ingress hold no more than that per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.request_body import keep_body, parsed_json

TENANT = "sam3_tenant"
ARRIVED = "sam3_arrived"


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"message": message, "code": code}, status_code=status, headers=headers)


class RequestClock:
    """Stamps when a request reached the app (`arrived_at`): its stages and total time
    (`Server-Timing`, the body's `time`) count from there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})[ARRIVED] = time.perf_counter()
        await self.app(scope, receive, send)


def arrived_at(scope: Scope) -> float:
    return scope.get("state", {}).get(ARRIVED) or time.perf_counter()


class RequestBodyLimit:
    """413 for bodies over `max_bytes`: from Content-Length before reading, else while reading.

    The body is read in full here, then replayed to the app (the app would buffer it anyway),
    so the refusal never surfaces inside the app's own body parsing as some other error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        read = await _read_body(receive, self.max_bytes)
        if read is None:
            await self._refuse(scope, receive, send)
            return
        messages, body = read
        keep_body(scope, body)
        await self.app(scope, _replay(messages, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "request_too_large",
            f"the request body is over {self.max_bytes} bytes (SAM3_MAX_REQUEST_BYTES)",
            Connection="close",
        )
        await response(scope, receive, send)


def tenant_of(scope: Scope) -> str | None:
    """Who sent the request: a digest of its API key (set by `ApiKeyAuth`); None without
    keys. The digest names the key's images in caches and routing; the key itself goes
    nowhere."""
    return scope.get("state", {}).get(TENANT)


class ApiKeyAuth:
    """Every path but `open_paths` and those under `open_prefixes` needs one of `keys`:
    `Authorization: Bearer <key>` (or basic auth with the key as password), an `api_key`
    query parameter, or an `api_key` field of a JSON body of at most `max_body_key_bytes`.
    Keys are compared in constant time and never logged; the request's tenant (`tenant_of`)
    is its key's digest."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        open_paths: Iterable[str],
        open_prefixes: Iterable[str] = (),
        max_body_key_bytes: int = 1024 * 1024,
    ) -> None:
        self.app = app
        self._keys = [key.encode() for key in keys]
        self._open_paths = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)
        self._max_body_key_bytes = max_body_key_bytes

    def _open(self, path: str) -> bool:
        return path in self._open_paths or path.startswith(self._open_prefixes)

    def _valid(self, key: str | bytes | None) -> bool:
        if not key:
            return False
        candidate = key.encode() if isinstance(key, str) else key
        # Compare against every key (no early exit) so timing says nothing about which matched.
        matches = [hmac.compare_digest(candidate, known) for known in self._keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = self._header_or_query_key(scope)
        if presented is not None:
            if self._valid(presented):
                _set_tenant(scope, presented)
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, receive, send)
            return
        # No key in the header or query: look in a small JSON body, then replay it to the app.
        bound = self._max_body_key_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        too_long = declared is not None and (not declared.isdigit() or int(declared) > bound)
        read = None if too_long else await _read_body(receive, bound)
        if read is None:
            await self._refuse(scope, receive, send, self._body_too_long(), Connection="close")
            return
        messages, body = read
        keep_body(scope, body)
        key = _body_key(scope, body)
        if key is None or not self._valid(key):
            await self._refuse(scope, receive, send)
            return
        _set_tenant(scope, key)
        await self.app(scope, _replay(messages, receive), send)

    def _body_too_long(self) -> str:
        return (
            f"no API key in the Authorization header or the query, and the body is over "
            f"{self._max_body_key_bytes} bytes, the most searched for an api_key "
            "(SAM3_MAX_BODY_KEY_BYTES): send the key as Authorization: Bearer <key> (the "
            "inference-sdk's api_key_transport='header') or ?api_key="
        )

    @staticmethod
    def _header_or_query_key(scope: Scope) -> bytes | None:
        authorization = dict(scope["headers"]).get(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() == b"basic":
                # Label Studio sends its ML backend's credentials as basic auth: the key is
                # the password (the user name is not checked).
                try:
                    return base64.b64decode(token.strip(), validate=True).partition(b":")[2]
                except (binascii.Error, ValueError):
                    return b""
            return token.strip() if scheme.lower() == b"bearer" else b""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "api_key" in query:
            return query["api_key"][0].encode()
        return None

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, message: str = "", **headers: str
    ) -> None:
        response = error_response(
            401,
            "unauthorized",
            message
            or "a valid API key is required: Authorization: Bearer <key>, ?api_key=, or "
            "api_key in the JSON body",
            **{"WWW-Authenticate": "Bearer", **headers},
        )
        await response(scope, receive, send)


def _set_tenant(scope: Scope, key: str | bytes) -> None:
    raw = key.encode() if isinstance(key, str) else key
    scope.setdefault("state", {})[TENANT] = hashlib.sha256(raw).hexdigest()[:32]


async def _read_body(
    receive: Receive, max_bytes: int | None = None
) -> tuple[list[Message], bytes] | None:
    """All of a request's body messages and bytes; None once over `max_bytes`."""
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if max_bytes is not None and len(body) > max_bytes:
            return None
        if not message.get("more_body", False):
            break
    return messages, bytes(body)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out already-read messages first."""

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


def _body_key(scope: Scope, body: bytes) -> str | None:
    if b"api_key" not in body:
        return None
    try:
        parsed = parsed_json(scope, body)  # kept: the route does not parse it again
    except ValueError:
        return None
    key = parsed.get("api_key") if isinstance(parsed, dict) else None
    return key if isinstance(key, str) else None
