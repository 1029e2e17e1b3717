"""The one place that builds the object graph: config → storage, database, pools, services.

twistd's tap module (``makeService``), every ``--workers`` process (``imagehost.worker``)
and the CLI's local commands call it. Reactor and clocks are parameters, so nothing
here picks a global. ``build_imagehost`` imports no web code, so the CLI never loads
Klein; ``build_daemon`` adds the HTTP site and the twistd services on top.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from imagehost import auth
from imagehost.config import Config, ConfigError
from imagehost.db import (
    HEAD_REVISION,
    Database,
    create_engine,
    current_revision,
    db_threads,
    run_sync,
    upgrade,
    upgrade_in_child,
)
from imagehost.db import accounts as account_queries
from imagehost.imaging import memory
from imagehost.imaging.probe import SourceLimits
from imagehost.service import Imagehost
from imagehost.service.accounts import Accounts, check_new_user
from imagehost.service.administration import Administration, users_cursor_key
from imagehost.service.albums import Albums
from imagehost.service.delivery import Delivery
from imagehost.service.errors import ValidationFailed
from imagehost.service.expiry import ExpiredImages
from imagehost.service.images import Images
from imagehost.service.library import Library, cursor_signing_key
from imagehost.service.pools import CpuPool, IoPool, Pools
from imagehost.service.quotas import Quotas
from imagehost.service.runtime_settings import RuntimeSettings
from imagehost.service.sessions import BrowserSessions
from imagehost.service.shares import Shares
from imagehost.service.throttle import RateLimit
from imagehost.service.transforms import DeliveryPolicy, ImageUrls, Presets, UrlSigner
from imagehost.service.variant_cache import VariantCache
from imagehost.service.views import ViewCounter
from imagehost.storage import LocalStorage, Storage

_log = Logger()

#: How much lower than the reactor thread the CPU pool's threads are scheduled (nice).
RENDER_NICENESS = 5
#: Seconds without a request on the CPU pool before it starts a background job (a new
#: image's thumbnail): under a steady load of requests they wait for the load to pass.
BACKGROUND_QUIET = 0.25
#: Under a steady load, the share of one CPU thread background jobs still get (5 %:
#: after a job of d seconds, the next starts 19 d after it), so they make progress.
BACKGROUND_SHARE = 0.05

#: Lock files of the heavy-render slots, in the data directory (one per core).
RENDER_SLOTS_FOLDER = "render-slots"

#: Threads for file and S3 calls, beyond one per CPU thread (deletes, health checks,
#: shares and cache writes wait on the network or the disk, not on a core).
IO_THREADS_EXTRA = 10


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- the installation on disk ---------------------------------------------------------


def prepare_installation(config: Config, sweep: bool = True,
                         migrate_apart: bool = False) -> bytes:
    """Create the data directory, migrate the database, bootstrap the admin (blocking).

    Idempotent. Returns the JWT secret. ConfigError for a data directory that cannot be
    created or written and for an admin bootstrap that breaks the rules for new users.
    ``sweep`` removes the temp files a crash left; a CLI command running beside a live
    daemon must not, as they may be the daemon's writes in flight. ``migrate_apart``
    migrates in a child process (``imagehost.db.upgrade_in_child``: a daemon does not keep
    Alembic loaded; ``MigrationFailed`` if it fails).
    """
    _prepare_data_dir(config.data_dir)
    delivery_rules(config)  # a bad [presets] entry stops the start with one line
    secret = _load_or_create_secret(config.secret_file)
    _load_or_create_secret(config.url_signing_secret_file)
    build_storage(config).prepare(sweep)
    engine = create_engine(config.database_url)
    try:
        if not migrate_apart:
            upgrade(engine)
        elif current_revision(engine) != HEAD_REVISION:
            upgrade_in_child(config.database_url)
        _bootstrap_admin(engine, config)
    finally:
        engine.dispose()
    return secret


def _prepare_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise ConfigError(f"the data directory {path} cannot be created or written: "
                          f"{e.strerror}") from e


def upgrade_database(config: Config) -> tuple[str | None, str | None]:
    """Apply the migrations (blocking); the revisions before and after."""
    if config.database_url.startswith("sqlite"):
        config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(config.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        return before, current_revision(engine)
    finally:
        engine.dispose()


def database_revision(config: Config) -> str | None:
    """The migration the installation's database is at (blocking)."""
    engine = create_engine(config.database_url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def read_secret(config: Config) -> bytes:
    """The JWT secret of an installation that ``prepare_installation`` has set up."""
    return _read_secret(config.secret_file)


def _load_or_create_secret(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    secret = os.urandom(32).hex().encode()
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def _read_secret(path: Path) -> bytes:
    # A shared secret file may have just been created by another daemon starting at
    # the same moment: give its writer a moment rather than signing with nothing.
    for _ in range(50):
        secret = path.read_bytes().strip()
        if secret:
            return secret
        time.sleep(0.1)
    raise ConfigError(f"the secret file {path} is empty")


def _bootstrap_admin(engine, config: Config) -> None:
    admin = config.admin
    if not admin.username or not admin.password:
        return
    if run_sync(engine, account_queries.user_by_username, admin.username) is not None:
        return
    email = admin.email or f"{admin.username}@localhost"
    _check_admin(admin.username, email, admin.password, email_given=bool(admin.email))
    user = account_queries.User(
        id=str(uuid.uuid4()), username=admin.username, email=email,
        display_name=admin.username,
        password_hash=auth.hash_password(admin.password), is_admin=True, is_active=True,
        created_at=utc_now())
    run_sync(engine, account_queries.insert_user, user)
    _log.info("Created administrator {username}", username=admin.username)


_ADMIN_SOURCES = {"username": "IMAGEHOST_ADMIN_USERNAME ([admin] username)",
                  "email": "IMAGEHOST_ADMIN_EMAIL ([admin] email)",
                  "password": "IMAGEHOST_ADMIN_PASSWORD ([admin] password)"}


def _check_admin(username: str, email: str, password: str, email_given: bool) -> None:
    """The first administrator obeys the rules of ``imagehost user create``."""
    try:
        check_new_user(username, email, password)
    except ValidationFailed as e:
        # The default e-mail (user@localhost) has no dot in its domain; it is ours, not
        # the operator's, so only the fields they gave are held to the rules.
        problems = [f"{_ADMIN_SOURCES.get(v.property, v.property)}: {v.message}"
                    for v in e.violations if v.property != "email" or email_given]
        if problems:
            raise ConfigError("the first administrator cannot be created: "
                              + "; ".join(problems)) from e


def warn_if_no_users(config: Config, config_file: str | None) -> None:
    """Log the exact command that creates an administrator when there is no user."""
    engine = create_engine(config.database_url)
    try:
        if run_sync(engine, account_queries.user_count):
            return
    finally:
        engine.dispose()
    where = f"--data-dir {config.data_dir.absolute()}"
    if config_file:
        where += f" --config {Path(config_file).absolute()}"
    _log.warn("No user exists yet, so nobody can log in. Create an administrator with: "
              "imagehost {where} user create admin --email admin@example.com --admin",
              where=where)


# -- the parts ---------------------------------------------------------------------------


def build_storage(config: Config, max_connections: int = 10) -> Storage:
    """The configured storage backend (nothing is touched until it is used)."""
    if config.storage.backend != "s3":
        return LocalStorage(config.data_dir)
    # Imported here: boto3 is an optional extra, needed only for this backend.
    from imagehost.storage.s3 import S3Settings, S3Storage

    s = config.storage
    settings = S3Settings(
        bucket=s.s3_bucket, endpoint_url=s.s3_endpoint_url, region=s.s3_region,
        access_key=s.s3_access_key, secret_key=s.s3_secret_key, path_style=s.s3_path_style,
        originals_prefix=s.originals_prefix, variants_prefix=s.variants_prefix)
    return S3Storage(config.data_dir / "cache", settings, max_connections)


def build_pools(config: Config, reactor) -> Pools:
    """The DB, CPU and I/O pools (created, not started).

    Also fixes the allocator's mmap threshold for this process, so decoded images go
    back to the system when freed, lets Pillow reuse the blocks of finished images while
    renders go on, gives both back once renders go idle, and lets only as many heavy
    renders (sources decoded at nearly full size) as there are cores hold their images at
    once among all the processes on the data directory (``imagehost.imaging.memory``).
    """
    memory.map_large_buffers()
    engine = create_engine(config.database_url, config.database.pool_size)
    db_pool = ThreadPool(minthreads=1, maxthreads=db_threads(engine, config.database.pool_size),
                         name="imagehost-db")
    cpu_threads = config.render_threads()
    memory.keep_image_blocks(memory.BLOCKS_PER_RENDER_THREAD * cpu_threads)
    memory.limit_heavy_renders(memory.RenderSlots(config.data_dir / RENDER_SLOTS_FOLDER,
                                                  os.cpu_count() or 1))
    cpu_pool = ThreadPool(minthreads=cpu_threads, maxthreads=cpu_threads, name="imagehost-cpu")
    io_pool = ThreadPool(minthreads=1, maxthreads=io_threads(config), name="imagehost-io")
    return Pools(db=Database(engine, reactor, db_pool),
                 cpu=CpuPool(reactor, cpu_pool, config.render.queue_size,
                             when_idle=memory.release_free_memory,
                             niceness=RENDER_NICENESS,
                             background_quiet=BACKGROUND_QUIET,
                             background_share=BACKGROUND_SHARE),
                 io=IoPool(reactor, io_pool))


def io_threads(config: Config) -> int:
    return config.render_threads() + IO_THREADS_EXTRA


def source_limits(config: Config) -> SourceLimits:
    image = config.image
    return SourceLimits(max_pixels=image.max_pixels, max_frames=image.max_frames,
                        max_animation_pixels=image.max_animation_pixels)


def delivery_rules(config: Config) -> tuple[Presets, DeliveryPolicy]:
    """The presets and the signature policy of ``[presets]`` and ``[delivery]``;
    ConfigError naming a bad preset, or an eager one that is no preset."""
    presets = Presets.from_config(config.presets, config.image.max_dimension)
    for name in config.delivery.eager_presets:
        if name not in presets:
            raise ConfigError(f"[delivery] eager_presets: unknown preset {name!r} "
                              f"(known: {', '.join(presets.names())})")
    policy = DeliveryPolicy(require_signature=config.delivery.require_signature,
                            presets_only=config.delivery.presets_only)
    return presets, policy


def build_imagehost(config: Config, reactor, secret: bytes, *, clock=None,
                    pools: Pools | None = None) -> Imagehost:
    """Wire the service layer for ``config`` (pools are created, not started).

    ``clock`` (default: the reactor) times view flushes and how long a remembered image
    is trusted; ``pools`` replaces the configured ones (tests pass synchronous pools).
    """
    clock = reactor if clock is None else clock
    pools = build_pools(config, reactor) if pools is None else pools
    # Only I/O threads talk to the store: one S3 connection each.
    storage = build_storage(config, max_connections=pools.io.threads)
    limits = config.limits
    settings = RuntimeSettings(config, pools)
    accounts = Accounts(
        pools, secret, algorithm=config.auth.jwt_algorithm,
        access_ttl=config.auth.access_token_ttl, refresh_ttl=config.auth.refresh_token_ttl,
        now=utc_now, login_limits=(
            RateLimit(pools, "login-ip", limits.logins_per_minute_per_ip, time.time,
                      "login attempts from this address"),
            RateLimit(pools, "login-user", limits.logins_per_minute_per_user, time.time,
                      "login attempts for this user")))
    cursor_key = cursor_signing_key(secret)
    albums = Albums(pools, now=utc_now, cursor_key=cursor_key)
    quotas = Quotas(pools, settings)
    presets, policy = delivery_rules(config)
    urls = ImageUrls(UrlSigner(_load_or_create_secret(config.url_signing_secret_file)), policy)
    delivery = Delivery(pools, storage, VariantCache(storage, config.cache.max_size, pools.io),
                        ViewCounter(pools, clock=clock),
                        max_dimension=config.image.max_dimension, clock=clock,
                        revalidate_after=config.cache.revalidate_after, presets=presets,
                        urls=urls, auto_avif=config.delivery.auto_avif,
                        eager_presets=config.delivery.eager_presets,
                        intermediate_size=config.delivery.intermediate_size, now=utc_now)
    images = Images(pools, storage, settings, limits=source_limits(config), now=utc_now,
                    albums=albums, guest_limit=RateLimit(pools, "guest-upload-ip",
                                          limits.guest_uploads_per_minute_per_ip, time.time,
                                          "guest uploads from this address"),
                    quotas=quotas, after_upload=delivery.render_first_views)
    library = Library(pools, storage, now=utc_now, cursor_key=cursor_key,
                      on_delete=delivery.deleted, on_change=delivery.forget)
    sessions = BrowserSessions(pools, accounts, secret, ttl=config.auth.session_ttl,
                               now=utc_now)
    shares = Shares(pools, delivery, secret=secret, now=utc_now, cursor_key=cursor_key,
                    unlock_limits=(
        RateLimit(pools, "share-unlock-ip", limits.share_unlocks_per_minute_per_ip, time.time,
                  "password attempts from this address"),
        RateLimit(pools, "share-unlock", limits.share_unlocks_per_minute_per_share, time.time,
                  "password attempts on this link")))
    administration = Administration(pools, accounts, quotas, library,
                                    cursor_key=users_cursor_key(secret))
    return Imagehost(pools=pools, storage=storage, accounts=accounts, images=images,
                     settings=settings, library=library, delivery=delivery,
                     sessions=sessions,
                     quotas=quotas, administration=administration,
                     albums=albums, shares=shares,
                     expired=ExpiredImages(pools, storage, now=utc_now,
                                           on_delete=delivery.deleted))


# -- one daemon process ------------------------------------------------------------------


def build_daemon(config: Config, reactor, secret: bytes):
    """The service tree and HTTP site of one daemon process (an ``imagehost.daemon.Daemon``),
    without listeners."""
    # Imported here so that build_imagehost (the CLI's entry) does not load Klein.
    from imagehost.daemon import Daemon, ImagehostService
    from imagehost.web.api import ImagehostAPI
    from imagehost.web.clients import ClientAddresses
    from imagehost.web.metrics import Metrics
    from imagehost.web.pages import ImagehostPages, SiteRoot
    from imagehost.web.site import AccessLog, ImagehostSite, SiteLimits

    imagehost = build_imagehost(config, reactor, secret)
    server = config.server
    metrics = Metrics(imagehost, ImagehostAPI.app.url_map, ImagehostPages.app.url_map,
                      allowed_networks=config.metrics.allowed_networks,
                      bearer_token=config.metrics.bearer_token)
    limits = SiteLimits(max_body_size=server.max_body_size,
                        max_header_size=server.max_header_size,
                        max_uri_length=server.max_uri_length,
                        header_timeout=server.header_timeout, idle_timeout=server.idle_timeout)
    clients = ClientAddresses(server.trusted_proxies)
    pages = ImagehostPages(imagehost, clients, server.public_url)
    site = ImagehostSite(SiteRoot(ImagehostAPI(imagehost, metrics).resource(), pages),
                         reactor, limits, metrics,
                         AccessLog(server.access_log, reactor, imagehost.pools.io.run),
                         clients)
    lifecycle = ImagehostService(imagehost, site, reactor, server.shutdown_timeout,
                                 sweep_interval=config.expiry.sweep_interval)
    return Daemon(imagehost, site, lifecycle)
