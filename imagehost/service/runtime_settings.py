"""Runtime settings: defaults from the config file, overrides stored in the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagehost.config import MAX_LIFETIME, ROLES, Config
from imagehost.db.quotas import MAX_LIMIT, Limits
from imagehost.db.settings import store_settings, stored_settings
from imagehost.imaging.probe import EXTENSION_BY_MIME
from imagehost.service.errors import ValidationFailed, Violation
from imagehost.service.pools import Pools


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


@dataclass(frozen=True)
class Setting:
    category: str
    name: str  # as in the API (camelCase)
    config_key: str  # as in the ini file
    public: bool


SETTINGS = (
    Setting("access", "allowGuestUploads", "allow_guest_uploads", True),
    Setting("access", "allowRegistration", "allow_registration", True),
    Setting("image", "maxSize", "max_size", True),
    Setting("image", "allowedMimeTypes", "allowed_mime_types", True),
    Setting("quota", "userBytes", "user_bytes", False),
    Setting("quota", "userImages", "user_images", False),
    Setting("quota", "guestBytes", "guest_bytes", False),
    Setting("quota", "guestImages", "guest_images", False),
    *(Setting("expiry", f"{role}{kind.capitalize()}", f"{role}_{kind}", False)
      for role in ROLES for kind in ("default", "max")),
)
_CATEGORIES = tuple(dict.fromkeys(s.category for s in SETTINGS))
#: Every type an operator may accept (allowedMimeTypes picks from these).
ACCEPTABLE_TYPES = tuple(EXTENSION_BY_MIME)
_BY_API_NAME = {(s.category, s.name): s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """A snapshot of the effective runtime settings."""

    values: dict[tuple[str, str], Any]

    @property
    def allow_guest_uploads(self) -> bool:
        return self.values[("access", "allowGuestUploads")]

    @property
    def allow_registration(self) -> bool:
        return self.values[("access", "allowRegistration")]

    @property
    def max_size(self) -> int:
        return self.values[("image", "maxSize")]

    @property
    def allowed_mime_types(self) -> list[str]:
        return self.values[("image", "allowedMimeTypes")]

    def lifetime(self, role: str) -> tuple[int | None, int | None]:
        """The default and maximum seconds an upload of ``role`` lives (None: no limit)."""
        return (self.values[("expiry", f"{role}Default")],
                self.values[("expiry", f"{role}Max")])
    @property
    def user_quota(self) -> Limits:
        """The limits of every user without their own."""
        return Limits(self.values[("quota", "userBytes")], self.values[("quota", "userImages")])

    @property
    def guest_quota(self) -> Limits:
        """The limits of all guest uploads together."""
        return Limits(self.values[("quota", "guestBytes")],
                      self.values[("quota", "guestImages")])

    def tree(self, public_only: bool = False) -> dict[str, dict[str, Any]]:
        """The settings as the API shows them: ``{category: {name: value}}``."""
        tree: dict[str, dict[str, Any]] = {}
        for s in SETTINGS:
            if s.public or not public_only:
                tree.setdefault(s.category, {})[s.name] = self.values[(s.category, s.name)]
        return tree


def _unknown(category: str, name: str) -> str:
    """Why ``name`` is no setting of ``category``, naming the ones that are."""
    known = ", ".join(s.name for s in SETTINGS if s.category == category)
    elsewhere = [f"{s.category}.{s.name}" for s in SETTINGS if s.name == name]
    hint = f" (there is {elsewhere[0]})" if elsewhere else ""
    return f'"{name}" is not a setting of "{category}"{hint}; its settings are {known}.'


class RuntimeSettings:
    """Reads and validates runtime settings; every read goes to the database so that
    changes by the CLI or another daemon apply at once."""

    def __init__(self, config: Config, pools: Pools):
        self._config = config
        self._db = pools.db

    def defaults(self) -> dict[tuple[str, str], Any]:
        return {(s.category, s.name): self._config.get(s.category, s.config_key)
                for s in SETTINGS}

    async def current(self) -> Settings:
        values = self.defaults()
        stored = await self._db.run(stored_settings)
        values.update({k: v for k, v in stored.items() if k in _BY_API_NAME})
        return Settings(values)

    async def update(self, category: Any, values: Any) -> None:
        """Validate and store ``values`` for ``category``; ValidationFailed on any bad entry."""
        checked = self.validate(category, values)
        await self._db.run(store_settings, category, checked)

    def validate(self, category: Any, values: Any) -> dict[str, Any]:
        if not isinstance(category, str) or category not in _CATEGORIES:
            names = ", ".join(f'"{c}"' for c in _CATEGORIES[:-1])
            raise ValidationFailed.one(
                "category", f'The category must be {names} or "{_CATEGORIES[-1]}".')
        if not isinstance(values, dict) or not values:
            raise ValidationFailed.one("settings", "This value should be a non-empty object.")
        violations = []
        for name, value in values.items():
            problem = self._problem(category, name, value)
            if problem:
                violations.append(Violation(f"{category}.{name}", problem))
        if violations:
            raise ValidationFailed(*violations)
        return dict(values)

    def _problem(self, category: str, name: Any, value: Any) -> str | None:
        if (category, name) not in _BY_API_NAME:
            return _unknown(category, name)
        if name in ("allowGuestUploads", "allowRegistration"):
            return None if _is_bool(value) else "This value should be of type bool."
        if category == "expiry":
            if value is None or (isinstance(value, int) and not _is_bool(value)
                                 and 0 < value <= MAX_LIFETIME):
                return None
            return f"This value should be null or a number of seconds from 1 to {MAX_LIFETIME}."
        if name == "maxSize":
            cap = self._config.get("server", "max_body_size")
            if not isinstance(value, int) or _is_bool(value) or not 0 < value <= cap:
                return f"This value should be an integer between 1 and {cap}."
            return None
        if category == "quota":
            if value is None or (isinstance(value, int) and not _is_bool(value)
                                 and 0 <= value <= MAX_LIMIT):
                return None
            return f"This value should be null (unlimited) or an integer from 0 to {MAX_LIMIT}."
        if (not isinstance(value, list) or not value
                or any(not isinstance(v, str) or v not in EXTENSION_BY_MIME for v in value)):
            allowed = ", ".join(f'"{m}"' for m in EXTENSION_BY_MIME)
            return f"This value should be a non-empty list of: {allowed}."
        return None
