"""Local commands: they work on the installation through the service layer, like the daemon.

Each ``async def`` here takes the reactor first and is run by ``imagehost_cli.main.go``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

from imagehost.db.accounts import ApiKey, User
from imagehost.service import Imagehost, wire
from imagehost.service.quotas import own_limit_json, usage_json
from imagehost.service.sharex import sharex_uploader
from imagehost_cli.errors import CommandFailed
from imagehost_cli.options import GlobalOptions
from imagehost_cli.output import human_size, table_time


@asynccontextmanager
async def installation(reactor, options: GlobalOptions,
                       overrides: dict[tuple[str, str], Any] | None = None,
                       ) -> AsyncIterator[Imagehost]:
    """The service layer of the configured installation, with its pools running."""
    from imagehost.assembly import build_imagehost, prepare_installation

    config = options.config(overrides)
    # No sweep of temp files: they may be a running daemon's writes in flight.
    secret = await deferToThread(prepare_installation, config, False)
    imagehost = build_imagehost(config, reactor, secret)
    imagehost.start()
    try:
        yield imagehost
    finally:
        imagehost.stop()


# -- installation -------------------------------------------------------------


async def init(reactor, options: GlobalOptions) -> None:
    from imagehost.assembly import database_revision, prepare_installation
    from imagehost.db import printable_url

    config = options.config()
    created = not config.secret_file.exists()
    await deferToThread(prepare_installation, config)
    revision = await deferToThread(database_revision, config)
    out = options.output()
    result = {"dataDir": str(config.data_dir.absolute()),
              "database": printable_url(config.database_url),
              "revision": revision, "created": created}
    out.show(result, lambda: out.say(
        f"{'Initialised' if created else 'Already initialised:'} {result['dataDir']} "
        f"(database at revision {revision})"))


async def db_upgrade(reactor, options: GlobalOptions) -> None:
    from imagehost.assembly import upgrade_database

    config = options.config()
    before, after = await deferToThread(upgrade_database, config)
    out = options.output()
    out.show({"from": before, "to": after}, lambda: out.say(
        f"Database already at revision {after}" if before == after
        else f"Database upgraded from {before or 'empty'} to {after}"))


# -- users ----------------------------------------------------------------------


def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it, and whether it may log in."""
    return {**wire.user_json(user), "isActive": user.is_active}


async def create_user(reactor, options: GlobalOptions, username: str, email: str,
                      password: str, admin: bool) -> None:
    async with installation(reactor, options) as host:
        user = await host.accounts.create_user(username, email, password, is_admin=admin)
    out = options.output()
    out.show(user_json(user), lambda: out.say(
        f"Created {'administrator' if admin else 'user'} {user.username} ({user.id})"))


async def list_users(reactor, options: GlobalOptions) -> None:
    async with installation(reactor, options) as host:
        users = await host.accounts.list_users()
    out = options.output()
    # The id shares its (36 characters wide) column with the names, so that the table
    # fits 80 columns with every cell readable.
    out.show([user_json(u) for u in users], lambda: out.table(
        ["User", "Admin", "Active", "Created (UTC)"],
        [(f"{u.username}\n{u.email}\n{u.id}", "yes" if u.is_admin else "no",
          "yes" if u.is_active else "no", table_time(u.created_at)) for u in users],
        ids=("User",), times=("Created (UTC)",)))


async def set_password(reactor, options: GlobalOptions, username: str, password: str) -> None:
    async with installation(reactor, options) as host:
        await host.accounts.set_password(username, password)
    out = options.output()
    out.show({"username": username}, lambda: out.say(f"Password of {username} changed"))


async def set_active(reactor, options: GlobalOptions, username: str, active: bool) -> None:
    async with installation(reactor, options) as host:
        await host.accounts.set_active(username, active)
    out = options.output()
    out.show({"username": username, "isActive": active}, lambda: out.say(
        f"{username} {'enabled' if active else 'disabled'}"))


async def delete_user(reactor, options: GlobalOptions, username: str,
                      hand_to: str | None) -> None:
    from imagehost.service.administration import DELETE_IMAGES, HAND_OVER_IMAGES

    async with installation(reactor, options) as host:
        user = await host.accounts.user_named(username)
        receiver = await host.accounts.user_named(hand_to) if hand_to else None
        deleted = await host.administration.delete_user(
            None, user.id, images=HAND_OVER_IMAGES if receiver else DELETE_IMAGES,
            to=receiver.id if receiver else None)
    out = options.output()
    result = {"username": user.username, "id": user.id,
              "deletedImages": len(deleted.removed), "handedOverImages": deleted.handed_over,
              "handedTo": receiver.username if receiver else None}
    out.show(result, lambda: out.say(
        f"Deleted {user.username}; " + (f"{deleted.handed_over} images now belong to "
                                         f"{receiver.username}" if receiver else
                                         f"{len(deleted.removed)} images deleted")))


