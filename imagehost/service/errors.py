"""Domain errors: each says what went wrong, not which HTTP status it is.

``imagehost.web.errors`` maps each to a status and the wire title, in one table.
"""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(Exception):
    """Base of errors a caller can act on; ``message`` is a sentence for a person."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    """The request is malformed (a parameter, a cursor, a JSON body)."""


class Unauthorized(ServiceError):
    """No valid credentials."""


class Forbidden(ServiceError):
    """Valid credentials, but not allowed to do this."""


class NotFound(ServiceError):
    """No such image, user or key (or not one the caller may see)."""


class Gone(ServiceError):
    """It existed and has expired (a share link past its expiry)."""


class PayloadTooLarge(ServiceError):
    """A body too large for what it is."""


class RateLimited(ServiceError):
    """Too many attempts; ``retry_after`` seconds until the next is allowed."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ServiceError):
    """The CPU pool is full; ``retry_after`` seconds is a fair wait."""

    def __init__(self, message: str = "The server is busy; retry shortly.", retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DamagedOriginal(ServiceError):
    """The stored original cannot be decoded (damaged on disk or in the bucket): the
    server's fault, not the request's, and asking again will not help."""

    def __init__(self, message: str = "The stored original of this image is damaged and "
                                      "cannot be rendered; the server's operator has it "
                                      "in the log."):
        super().__init__(message)


@dataclass(frozen=True)
class Violation:
    property: str
    message: str


class ValidationFailed(ServiceError):
    """One or more property violations (the seed's 422)."""

    def __init__(self, *violations: Violation):
        super().__init__("Validation Error")
        self.violations = list(violations)

    @classmethod
    def one(cls, prop: str, message: str) -> ValidationFailed:
        return cls(Violation(prop, message))


class BackupFailed(ServiceError):
    """A backup or restore could not be made (the message says why)."""
