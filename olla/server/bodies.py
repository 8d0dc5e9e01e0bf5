"""Request bodies: JSON objects read, bounded and checked against the fields a route takes."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

from olla.errors import InvalidRequest


async def read_json(request: web.Request, fields: Collection[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is `{}` (as Ollama allows for GETs).

    With `fields`, a key outside them is a 400 that names it (a typo must not pass unnoticed).
    """
    raw = await request.read()  # bounded by the app's client_max_size → 413
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not UTF-8 JSON: {exc.reason} at byte {exc.start}"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - set(fields)) if fields is not None else []
    if unknown:
        raise InvalidRequest(
            f'unknown field "{unknown[0]}" for {request.method} {request.path}; '
            f"it takes: {', '.join(sorted(fields or ()))}"
        )
    return body