async def user_quota(reactor, options: GlobalOptions, username: str,
                     max_bytes: int | str | None, max_images: int | str | None) -> None:
    async with installation(reactor, options) as host:
        user = await host.accounts.user_named(username)
        user = await host.quotas.set_own_limits(user, bytes=max_bytes, images=max_images)
        usage, limits = await host.quotas.usage(user)
    result = {"username": user.username, **usage_json(usage, limits),
              "quota": {"bytes": own_limit_json(user.quota_bytes),
                        "images": own_limit_json(user.quota_images)}}
    out = options.output()

    def limit(value: int | None, own: int | str, size: bool) -> str:
        shown = "unlimited" if value is None else human_size(value) if size else str(value)
        return f"{shown} (the default)" if own == "default" else shown

    out.show(result, lambda: out.table(
        ["", "In use", "Limit"],
        [("Bytes", human_size(usage.bytes), limit(limits.bytes, result["quota"]["bytes"], True)),
         ("Images", str(usage.images), limit(limits.images, result["quota"]["images"], False))],
        title=f"Quota of {user.username}"))


# -- API keys ---------------------------------------------------------------------


async def create_api_key(reactor, options: GlobalOptions, username: str, name: str,
                         expires_at: datetime | None, sharex: str | None,
                         sharex_options: dict | None = None) -> None:
    config = options.config()
    async with installation(reactor, options) as host:
        owner = await host.accounts.user_named(username)
        new = await host.accounts.create_api_key(owner, name, expires_at)
    result = wire.new_api_key_json(new.key, new.record)
    if sharex is not None:
        path = Path(sharex or f"imagehost-{username}.sxcu")
        write_sharex_uploader(path, config.server.client_url(), new.key, **(sharex_options or {}))
        result["sharexFile"] = str(path)
    out = options.output()

    def human() -> None:
        out.say(f"API key for {username} (shown once, store it now):")
        out.console.print(new.key, markup=False)
        out.say(f"id {new.record.id}, name {new.record.name!r}, expires "
                f"{wire.iso(new.record.expires_at) or 'never'}")
        if sharex is not None:
            out.say(f"ShareX uploader written to {result['sharexFile']}")

    out.show(result, human)


def write_sharex_uploader(path: Path, public_url: str, key: str, **options) -> None:
    """Write the uploader file readable by its owner only (it holds the key)."""
    text = json.dumps(sharex_uploader(public_url, key, **options), indent=2) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def api_key_json(key: ApiKey, username: str, now: datetime) -> dict[str, Any]:
    """An API key as the API lists it, with its owner."""
    return {**wire.api_key_json(key, now), "username": username}


async def list_api_keys(reactor, options: GlobalOptions, username: str | None) -> None:
    async with installation(reactor, options) as host:
        owner = await host.accounts.user_named(username) if username else None
        keys = await host.accounts.list_api_keys(owner)
        names = {u.id: u.username for u in await host.accounts.list_users()}
        now = host.accounts.now()
    rows = [api_key_json(k, names.get(k.user_id, "?"), now) for k in keys]
    out = options.output()
    out.show(rows, lambda: out.table(
        ["Key", "Expires (UTC)", "Last used (UTC)"],
        [(f"{r['name']} (of {r['username']})\n{r['id']}",
          "expired" if r["isExpired"] else table_time(r["expiresAt"]) or "never",
          table_time(r["lastUsedAt"]) or "never") for r in rows],
        ids=("Key",), times=("Expires (UTC)", "Last used (UTC)")))


async def revoke_api_key(reactor, options: GlobalOptions, key_id: str) -> None:
    async with installation(reactor, options) as host:
        await host.accounts.revoke_api_key(key_id)
    out = options.output()
    out.show({"keyId": key_id, "revoked": True}, lambda: out.say(f"API key {key_id} revoked"))


# -- storage ------------------------------------------------------------------------


