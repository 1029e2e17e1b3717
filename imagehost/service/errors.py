"""Domain errors. The web layer maps each to a status code and the error envelope."""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(Exception):
    """Base of errors a caller can act on; ``message`` is a sentence for a person."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def title(self) -> str:
        return type(self).__name__


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class RateLimited(ServiceError):
    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ServiceError):
    status = 503

    def __init__(self, message: str = "The server is busy; retry shortly.", retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Violation:
    property: str
    message: str


class ValidationFailed(ServiceError):
    """422 with the seed's envelope: one or more property violations."""

    status = 422
    # The seed's wire format names the framework exception; clients match on it.
    title = "Symfony.Component.HttpKernel.Exception.HttpException"

    def __init__(self, *violations: Violation):
        super().__init__("Validation Error")
        self.violations = list(violations)

    @classmethod
    def one(cls, prop: str, message: str) -> ValidationFailed:
        return cls(Violation(prop, message))
