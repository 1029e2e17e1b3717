"""The ``imagehost`` command line: click on top of Twisted.

Commands parse their arguments, import their implementation lazily and hand an
``async def run(reactor, ...)`` to ``go``, the one place that runs it under
``twisted.internet.task.react`` and turns errors into one line on stderr and an exit
code: 0 success, 1 the operation failed, 2 usage error, 3 an import that rejected some
files (the others were imported).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from imagehost_cli.errors import EXIT_FAILED, EXIT_OK
from imagehost_cli.options import GlobalOptions, RemoteOptions

Command = Callable[..., Coroutine[Any, Any, Any]]


# -- running commands -------------------------------------------------------


def go(command: Command, *args: Any) -> None:
    """Run ``command(reactor, *args)`` to completion and exit with its code.

    From a plain process this runs the reactor with ``react``. When a reactor is
    already running in another thread (the test suite), the command runs on it and
    this thread waits.
    """
    from twisted.internet import reactor
    from twisted.python.threadable import isInIOThread

    if reactor.running:
        if isInIOThread():
            raise RuntimeError("go() must not be called on the reactor thread")
        from twisted.internet.threads import blockingCallFromThread

        code = blockingCallFromThread(reactor, _start, reactor, command, args)
    else:
        code = _react(command, args)
    if code != EXIT_OK:
        raise SystemExit(code)


def _start(reactor, command: Command, args: tuple):
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(_outcome(reactor, command, args))


def _react(command: Command, args: tuple) -> int:
    from twisted.internet.task import react

    codes: list[int] = []

    async def main(reactor) -> None:
        running = _start(reactor, command, args)
        # Ctrl-C stops the reactor: cancel the command and let it clean up first.
        reactor.addSystemEventTrigger("before", "shutdown", _interrupt, running)
        codes.append(await running)

    try:
        react(main)
    except SystemExit:
        pass
    return codes[0] if codes else EXIT_FAILED


def _interrupt(running):
    if running.called:
        return None
    running.cancel()
    return running


async def _outcome(reactor, command: Command, args: tuple) -> int:
    try:
        await command(reactor, *args)
    except Exception as e:
        message, code = describe_error(e)
        click.echo(f"Error: {message}", err=True)
        return code
    return EXIT_OK


def describe_error(error: Exception) -> tuple[str, int]:
    """The one line and the exit code for an error that ended a command."""
    from twisted.internet.defer import CancelledError

    from imagehost.config import ConfigError
    from imagehost.service.errors import ServiceError, ValidationFailed
    from imagehost.storage.errors import StorageError
    from imagehost_cli.errors import CommandFailed

    if isinstance(error, CommandFailed):
        return error.message, error.code
    if isinstance(error, ValidationFailed):
        return "; ".join(f"{v.property}: {v.message}" for v in error.violations), EXIT_FAILED
    if isinstance(error, ServiceError | StorageError):
        return error.message, EXIT_FAILED
    if isinstance(error, ConfigError):
        return str(error), EXIT_FAILED
    if isinstance(error, CancelledError):
        return "Interrupted.", EXIT_FAILED
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), EXIT_FAILED
    if os.environ.get("IMAGEHOST_DEBUG"):
        import traceback

        traceback.print_exception(error)
    return (f"unexpected {type(error).__name__}: {error} "
            "(set IMAGEHOST_DEBUG=1 for a traceback)"), EXIT_FAILED


# -- global options -----------------------------------------------------------


pass_options = click.make_pass_decorator(GlobalOptions)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Configuration file (ini), as for the daemon.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Data directory (default ./data, or [server] data_dir).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.version_option(package_name="imagehost")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, data_dir: str | None,
        as_json: bool) -> None:
    """Manage an imagehost installation, or drive a remote server."""
    ctx.obj = GlobalOptions(config_file, data_dir, as_json)


def main() -> None:
    """Console script entry point."""
    cli(prog_name="imagehost")


# -- installation -------------------------------------------------------------


@cli.command()
@pass_options
def init(options: GlobalOptions) -> None:
    """Create the data directory, secret and database (idempotent)."""
    from imagehost_cli import local

    go(local.init, options)


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_options
def db_upgrade(options: GlobalOptions) -> None:
    """Apply database migrations (Alembic) up to the newest schema."""
    from imagehost_cli import local

    go(local.db_upgrade, options)


@cli.command()
@click.option("--older-than", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              metavar="SECONDS", help="Keep files younger than this (uploads in flight).")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@pass_options
def gc(options: GlobalOptions, older_than: float, dry_run: bool) -> None:
    """Remove stored originals and shared variants of images that have no record.

    A crash between storing an upload and recording it, or a render racing a delete,
    leaves such files; they are never served. Originals kept by a delete with
    preserveOnDisk stay.
    """
    from imagehost_cli import local

    go(local.collect_garbage, options, older_than, dry_run)


@cli.command()
@pass_options
def placeholders(options: GlobalOptions) -> None:
    """Compute the placeholder (BlurHash, dominant colour) of every image without one:
    those stored before placeholders existed. Safe to run while the daemons serve."""
    from imagehost_cli import local

    go(local.placeholders, options)


@cli.command("url")
@click.argument("image_id")
@click.option("--width", type=click.IntRange(min=1), help="Fit within this width.")
@click.option("--height", type=click.IntRange(min=1), help="Fit within this height.")
@click.option("--crop", type=click.Choice(["true", "false", "smart"]),
              help="Crop to exactly width x height (smart: follow the content).")
@click.option("--focal-point", "focal_point", metavar="X,Y",
              help="Crop around this point (fractions of width and height, 0 to 1).")
@click.option("--quality", type=click.IntRange(1, 100), help="Quality of lossy formats.")
@click.option("--dpr", metavar="N", help="Device pixel ratio, 1 to 4 (multiplies the size).")
@click.option("--format", "ext",
              type=click.Choice(["jpg", "jpeg", "png", "webp", "gif", "avif", "auto", "heic"]),
              help="Output format (default: what a browser displays, JPEG for HEIC; auto: "
                   "from the browser's Accept; heic: a HEIC original's own bytes).")
@click.option("--preset", metavar="NAME", help="One of the [presets] of the configuration.")
@pass_options
def url(options: GlobalOptions, image_id: str, width: int | None, height: int | None,
        crop: str | None, focal_point: str | None, quality: int | None, dpr: str | None,
        ext: str | None, preset: str | None) -> None:
    """Print the URL of an image or a variant, signed when the server requires signatures
    ([delivery] require_signature); the key is read from the installation."""
    from imagehost_cli import local

    given = {"w": width, "h": height, "crop": crop, "fp": focal_point, "q": quality,
             "dpr": dpr, "format": ext, "p": preset}
    go(local.image_url, options, image_id,
       {name: str(value) for name, value in given.items() if value is not None})


@cli.command()
@click.option("--sample", type=click.IntRange(min=1), metavar="N",
              help="Check N originals chosen at random instead of all of them.")
@click.option("--older-than", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              metavar="SECONDS",
              help="Report unrecorded files older than this (younger: uploads in flight).")
@pass_options
def verify(options: GlobalOptions, sample: int | None, older_than: float) -> None:
    """Re-hash the stored originals against the sha256 recorded at upload.

    Reports missing files, corrupt files (the bytes changed) and unrecorded files (no
    record accounts for them; imagehost gc removes those). Exit status 1 when any is found.
    """
    from imagehost_cli import maintenance

    go(maintenance.verify, options, sample, older_than)


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@pass_options
def backup(options: GlobalOptions, dest: Path) -> None:
    """Back up the installation into DEST while its daemons keep serving.

    The database (SQLite online backup, or pg_dump), secret.key, the originals (only
    those not in DEST yet; with S3 storage they stay in the bucket) and manifest.json
    with the sha256 of every original.
    """
    from imagehost_cli import backups

    go(backups.backup, options, dest)


@cli.command()
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data-dir", "target", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The new data directory (empty or not existing yet).")
@click.option("--database-url", metavar="URL",
              help="For a backup of PostgreSQL: the empty database to load it into "
                   "(default [database] url).")
@pass_options
def restore(options: GlobalOptions, source: Path, target: Path,
            database_url: str | None) -> None:
    """Rebuild an installation from the backup in SOURCE into a new data directory.

    Every original is checked against its sha256 in the manifest; then a daemon
    started on the new directory serves the library as it was. A backup of PostgreSQL
    is loaded with psql into an empty PostgreSQL database.
    """
    from imagehost_cli import backups

    go(backups.run_restore, options, source, target, database_url)


# -- users ----------------------------------------------------------------------


@cli.group()
def user() -> None:
    """Users of this installation."""


@user.command("create")
@click.argument("username")
@click.option("--email", required=True, help="E-mail address (must be unique).")
@click.option("--password", help="Password (prompted twice when omitted).")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@pass_options
def user_create(options: GlobalOptions, username: str, email: str, password: str | None,
                admin: bool) -> None:
    """Create a user."""
    from imagehost_cli import local

    if password is None:
        password = _prompt_password()
    go(local.create_user, options, username, email, password, admin)


@user.command("list")
@pass_options
def user_list(options: GlobalOptions) -> None:
    """List users."""
    from imagehost_cli import local

    go(local.list_users, options)


@user.command("passwd")
@click.argument("username")
@click.option("--password", help="New password (prompted twice when omitted).")
@pass_options
def user_passwd(options: GlobalOptions, username: str, password: str | None) -> None:
    """Set a user's password."""
    from imagehost_cli import local

    if password is None:
        password = _prompt_password()
    go(local.set_password, options, username, password)


