"""Parse an upload's multipart/form-data body (blocking: run on the CPU pool).

Uses the streaming ``multipart`` parser over the spooled request body, so a large
upload is never parsed on the reactor thread nor held twice in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from imagehost.service.errors import BadRequest, ValidationFailed

_CHUNK = 64 * 1024
_TEXT_FIELD_LIMIT = 64 * 1024
DESCRIPTION_MAX = 255
_KNOWN_FIELDS = ("image", "description", "isPublic", "albumId", "expiresAt", "expiresIn")


@dataclass(frozen=True)
class UploadForm:
    """The fields of an upload form."""

    image: bytes | None
    file_name: str
    description: str
    is_public: bool
    album_id: str = ""  # the uploader's album to put the image in ("" for none)
    expires_at: str = ""  # ISO 8601, as sent ("" for none)
    expires_in: str = ""  # seconds, as sent ("" for none)
    # The other short text fields, e.g. the web page's CSRF token.
    extra: dict[str, str] = field(default_factory=dict)


def boundary_of(content_type: str | None) -> str:
    """The multipart boundary of a Content-Type header; BadRequest if there is none."""
    import multipart  # on the first upload: a daemon that only serves never loads it

    mime, options = multipart.parse_options_header(content_type or "")
    if mime != "multipart/form-data":
        raise BadRequest("The request body must be multipart/form-data.")
    boundary = options.get("boundary")
    if not boundary or len(boundary) > 200:
        raise BadRequest("The multipart/form-data Content-Type has no valid boundary.")
    return boundary


def parse_upload_form(body: BinaryIO, content_type: str | None) -> UploadForm:
    """Read the ``image``, ``description`` and ``isPublic`` fields from ``body``."""
    fields = _read_fields(body, boundary_of(content_type))
    image = fields.get("image")
    description = _text(fields, "description")
    if len(description) > DESCRIPTION_MAX:
        raise ValidationFailed.one(
            "description", f"This value is too long. It should have {DESCRIPTION_MAX} "
            "characters or less.")
    return UploadForm(
        image=None if image is None else bytes(image[1]),
        file_name=_safe_file_name(image[0] if image else ""),
        description=description,
        is_public=_boolean(_text(fields, "isPublic")),
        album_id=_text(fields, "albumId").strip(),
        expires_at=_text(fields, "expiresAt").strip(),
        expires_in=_text(fields, "expiresIn").strip(),
        extra={name: _text(fields, name) for name in fields if name not in _KNOWN_FIELDS},
    )


def _read_fields(body: BinaryIO, boundary: str) -> dict[str, tuple[str, bytearray]]:
    import multipart

    fields: dict[str, tuple[str, bytearray]] = {}
    current: bytearray | None = None
    try:
        with multipart.PushMultipartParser(boundary, max_segment_count=16) as parser:
            while not parser.closed:
                chunk = body.read(_CHUNK)
                for event in parser.parse(chunk):
                    if isinstance(event, multipart.MultipartSegment):
                        if event.name in fields:
                            raise BadRequest(f'The form field "{event.name}" appears twice.')
                        current = bytearray()
                        fields[event.name] = (event.filename or "", current)
                    elif event is not None:
                        current += event
                        if event and current is not None and _over_text_limit(fields, current):
                            raise BadRequest("A form field is too long.")
                if not chunk:
                    break
    except multipart.MultipartError as e:
        raise BadRequest(f"The multipart body is malformed: {e}.") from e
    return fields


def _over_text_limit(fields: dict[str, tuple[str, bytearray]], current: bytearray) -> bool:
    # Only the image part may be large; everything else is a short text field.
    image = fields.get("image")
    return (image is None or image[1] is not current) and len(current) > _TEXT_FIELD_LIMIT


def _text(fields: dict[str, tuple[str, bytearray]], name: str) -> str:
    if name not in fields:
        return ""
    try:
        text = bytes(fields[name][1]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValidationFailed.one(name, "This value is not valid UTF-8.") from e
    if "\0" in text:  # PostgreSQL refuses NUL in text
        raise ValidationFailed.one(name, "This value must not contain NUL characters.")
    return text


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("", "false", "0", "no", "off"):
        return False
    if lowered in ("true", "1", "yes", "on"):
        return True
    raise ValidationFailed.one("isPublic", "This value should be true or false.")


def _safe_file_name(name: str) -> str:
    """The last path component, without control characters, at most 255 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable())
    return cleaned[:255]
