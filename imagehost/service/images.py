"""Image use cases: accept uploads, look up originals."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from imagehost.db import images as q
from imagehost.db.accounts import User
from imagehost.db.images import ImageRecord
from imagehost.imaging import probe as imaging
from imagehost.service.errors import Forbidden, ValidationFailed
from imagehost.service.forms import UploadForm, parse_upload_form
from imagehost.service.pools import Pools
from imagehost.service.quotas import Quotas
from imagehost.service.runtime_settings import RuntimeSettings, Settings
from imagehost.service.throttle import RateLimit
from imagehost.storage import Storage

_MB = 1000 * 1000


@dataclass(frozen=True)
class CheckedImage:
    """Image bytes that passed validation, with their digest."""

    info: imaging.ImageInfo
    size: int
    sha256: str


@dataclass(frozen=True)
class StoredOriginal:
    """An accepted upload, already written to storage, not yet recorded."""

    image_id: str
    info: imaging.ImageInfo
    size: int
    sha256: str


class Images:
    """Uploading and reading images."""

    def __init__(self, pools: Pools, storage: Storage, settings: RuntimeSettings, *,
                 limits: imaging.SourceLimits, now: Callable[[], datetime],
                 guest_limit: RateLimit, quotas: Quotas,
                 after_upload: Callable[[ImageRecord], object] | None = None):
        self._guest_limit = guest_limit
        self._quotas = quotas
        self._after_upload = after_upload
        self.uploads = 0
        self.stored_bytes = 0
        self._db = pools.db
        self._cpu = pools.cpu
        self._io = pools.io
        self._storage = storage
        self._settings = settings
        self._limits = limits
        self._now = now

    async def upload(self, body: BinaryIO, content_type: str | None,
                     owner: User | None, client: str = "local",
                     check_form: Callable[[UploadForm], None] | None = None) -> ImageRecord:
        """Parse, validate, store and record an upload; ``owner`` None means a guest
        (rate limited per client address). ``check_form`` sees the parsed form first
        (on the CPU pool) and may refuse it by raising a ServiceError. ``after_upload``
        (the first views, rendered ahead) starts before the record is returned and is not
        awaited."""
        settings = await self._settings.current()
        if owner is None:
            if not settings.allow_guest_uploads:
                raise Forbidden("Guest uploads are disabled.")
            await self._guest_limit.hit(client)
        form, checked = await self._cpu.submit(self._check_form, body, content_type, settings,
                                               check_form)
        await self._quotas.precheck(owner, checked.size, settings)
        stored = await self._put(form.image, checked)
        image = await self.record(stored, owner=owner, original_name=form.file_name,
                                  description=form.description,
                                  is_public=form.is_public or owner is None, settings=settings)
        if self._after_upload is not None:
            self._after_upload(image)
        return image

    def _check_form(self, body: BinaryIO, content_type: str | None, settings: Settings,
                    check_form: Callable[[UploadForm], None] | None):
        body.seek(0)
        form = parse_upload_form(body, content_type)
        if check_form is not None:
            check_form(form)
        if form.image is None:
            raise ValidationFailed.one("image", "This value should not be null.")
        return form, self.check(form.image, settings)

    def check(self, data: bytes, settings: Settings, sha256: str | None = None) -> CheckedImage:
        """Validate image bytes exactly as an upload would and hash them, unless the
        caller already did (blocking; CPU pool)."""
        info = validate_image(data, settings, self._limits)
        return CheckedImage(info, len(data), sha256 or hashlib.sha256(data).hexdigest())

    async def validate(self, data: bytes, settings: Settings) -> imaging.ImageInfo:
        """Validate image bytes as an upload would, without storing them."""
        return await self._cpu.submit(validate_image, data, settings, self._limits)

    async def store(self, data: bytes, settings: Settings, sha256: str | None = None, *,
                    owner: User | None = None) -> StoredOriginal:
        """Validate image bytes and write the original (QuotaExceeded first if ``owner``
        is full already); record it with ``record``."""
        checked = await self._cpu.submit(self.check, data, settings, sha256)
        await self._quotas.precheck(owner, checked.size, settings)
        return await self._put(data, checked)

    async def _put(self, data: bytes, checked: CheckedImage) -> StoredOriginal:
        image_id = str(uuid.uuid4())
        await self._io.run(self._storage.put_original, image_id, checked.info.ext, data)
        return StoredOriginal(image_id, checked.info, checked.size, checked.sha256)

    async def duplicate_of(self, owner: User, sha256: str) -> ImageRecord | None:
        """``owner``'s image with exactly this content, if there is one."""
        return await self._db.run(q.image_by_owner_and_hash, owner.id, sha256)

    async def record(self, stored: StoredOriginal, *, owner: User | None, original_name: str,
                     description: str, is_public: bool,
                     settings: Settings | None = None) -> ImageRecord:
        """Insert the record of a stored original; the file is removed if that fails,
        or if the image would take its owner over a quota (QuotaExceeded).

        ``original_name`` is the client's file name ("" for none); the record's
        ``file_name`` is ``{id}.{ext}``, the extension from the content.
        """
        settings = settings or await self._settings.current()
        info = stored.info
        image = ImageRecord(
            id=stored.image_id, owner_id=owner.id if owner else None,
            file_name=f"{stored.image_id}.{info.ext}", original_name=original_name,
            description=description,
            is_public=is_public, created_at=self._now(), updated_at=None, views=0,
            size=stored.size, mime_type=info.mime_type, width=info.width, height=info.height,
            sha256=stored.sha256,
            blurhash=info.placeholder.blurhash if info.placeholder else None,
            dominant_color=info.placeholder.dominant_color if info.placeholder else None)
        try:
            await self._quotas.insert(image, owner, settings)
        except BaseException:
            await self.discard(stored)
            raise
        self.uploads += 1
        self.stored_bytes += stored.size
        return image

    async def discard(self, stored: StoredOriginal) -> None:
        """Remove an original that will not be recorded; a failure leaves an orphan file,
        which is harmless (never a record without its file; ``imagehost gc`` removes it)."""
        try:
            await self._io.run(self._storage.delete_original, stored.image_id, stored.info.ext)
        except Exception:
            pass


