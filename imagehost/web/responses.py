"""JSON bodies and the error envelope."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from imagehost.service.errors import BadRequest, PayloadTooLarge

JSON_BODY_LIMIT = 1024 * 1024


def dump_json(value: Any) -> bytes:
    # Escaping <, > and & keeps a JSON body from ever being sniffed as HTML.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


def json_response(request: IRequest, value: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return dump_json(value)


def no_content(request: IRequest) -> bytes:
    request.setResponseCode(204)
    return b""


def read_json(request: IRequest, required: bool = True) -> Any:
    """The request's JSON body; BadRequest if malformed, PayloadTooLarge if huge."""
    content = request.content
    content.seek(0, 2)
    if content.tell() > JSON_BODY_LIMIT:
        raise PayloadTooLarge("The JSON body is too large.")
    content.seek(0)
    raw = content.read()
    if not raw.strip():
        if required:
            raise BadRequest("A JSON body is required.")
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest("The request body is not valid JSON.") from e


def json_object(request: IRequest, required: bool = True) -> dict[str, Any]:
    body = read_json(request, required)
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object.")
    return body
