"""The JSON shapes of account records that the HTTP API and the CLI's ``--json`` share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imagehost.db.accounts import ApiKey, User
from imagehost.service.administration import ManagedUser
from imagehost.service.quotas import own_limit_json, usage_json


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with microseconds and offset, as the seed shows times."""
    return None if moment is None else moment.isoformat(timespec="microseconds")


def user_json(user: User) -> dict[str, Any]:
    """A user as ``GET /api/user`` shows it."""
    return {"id": user.id, "email": user.email, "username": user.username,
            "displayName": user.display_name, "roles": user.roles,
            "createdAt": iso(user.created_at)}


def api_key_json(key: ApiKey, now: datetime) -> dict[str, Any]:
    """An API key (never its secret) as ``GET /api/user/api-keys`` lists it."""
    return {"id": key.id, "name": key.name, "createdAt": iso(key.created_at),
            "expiresAt": iso(key.expires_at), "lastUsedAt": iso(key.last_used_at),
            "isExpired": key.is_expired(now)}


def new_api_key_json(key: str, record: ApiKey) -> dict[str, Any]:
    """A key just created: the only time its secret is shown."""
    return {"key": key, "keyId": record.id, "name": record.name,
            "expiresAt": iso(record.expires_at)}


def managed_user_json(managed: ManagedUser) -> dict[str, Any]:
    """A user as the admin API shows them: whether they may log in, what they store, the
    limits in force and their own limits ("default", "unlimited" or a number)."""
    user = managed.user
    return {**user_json(user), "isActive": user.is_active,
            "usage": usage_json(managed.usage, managed.limits),
            "quota": {"bytes": own_limit_json(user.quota_bytes),
                      "images": own_limit_json(user.quota_images)}}