def validate_image(data: bytes, settings: Settings,
                   limits: imaging.SourceLimits) -> imaging.ImageInfo:
    """Check size, type and integrity in the seed's order; ValidationFailed with its messages."""
    check_size(len(data), settings)
    try:
        info = imaging.probe(data, limits)
    except imaging.NotAnImage as e:
        if e.mime_type in settings.allowed_mime_types:
            raise _invalid("The image file is corrupted.") from e
        raise _wrong_type(e.mime_type, settings) from e
    except imaging.CorruptImage as e:
        raise _invalid("The image file is corrupted.") from e
    except imaging.TooManyPixels as e:
        raise _invalid(f"The image has too many pixels ({e.pixels} pixels). "
                       f"Maximum amount expected is {e.max_pixels} pixels.") from e
    except imaging.TooManyFrames as e:
        raise _invalid(f"The animation has too many frames ({e.frames} frames). "
                       f"Maximum amount expected is {e.max_frames} frames.") from e
    if info.mime_type not in settings.allowed_mime_types:
        raise _wrong_type(info.mime_type, settings)
    return info


def check_size(size: int, settings: Settings) -> None:
    """ValidationFailed with the seed's message when ``size`` bytes exceed the limit."""
    if size > settings.max_size:
        raise _invalid(
            f"The file is too large ({size / _MB:.2f} MB). "
            f"Allowed maximum size is {_megabytes(settings.max_size)} MB.")


def _wrong_type(mime_type: str, settings: Settings) -> ValidationFailed:
    allowed = ", ".join(f'"{m}"' for m in settings.allowed_mime_types)
    return _invalid(f'The mime type of the file is invalid ("{mime_type}"). '
                    f"Allowed mime types are {allowed}.")


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed.one("image", message)


def _megabytes(size: int) -> str:
    """A limit as the seed prints it: ``1`` for 1 MB, ``1.5`` for 1.5 MB."""
    return f"{size / _MB:.2f}".rstrip("0").rstrip(".")
