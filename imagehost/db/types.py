"""Column types and normalised forms shared by the schema, queries and migrations."""

import unicodedata
from datetime import UTC, datetime

import sqlalchemy as sa


class UTCDateTime(sa.TypeDecorator):
    """An aware UTC datetime on every backend (SQLite stores no offset)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def identity_key(text: str) -> str:
    """The form in which usernames and e-mail addresses are unique and looked up: NFKC,
    case-folded, NFKC again (folding can undo the normalisation), so "Alice",
    "ALICE" and "Ａlice" (fullwidth) are one name."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
