"""Errors of the storage layer. The web layer maps them to statuses (``imagehost.web.errors``)."""

from __future__ import annotations


class StorageError(Exception):
    """Base of storage failures a caller can act on; ``message`` is a sentence for a person."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class StorageUnavailable(StorageError):
    """The object store (S3) cannot be reached or refused a request: retry later.

    A missing original is not this: it is ``FileNotFoundError``.
    """
