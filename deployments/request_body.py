"""A request's body read once and parsed once.

The body-limit middleware keeps the bytes it read in the request's scope, the API-key check
keeps the JSON it parsed to find a body key, and the API's routes (`JsonRoute`) take both
from there, parsing with orjson where nothing parsed the body yet: a 5 MB body (an image
sent inline, as the `inference-sdk` does with every click) parses in ~8 ms this way against
~40 ms with the standard library.

It also says what is wrong with a body a route cannot take, in words a person can act on: the
content type to send, where the JSON breaks (line, column), and each problem's field in one
style, `prompts[0].points[0].x`.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

_BODY = "sam3_body"
_JSON = "sam3_json"
JSON = b"application/json"
# Pydantic names the member of a union it tried inside an error's location ("bool", "int",
# "ExemplarBox", "function-after[...]"): not a field of the body.
_UNION_TAGS = frozenset({"bool", "int", "float", "str", "list", "dict", "none"})
WRONG_CONTENT_TYPE = (
    "the body must be JSON sent with the header Content-Type: application/json, not {sent} "
    "(with curl: -H 'content-type: application/json' -d @body.json; -d alone sends "
    "application/x-www-form-urlencoded and -F sends multipart/form-data)"
)


def keep_body(scope: Scope, body: bytes) -> None:
    scope.setdefault("state", {})[_BODY] = body


def kept_body(scope: Scope) -> bytes | None:
    return scope.get("state", {}).get(_BODY)


def parsed_json(scope: Scope, body: bytes) -> Any:
    """The body's JSON, parsed once per request. Raises `json.JSONDecodeError`."""
    state = scope.setdefault("state", {})
    if _JSON not in state:
        try:
            state[_JSON] = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson refuses what Python's parser takes (NaN, Infinity), which the API
            # answers with 400 naming the field, not 422: let the standard library decide.
            state[_JSON] = json.loads(body)
    return state[_JSON]


class JsonRequest(Request):
    """A `Request` whose body and JSON come from the scope where a middleware kept them."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            kept = kept_body(self.scope)
            self._body = kept if kept is not None else await super().body()
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parsed_json(self.scope, await self.body())
        return self._json


def is_json(content_type: str | None) -> bool:
    """Whether a body of this content type is JSON, by FastAPI's rule (no type: parsed too)."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JsonRoute(APIRoute):
    """An `APIRoute` that hands FastAPI a `JsonRequest` (FastAPI's way to change parsing),
    and answers a body of another content type with 415 saying what to send."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            scope = request.scope
            if content_type is None:
                # Parsed as JSON, as older FastAPI and Roboflow's server do (FastAPI's strict
                # content type would answer "Input should be a valid dictionary").
                scope = {**scope, "headers": [*scope["headers"], (b"content-type", JSON)]}
            elif not is_json(content_type):
                return JSONResponse(
                    {
                        "message": WRONG_CONTENT_TYPE.format(sent=content_type),
                        "code": "unsupported_media_type",
                    },
                    status_code=415,
                )
            return await handler(JsonRequest(scope, request.receive))

        return route


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as the API names fields, `prompts[0].points[0].x`: list
    positions in brackets, union members' names left out, and the prompt set's own
    `prompts` (the `{"prompts": [...]}` form) folded into the body's."""
    path = ""
    previous: str | int | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS or "[" in part or part[:1].isupper():
            continue
        elif not (part == "prompts" and previous == "prompts"):
            path += f".{part}" if path else part
        previous = part
    return path or "body"


def describe_problems(errors: Iterable[dict[str, Any]], body: bytes | None) -> str:
    """FastAPI's validation errors of a body (locations start with "body") as one message."""
    problems: dict[str, list[str]] = {}
    for error in errors:
        if error["type"] == "json_invalid":
            return json_error(error, body)
        loc = list(error["loc"])
        if loc[:1] == ["body"]:
            loc = loc[1:]
        message = error["msg"]
        if error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", message))
        elif error["type"] == "missing":
            message = "required" if loc else "the request has no body; send a JSON object"
        elif error["type"] == "bool_type":
            message += " (true or false)"
        # A union's members fail at the same field: one problem, its alternatives joined.
        problems.setdefault(field_path(loc), []).append(message)
    return "; ".join(f"{path}: {' or '.join(found)}" for path, found in list(problems.items())[:10])


def json_error(error: dict[str, Any], body: bytes | None) -> str:
    """Where a body stops being JSON: line, column and character, as `json.loads` counts."""
    reason = error.get("ctx", {}).get("error", "JSON decode error")
    position = error["loc"][-1]
    if not isinstance(position, int) or body is None:
        return f"the body is not valid JSON: {reason}"
    text = body.decode("utf-8", errors="replace")
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    return (
        f"the body is not valid JSON: {reason} at line {line}, column {column} "
        f"(character {position})"
    )
