"""Errors a command reports as one line on stderr (exit code 1 unless it says otherwise)."""

from __future__ import annotations

#: Exit statuses: success, the operation failed, a usage error, import rejected files.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3


class CommandFailed(Exception):
    """The operation failed; ``message`` is the one line shown to the operator, ``code``
    the exit status (one of the EXIT_ values above)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code
