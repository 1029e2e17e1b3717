"""Quotas: how many bytes of originals and how many images a user (or all guests
together) may store.

Limits come from the runtime settings (``quota.userBytes``, ``quota.userImages``,
``quota.guestBytes``, ``quota.guestImages``; null means unlimited), and a user may have
their own (``users.quota_bytes``/``quota_images``: NULL follows the default, -1 is
unlimited whatever the default). The final check runs in the transaction that inserts
the image's record, under a lock per owner, so recorded usage never passes a limit
however many uploads race; see ``imagehost.db.quotas``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from imagehost.db import quotas as q
from imagehost.db.accounts import User, update_user
from imagehost.db.images import ImageRecord, insert_image
from imagehost.db.quotas import MAX_LIMIT, Limits, Usage
from imagehost.service.errors import ValidationFailed, Violation
from imagehost.service.pools import Pools
from imagehost.service.runtime_settings import RuntimeSettings, Settings

#: A user's own limit meaning "no limit", whatever the default says.
UNLIMITED = -1

class QuotaExceeded(ValidationFailed):
    """An image would take its owner past a limit; the message names limit and usage."""

    def __init__(self, message: str):
        super().__init__(Violation("image", message))
        self.message = message


def effective(own: int | None, default: int | None) -> int | None:
    """A user's limit: their own (-1 unlimited), or the default when they have none."""
    if own is None:
        return default
    return None if own == UNLIMITED else own


def limits_of(user: User | None, user_default: Limits, guest: Limits) -> Limits:
    """The limits that apply to ``user``'s uploads (None: the guests' total)."""
    if user is None:
        return guest
    return Limits(effective(user.quota_bytes, user_default.bytes),
                  effective(user.quota_images, user_default.images))


def check(limits: Limits, usage: Usage, size: int, *, guest: bool) -> None:
    """QuotaExceeded if one more image of ``size`` bytes would pass a limit."""
    whose = "The guests'" if guest else "The"
    if limits.images is not None and usage.images + 1 > limits.images:
        raise QuotaExceeded(f"{whose} image quota is used up: {usage.images} of "
                            f"{limits.images} images.")
    if limits.bytes is not None and usage.bytes + size > limits.bytes:
        raise QuotaExceeded(
            f"{whose} storage quota would be exceeded: {usage.bytes} of {limits.bytes} bytes "
            f"in use ({_readable(usage.bytes)} of {_readable(limits.bytes)}), and this image is "
            f"{size} bytes.")


def hand_over_refused(receiver: str, limits: Limits, held: Usage,
                      moving: Usage) -> ValidationFailed:
    """Why a user's images cannot be handed to ``receiver`` (a violation of ``to``):
    ``held`` plus ``moving`` passes ``limits``."""
    passed = []
    if limits.images is not None and held.images + moving.images > limits.images:
        passed.append(f"{held.images} of {limits.images} images")
    if limits.bytes is not None and held.bytes + moving.bytes > limits.bytes:
        passed.append(f"{held.bytes} of {limits.bytes} bytes "
                      f"({_readable(held.bytes)} of {_readable(limits.bytes)})")
    return ValidationFailed.one(
        "to", f"The images cannot go to {receiver}: {moving.images} images of "
              f"{moving.bytes} bytes would pass their quota: {' and '.join(passed)} in use. "
              "Nothing was changed.")


def own_limit_json(value: int | None) -> int | str:
    """A user's own limit as the API shows and takes it: a number, "default" or
    "unlimited"."""
    if value is None:
        return "default"
    return "unlimited" if value == UNLIMITED else value


def parse_own_limit(value: Any, prop: str) -> int | None:
    """The stored form of an own limit from the API's: ValidationFailed if it is none."""
    if value == "default":
        return None
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LIMIT:
        return value
    raise ValidationFailed.one(prop, f'This value should be "default", "unlimited" or an '
                                     f"integer from 0 to {MAX_LIMIT}.")


def usage_json(usage: Usage, limits: Limits) -> dict[str, Any]:
    """What ``GET /api/user/usage`` shows: bytes and images stored, and the limits."""
    return {"bytes": usage.bytes, "images": usage.images,
            "limits": {"bytes": limits.bytes, "images": limits.images}}


def _readable(size: float) -> str:
    """``9245`` -> ``9.2 kB``: the size for people, beside the exact number."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


class Quotas:
    """Usage and limits of users and guests, and the quota check of a new image."""

    def __init__(self, pools: Pools, settings: RuntimeSettings):
        self._db = pools.db
        self._settings = settings

    async def limits(self, user: User | None, settings: Settings | None = None) -> Limits:
        """The limits that apply to ``user`` (None: all guest uploads together)."""
        settings = settings or await self._settings.current()
        return limits_of(user, settings.user_quota, settings.guest_quota)

    async def usage(self, user: User | None) -> tuple[Usage, Limits]:
        """What ``user`` (None: the guests) stores, and the limits that apply."""
        return await self._db.run(q.usage, user.id if user else None), await self.limits(user)

    async def usage_of(self, users: list[User]) -> dict[str, tuple[Usage, Limits]]:
        """Usage and limits of each of ``users``, by id (one query for all)."""
        settings = await self._settings.current()
        found = await self._db.run(q.usage_of, [u.id for u in users])
        return {u.id: (found[u.id], limits_of(u, settings.user_quota, settings.guest_quota))
                for u in users}

    async def precheck(self, user: User | None, size: int, settings: Settings) -> None:
        """QuotaExceeded before anything is stored, when the owner is full already.

        Only a fast refusal: ``insert`` makes the check that holds under concurrency.
        """
        limits = await self.limits(user, settings)
        if not limits.unlimited:
            used = await self._db.run(q.usage, user.id if user else None)
            check(limits, used, size, guest=user is None)

    async def insert(self, image: ImageRecord, user: User | None, settings: Settings) -> None:
        """Insert ``image``'s record if it keeps its owner within their limits;
        QuotaExceeded (nothing inserted) otherwise."""
        limits = await self.limits(user, settings)
        if limits.unlimited:
            await self._db.run(insert_image, image)
            return
        refused = await self._db.run(q.insert_image_within, image, limits)
        if refused is not None:
            check(limits, refused, image.size, guest=user is None)
            raise AssertionError("insert_image_within refused an image that fits")

    async def set_own_limits(self, user: User, *, bytes: object = None,
                             images: object = None) -> User:
        """Give ``user`` their own limits (from the API's forms: a number, "default" or
        "unlimited"; None leaves a limit as it is). Returns the changed user."""
        values = {}
        if bytes is not None:
            values["quota_bytes"] = parse_own_limit(bytes, "quota.bytes")
        if images is not None:
            values["quota_images"] = parse_own_limit(images, "quota.images")
        if values:
            await self._db.run(update_user, user.id, **values)
        return replace(user, **values)
