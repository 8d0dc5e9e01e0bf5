"""Request bodies: JSON objects read, bounded, and kept to the fields and options a route takes."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from olla.api import get_object
from olla.chat import ParamValue, coerce_parameters, known_options
from olla.errors import InvalidRequest
from olla.server.metrics import REQUEST_INFO

# How deep a body may nest ({} is 1). Real bodies stay far below: a tool whose parameters nest
# objects 40 deep is about 85 levels in a /api/chat body. Deeper ones could only fail later, in
# code that recurses once a level or more: json.loads stops near 1,000 levels (RecursionError),
# json.dumps to the runner and Jinja's tojson likewise, and the JSON schema to grammar
# conversion near 800 (measured at the top of a stack; a request's stack is deeper).
MAX_DEPTH = 128
_CONTAINERS = frozenset((dict, list))  # what json.loads nests


async def read_json(request: web.Request, fields: Collection[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is `{}` (as Ollama allows for GETs).

    With `fields`, a key outside them is left out and named in the request's log line: Ollama
    ignores fields it does not know, and clients send newer ones (`reasoning`, `n`, ...).
    """
    body = await read_json_value(request)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - set(fields)) if fields is not None else []
    if unknown:
        note_ignored(request, [f"field {name}" for name in unknown])
        body = {k: v for k, v in body.items() if k not in unknown}
    return body


async def read_json_value(request: web.Request) -> Any:
    """The request body as any JSON value (an object, a list, ...), bounded in size and depth;
    None for an empty body. Every route reads its body through this."""
    raw = await request.read()  # bounded by the app's client_max_size → 413
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not UTF-8 JSON: {exc.reason} at byte {exc.start}"
        ) from None
    except RecursionError:  # nested past what json.loads can follow: far past MAX_DEPTH
        raise _too_deep() from None
    if nests_deeper(body, MAX_DEPTH):
        raise _too_deep()
    return body


def note_ignored(request: web.Request, what: list[str]) -> None:
    """Name what a request sent and olla ignored (unknown fields, options) in its log line."""
    info = request.get(REQUEST_INFO)
    if info is not None and what:
        info.setdefault("ignored", []).extend(what)


def request_options(request: web.Request, body: Mapping[str, Any]) -> dict[str, ParamValue]:
    """A body's `options`, typed (a known option with a bad value is a 400); unknown ones are
    left out and named in the log line, as Ollama ignores them."""
    options, unknown = known_options(get_object(body, "options"))
    note_ignored(request, [f"option {name}" for name in unknown])
    return coerce_parameters(options)


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"request body nests arrays and objects more than {MAX_DEPTH} levels deep; flatten "
        "it (a JSON schema can define a part once in $defs and $ref it)"
    )


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` nest more than `limit` (>= 1) levels (`{}` is 1);
    without recursion, so that any depth json.loads returns can be measured."""
    stack: list[tuple[Any, int]] = [(value, 1)] if type(value) in _CONTAINERS else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        # scalars only, told apart in C: a list of 5M numbers in 0.11 s, not 1.1 s
        if _CONTAINERS.isdisjoint(map(type, children)):
            continue
        if depth == limit:
            return True  # a child opens one level more
        # an empty child ends there and needs no turn on the stack: 4M [] in 0.2 s, not 5 s;
        # a body of 1M small objects still takes about twice its json.loads time
        stack.extend(
            (child, depth + 1) for child in children if child and type(child) in _CONTAINERS
        )
    return False