@user.command("disable")
@click.argument("username")
@pass_options
def user_disable(options: GlobalOptions, username: str) -> None:
    """Disable a user: no login, no API key access."""
    from imagehost_cli import local

    go(local.set_active, options, username, False)


@user.command("enable")
@click.argument("username")
@pass_options
def user_enable(options: GlobalOptions, username: str) -> None:
    """Enable a disabled user."""
    from imagehost_cli import local

    go(local.set_active, options, username, True)


@user.command("delete")
@click.argument("username")
@click.option("--delete-images", is_flag=True, help="Delete the user's images with them.")
@click.option("--hand-images-to", metavar="USERNAME",
              help="Give the user's images to this user instead.")
@pass_options
def user_delete(options: GlobalOptions, username: str, delete_images: bool,
                hand_images_to: str | None) -> None:
    """Delete a user with their API keys and logins; say what happens to their images."""
    from imagehost_cli import local

    if delete_images == bool(hand_images_to):
        raise click.UsageError("say what happens to the images: --delete-images or "
                               "--hand-images-to USERNAME (one of them)")
    go(local.delete_user, options, username, hand_images_to)


class OwnLimit(click.ParamType):
    """A user's own limit: a number (bytes may end in kB, MB, GB), default or unlimited."""

    name = "N|default|unlimited"
    _NUMBER = re.compile(r"(\d+)\s*(kb|mb|gb|tb)?", re.IGNORECASE)
    _UNITS = {None: 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}

    def convert(self, value: Any, param, ctx) -> int | str:
        text = str(value).strip().lower()
        if text in ("default", "unlimited"):
            return text
        number = self._NUMBER.fullmatch(text)
        if number is None:
            self.fail(f"{value!r} is not a number (like 500MB), default or unlimited.",
                      param, ctx)
        amount, unit = number.groups()
        return int(amount) * self._UNITS[unit]


