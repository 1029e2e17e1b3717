"""How commands show results: rich tables for people, JSON with ``--json``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Every id this installation issues (users, images, API keys) is a UUID.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def table_time(moment: datetime | str | float | None) -> str | None:
    """``2024-01-15 10:30`` in UTC: the one way tables show a time.

    Takes a datetime, an ISO 8601 string or a Unix timestamp (the listings' ``timestamp``).
    """
    if moment is None or moment == "":
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    elif not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


class Output:
    """The destination of one command's results."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        # Consoles look up sys.stdout/sys.stderr when they write, so click's test
        # runner (which swaps them) captures everything.
        self.console = Console(highlight=False, soft_wrap=False)
        self.errors = Console(stderr=True, highlight=False)

    def show(self, value: Any, human: Callable[[], None]) -> None:
        """Print ``value`` as JSON with --json, else call ``human`` to render it."""
        if self.as_json:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            human()

    def say(self, text: str) -> None:
        """A line for people (suppressed with --json)."""
        if not self.as_json:
            self.console.print(text)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              title: str | None = None, ids: Sequence[str] = ("Id",),
              times: Sequence[str] = ()) -> None:
        """A table; the lines of ``ids`` and ``times`` cells are never wrapped or cut,
        whatever the width (ids are meant to be copied), the other columns fold."""
        cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
        # No vertical rules: at 80 columns a 36-character id leaves little room.
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        for index, column in enumerate(columns):
            if column in ids:
                # As wide as the longest id, so no id folds; names beside it may.
                widest = max((len(i) for row in cells for i in _ID.findall(row[index])),
                             default=0)
                table.add_column(column, overflow="fold", min_width=max(widest, len(column)))
            elif column in times:
                widest = max((len(row[index]) for row in cells), default=0)
                table.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
            else:
                table.add_column(column, overflow="fold")
        for row in cells:
            table.add_row(*row)
        self.console.print(table)


def human_size(size: Any) -> str:
    """``1234567`` -> ``"1.2 MB"``; "" for anything that is not a byte count."""
    if not isinstance(size, int):
        return ""
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


class FileProgress:
    """A rich progress bar over files (count, bytes, rate, time left) on stderr; silent
    with --json (and, with ``terminal_only``, when stderr is not a terminal).
    ``with FileProgress(...) as advance:`` then ``advance(size)`` per file."""

    def __init__(self, out: Output, verb: str, files: int, size: int,
                 terminal_only: bool = False):
        self._files = files
        self._size = size
        self._done = 0
        self._task = None
        hidden = out.as_json or (terminal_only and not out.errors.is_terminal)
        self._bar = None if hidden else Progress(
            TextColumn(f"[bold]{verb}"), BarColumn(),
            TextColumn("{task.fields[done]}/{task.fields[files]} files"),
            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=out.errors, transient=False)

    def __enter__(self) -> Callable[[int], None]:
        if self._bar is not None:
            self._task = self._bar.add_task(
                "files", total=self._size or None, done=0, files=self._files)
            self._bar.start()
        return self._advance

    def _advance(self, size: int) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=size, done=self._done)

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.stop()
