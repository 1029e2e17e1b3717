"""JSON bodies and the error envelope."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from imagehost.service.errors import BadRequest, PayloadTooLarge

JSON_BODY_LIMIT = 1024 * 1024
# Every body we take is an object of scalars and short lists; this leaves ample room.
JSON_MAX_DEPTH = 32


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
        value = json.loads(raw)
    except RecursionError as e:
        raise BadRequest("The JSON body is nested too deeply.") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest("The request body is not valid JSON.") from e
    _check_json_value(value)
    return value


def _check_json_value(value: Any) -> None:
    """BadRequest unless ``value`` nests at most JSON_MAX_DEPTH deep and every string
    (keys too) is valid Unicode without NUL: JSON may escape lone surrogates
    (``"\\ud800"``), which no UTF-8 encoder, database or password hash accepts, and NUL
    (``"\\u0000"``), which PostgreSQL refuses in text."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > JSON_MAX_DEPTH:
            raise BadRequest("The JSON body is nested too deeply.")
        if isinstance(item, dict):
            pending.extend((key, depth + 1) for key in item)
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise BadRequest("The JSON body holds a string that is not valid Unicode "
                                 "(a lone surrogate escape such as \\ud800).") from e
            if "\0" in item:
                raise BadRequest("The JSON body holds a string with a NUL character.")


def json_object(request: IRequest, required: bool = True) -> dict[str, Any]:
    body = read_json(request, required)
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object.")
    return body
