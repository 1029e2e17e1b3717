"""Points in time sent by clients (ISO 8601 with an offset), checked once for everyone."""

from __future__ import annotations

from datetime import UTC, datetime

from imagehost.service.errors import ValidationFailed

#: Dates from clients end before this year, so that arithmetic on them cannot overflow.
LAST_YEAR = 9999


def parse_moment(value: object, prop: str) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (None stays None); ValidationFailed
    naming ``prop`` when it is not one."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError) as e:
        raise ValidationFailed.one(prop, "This value is not a valid ISO 8601 datetime.") from e
    if moment.tzinfo is None:
        raise ValidationFailed.one(prop, "This value must include a UTC offset.")
    try:
        # In UTC, as it is stored; the offset can push a date past year 9999 or before 1.
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc.year >= LAST_YEAR:
        raise ValidationFailed.one(
            prop, f"This value must be a date before the year {LAST_YEAR} (UTC).")
    return utc