async def collect_garbage(reactor, options: GlobalOptions, older_than: float,
                          dry_run: bool) -> None:
    async with installation(reactor, options) as host:
        expired = await (host.expired.pending() if dry_run else host.expired.sweep())
        garbage = await host.garbage.collect(older_than=older_than, dry_run=dry_run)
    files = [("original", o) for o in garbage.originals] + [
        ("variant", v) for variants in garbage.variants.values() for v in variants]
    result = {"dryRun": dry_run, "originals": len(garbage.originals),
              "originalBytes": garbage.original_bytes,
              "variantImages": len(garbage.variants), "variantBytes": garbage.variant_bytes,
              "imageIds": sorted({o.image_id for o in garbage.originals} | set(garbage.variants)),
              "expiredImages": len(expired), "expiredImageIds": sorted(expired),
              "store": _store(options.config()),
              "files": [{"kind": kind, "path": o.location, "size": o.size}
                        for kind, o in files]}
    out = options.output()

    def human() -> None:
        verb = "Would remove" if dry_run else "Removed"
        if files:
            out.table(["Kind", "Path", "Size"],
                      [(kind, o.location, human_size(o.size)) for kind, o in files],
                      title=f"{verb} from {result['store']}", ids=("Path",))
        out.say(f"{verb} {result['originals']} originals without a record "
                f"({human_size(result['originalBytes'])}) and the variants of "
                f"{result['variantImages']} deleted images ({human_size(result['variantBytes'])})")
        out.say(f"{verb} {len(expired)} expired images (record, original and variants)")

    out.show(result, human)


def _store(config) -> str:
    """Where ``StoredObject.location`` paths are: the data directory or the bucket."""
    if config.get("storage", "backend") == "s3":
        return f"s3://{config.get('storage', 's3_bucket')}"
    return str(config.data_dir.absolute())


# -- runtime settings -------------------------------------------------------------


async def guest(reactor, options: GlobalOptions, action: str) -> None:
    async with installation(reactor, options) as host:
        if action != "status":
            await host.settings.update("access", {"allowGuestUploads": action == "enable"})
        allowed = (await host.settings.current()).allow_guest_uploads
    out = options.output()
    out.show({"allowGuestUploads": allowed}, lambda: out.say(
        f"Guest uploads are {'enabled' if allowed else 'disabled'}"))


def parse_value(text: str) -> Any:
    """A setting value: JSON when it parses (true, 5000000, ["image/png"]), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def show_settings(reactor, options: GlobalOptions) -> None:
    async with installation(reactor, options) as host:
        tree = (await host.settings.current()).tree()
    out = options.output()
    out.show(tree, lambda: out.table(
        ["Setting", "Value"],
        [(f"{category}.{name}", json.dumps(value))
         for category, values in tree.items() for name, value in values.items()]))


async def set_setting(reactor, options: GlobalOptions, category: str, name: str,
                      value: Any) -> None:
    from imagehost.service.runtime_settings import SETTINGS

    known = [f"{s.category}.{s.name}" for s in SETTINGS]
    if f"{category}.{name}" not in known:
        raise CommandFailed(f"{category}.{name} is not a setting; the settings are "
                            f"{', '.join(known)}.")
    async with installation(reactor, options) as host:
        await host.settings.update(category, {name: value})
        tree = (await host.settings.current()).tree()
    out = options.output()
    out.show({"key": f"{category}.{name}", "value": tree[category][name]},
             lambda: out.say(f"{category}.{name} = {json.dumps(tree[category][name])}"))


async def image_url(reactor, options: GlobalOptions, image_id: str,
                    parameters: dict[str, str]) -> None:
    """Print the URL of an image variant, signed with the installation's key if required."""
    async with installation(reactor, options) as host:
        path = await host.delivery.url_of(image_id, {k: [v] for k, v in parameters.items()})
    url = options.config().server.client_url() + path
    out = options.output()
    out.show({"id": image_id, "url": url, "path": path}, lambda: out.say(url))


async def placeholders(reactor, options: GlobalOptions) -> None:
    """Compute the placeholders images stored before them lack."""
    async with installation(reactor, options) as host:
        report = await host.library.backfill_placeholders()
    out = options.output()
    failed = f"; {len(report.failed)} failed: {', '.join(report.failed)}" if report.failed else ""
    out.show({"computed": report.computed, "failed": report.failed},
             lambda: out.say(f"Computed {report.computed} placeholders{failed}"))
    if report.failed:
        raise CommandFailed(f"{len(report.failed)} originals could not be read or decoded "
                            "(run imagehost verify)")