@user.command("quota")
@click.argument("username")
@click.option("--bytes", "max_bytes", type=OwnLimit(),
              help="Bytes of originals USERNAME may store (500MB, unlimited, or default: "
                   "the setting quota.userBytes).")
@click.option("--images", "max_images", type=OwnLimit(),
              help="Images USERNAME may have (a number, unlimited, or default: the setting "
                   "quota.userImages).")
@pass_options
def user_quota(options: GlobalOptions, username: str, max_bytes: int | str | None,
               max_images: int | str | None) -> None:
    """Show USERNAME's usage and limits; with --bytes/--images, give them their own.

    The defaults for every user without their own limits, and the guests' total, are the
    settings quota.userBytes, quota.userImages, quota.guestBytes, quota.guestImages.
    """
    from imagehost_cli import local

    go(local.user_quota, options, username, max_bytes, max_images)


def _prompt_password() -> str:
    return click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)


# -- API keys -------------------------------------------------------------------


class Expiry(click.ParamType):
    """``30d``/``12h``/``2w`` from now, or an ISO 8601 date or time (UTC if no offset)."""

    name = "30d|ISO-DATE"
    _RELATIVE = re.compile(r"^(\d+)\s*([hdw])$")
    _UNITS = {"h": "hours", "d": "days", "w": "weeks"}

    def convert(self, value: Any, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        relative = self._RELATIVE.match(text.lower())
        if relative:
            amount, unit = relative.groups()
            return datetime.now(UTC) + timedelta(**{self._UNITS[unit]: int(amount)})
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                day = date.fromisoformat(text)
                return datetime(day.year, day.month, day.day, tzinfo=UTC)
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither a duration like 30d nor an ISO 8601 date.",
                      param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@cli.group()
def apikey() -> None:
    """API keys (for ShareX and other upload tools)."""


@apikey.command("create")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
@click.option("--expires", type=Expiry(), help="Expiry: 30d, 12h, 2w or an ISO date.")
@click.option("--sharex", type=click.Path(dir_okay=False), is_flag=False, flag_value="",
              default=None, metavar="[FILE]",
              help="Also write a ShareX custom uploader (.sxcu) for this key.")
@pass_options
def apikey_create(options: GlobalOptions, username: str, name: str,
                  expires: datetime | None, sharex: str | None) -> None:
    """Create an API key for USERNAME; the key is shown once."""
    from imagehost_cli import local

    go(local.create_api_key, options, username, name, expires, sharex)


@apikey.command("list")
@click.argument("username", required=False)
@pass_options
def apikey_list(options: GlobalOptions, username: str | None) -> None:
    """List API keys (of USERNAME, or of everyone)."""
    from imagehost_cli import local

    go(local.list_api_keys, options, username)


@apikey.command("revoke")
@click.argument("key_id")
@pass_options
def apikey_revoke(options: GlobalOptions, key_id: str) -> None:
    """Revoke (delete) an API key by its id."""
    from imagehost_cli import local

    go(local.revoke_api_key, options, key_id)


# -- runtime settings -----------------------------------------------------------


@cli.command()
@click.argument("action", type=click.Choice(["enable", "disable", "status"]))
@pass_options
def guest(options: GlobalOptions, action: str) -> None:
    """Allow or forbid guest uploads (a running daemon follows at once)."""
    from imagehost_cli import local

    go(local.guest, options, action)


@cli.group()
def settings() -> None:
    """Runtime settings stored in the database."""


@settings.command("show")
@pass_options
def settings_show(options: GlobalOptions) -> None:
    """Show the effective runtime settings."""
    from imagehost_cli import local

    go(local.show_settings, options)


@settings.command("set")
@click.argument("key")
@click.argument("value")
@pass_options
def settings_set(options: GlobalOptions, key: str, value: str) -> None:
    """Set KEY (like access.allowGuestUploads or image.maxSize) to VALUE (JSON or text)."""
    from imagehost_cli import local

    category, dot, name = key.partition(".")
    if not dot or not category or not name:
        raise click.BadParameter("use CATEGORY.NAME, e.g. image.maxSize", param_hint="KEY")
    go(local.set_setting, options, category, name, local.parse_value(value))


# -- bulk import ------------------------------------------------------------------


@cli.command("import")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--user", "username", required=True, help="Owner of the imported images.")
@click.option("--public", is_flag=True, help="Make the imported images public.")
@click.option("--recursive", "-r", is_flag=True, help="Descend into sub-folders.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=os.cpu_count() or 1,
              show_default="CPU count", help="Files processed in parallel.")
@click.option("--dry-run", is_flag=True, help="Validate and report; store nothing.")
@pass_options
def import_(options: GlobalOptions, paths: tuple[Path, ...], username: str, public: bool,
            recursive: bool, jobs: int, dry_run: bool) -> None:
    """Import image files and folders through the same checks as an upload."""
    from imagehost_cli import importing

    go(importing.run_import, options, list(paths), username, public, recursive, jobs, dry_run)


# -- remote server ----------------------------------------------------------------


pass_remote = click.make_pass_decorator(RemoteOptions)


@cli.group()
@click.option("--url", envvar="IMAGEHOST_URL", required=True,
              help="Server URL (or IMAGEHOST_URL).")
@click.option("--api-key", envvar="IMAGEHOST_API_KEY", help="API key (or IMAGEHOST_API_KEY).")
@click.option("--username", help="Log in with this username instead of an API key.")
@click.option("--password", help="Password for --username (prompted when omitted).")
@click.pass_context
def remote(ctx: click.Context, url: str, api_key: str | None, username: str | None,
           password: str | None) -> None:
    """Drive a remote imagehost server over HTTP."""
    if username and api_key and ctx.get_parameter_source("api_key").name != "ENVIRONMENT":
        raise click.UsageError("give either --api-key or --username, not both")
    if username and password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--url")
    as_json = ctx.find_object(GlobalOptions).as_json
    ctx.obj = RemoteOptions(url.rstrip("/"), None if username else api_key, username, password,
                            as_json)


@remote.command("upload")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public", is_flag=True, help="Make the images public.")
@click.option("--description", default=None, help="Description of every uploaded image.")
@click.option("--jobs", "-j", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Uploads in parallel.")
@pass_remote
def remote_upload(options: RemoteOptions, files: tuple[Path, ...], public: bool,
                  description: str | None, jobs: int) -> None:
    """Upload FILES."""
    from imagehost_cli import remote as impl

    go(impl.upload, options, list(files), public, description, jobs)


@remote.command("list")
@click.argument("page", type=click.IntRange(min=1), default=1)
@click.option("--limit", type=click.IntRange(1, 100), default=None, help="Images per page.")
@pass_remote
def remote_list(options: RemoteOptions, page: int, limit: int | None) -> None:
    """The public feed, page PAGE."""
    from imagehost_cli import remote as impl

    go(impl.listing, options, "list", page, {"limit": limit})


@remote.command("history")
@click.argument("page", type=click.IntRange(min=1), default=1)
@click.option("--limit", type=click.IntRange(1, 100), default=None, help="Images per page.")
@pass_remote
def remote_history(options: RemoteOptions, page: int, limit: int | None) -> None:
    """Your own images, newest first, page PAGE."""
    from imagehost_cli import remote as impl

    go(impl.listing, options, "history", page, {"limit": limit})


@remote.command("detail")
@click.argument("image_id")
@pass_remote
def remote_detail(options: RemoteOptions, image_id: str) -> None:
    """Details of one image."""
    from imagehost_cli import remote as impl

    go(impl.detail, options, image_id)


@remote.command("update")
@click.argument("image_id")
@click.option("--description", default=None, help="New description.")
@click.option("--public/--private", "is_public", default=None, help="Change visibility.")
@pass_remote
def remote_update(options: RemoteOptions, image_id: str, description: str | None,
                  is_public: bool | None) -> None:
    """Change an image's description or visibility."""
    from imagehost_cli import remote as impl

    if description is None and is_public is None:
        raise click.UsageError("give --description and/or --public/--private")
    go(impl.update, options, image_id, description, is_public)


@remote.command("delete")
@click.argument("image_id")
@click.option("--preserve-on-disk", is_flag=True, help="Keep the original file on the server.")
@pass_remote
def remote_delete(options: RemoteOptions, image_id: str, preserve_on_disk: bool) -> None:
    """Delete an image."""
    from imagehost_cli import remote as impl

    go(impl.delete, options, image_id, preserve_on_disk)


@remote.command("download")
@click.argument("image_id")
@click.option("-o", "--output", "target", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default ID.EXT in the current folder).")
@click.option("--width", type=click.IntRange(min=1), help="Fit within this width.")
@click.option("--height", type=click.IntRange(min=1), help="Fit within this height.")
@click.option("--crop", is_flag=True, help="Crop to exactly width x height.")
@click.option("--format", "ext", type=click.Choice(["jpg", "jpeg", "png", "webp", "gif", "avif"]),
              help="Output format (default: the original's).")
@pass_remote
def remote_download(options: RemoteOptions, image_id: str, target: Path | None,
                    width: int | None, height: int | None, crop: bool,
                    ext: str | None) -> None:
    """Download an image, optionally resized or converted by the server."""
    from imagehost_cli import remote as impl

    go(impl.download, options, image_id, target, width, height, crop, ext)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
