"""The one table from domain errors to HTTP: status, wire title and ``Retry-After``.

Service and storage errors say what went wrong; only this module knows what a client
sees for each. ``error_body`` is the envelope ``{"error": {"title", "message",
"violations"?}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagehost.service.errors import (
    BackupFailed,
    BadRequest,
    DamagedOriginal,
    Forbidden,
    Gone,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
    Unauthorized,
    ValidationFailed,
)
from imagehost.service.quotas import QuotaExceeded
from imagehost.service.transforms import SignatureInvalid, TransformNotAllowed
from imagehost.storage.errors import StorageError, StorageUnavailable

#: The seed's wire format names the framework exception of a 422; clients match on it.
SYMFONY_TITLE = "Symfony.Component.HttpKernel.Exception.HttpException"

#: A store that cannot be reached is given this long before a retry.
STORAGE_RETRY_AFTER = 5


@dataclass(frozen=True)
class WireError:
    """How one kind of error goes out: its status and title (None: the class name)."""

    status: int
    title: str | None = None


STATUS_BY_ERROR: dict[type[Exception], WireError] = {
    BadRequest: WireError(400),
    Unauthorized: WireError(401),
    Forbidden: WireError(403),
    SignatureInvalid: WireError(403),
    TransformNotAllowed: WireError(403),
    NotFound: WireError(404),
    Gone: WireError(410),
    PayloadTooLarge: WireError(413),
    ValidationFailed: WireError(422, SYMFONY_TITLE),
    QuotaExceeded: WireError(422, SYMFONY_TITLE),
    RateLimited: WireError(429),
    Overloaded: WireError(503),
    StorageUnavailable: WireError(503),
    # The server's own data is bad: a retry will not help, so no 503 and no Retry-After.
    DamagedOriginal: WireError(500),
    # Raised only by the CLI's backup and restore; no route can reach it.
    BackupFailed: WireError(500),
}

#: What the web layer catches and answers through this table.
HANDLED = (ServiceError, StorageError)


def wire_error(error: Exception) -> WireError:
    """The entry for ``error``'s class or its nearest listed base (400 for the rest)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return WireError(400)


def status_of(error: Exception) -> int:
    return wire_error(error).status


def retry_after(error: Exception) -> int | None:
    """Seconds for a ``Retry-After`` header, None when the error has none."""
    if isinstance(error, RateLimited | Overloaded):
        return error.retry_after
    if isinstance(error, StorageUnavailable):
        return STORAGE_RETRY_AFTER
    return None


def error_body(error: ServiceError | StorageError) -> dict[str, Any]:
    """The error envelope of a service or storage error."""
    body: dict[str, Any] = {"title": wire_error(error).title or type(error).__name__,
                            "message": error.message}
    if isinstance(error, ValidationFailed):
        body["violations"] = [{"property": v.property, "message": v.message}
                              for v in error.violations]
    return {"error": body}
