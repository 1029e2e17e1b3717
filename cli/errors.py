"""Errors a command reports as one line on stderr (exit code 1)."""

from __future__ import annotations


class CommandFailed(Exception):
    """The operation failed; ``message`` is the one line shown to the operator."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
