"""Errors a command reports as one line on stderr (exit code 1 unless it says otherwise)."""

from __future__ import annotations


class CommandFailed(Exception):
    """The operation failed; ``message`` is the one line shown to the operator, ``code``
    the exit status (``imagehost_cli.main`` lists them)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code
