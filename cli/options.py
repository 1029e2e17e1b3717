"""What ``imagehost`` was told before the command: the options every command receives.

Apart from ``main`` so that the commands' modules, which ``main`` imports lazily, can
import these without importing ``main`` back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GlobalOptions:
    """Options given before the command."""

    config_file: str | None
    data_dir: str | None
    as_json: bool

    def config(self, overrides: dict[tuple[str, str], Any] | None = None):
        """The installation's configuration, resolved as the daemon resolves it."""
        from imagehost.config import load_config

        values = {("server", "data_dir"): self.data_dir, **(overrides or {})}
        return load_config(self.config_file, overrides=values)

    def output(self):
        from imagehost_cli.output import Output

        return Output(self.as_json)


@dataclass(frozen=True)
class RemoteOptions:
    """Where and as whom ``remote`` commands talk to a server."""

    url: str
    api_key: str | None
    username: str | None
    password: str | None
    as_json: bool
