"""The twistd plugin's tap module: options, and the one place that builds the object graph."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from imagehost import auth
from imagehost.config import Config, ConfigError, load_config
from imagehost.db import Database, create_engine, db_threads, run_sync, upgrade
from imagehost.db import accounts as account_queries
from imagehost.imaging.probe import SourceLimits
from imagehost.processes import WorkerProcesses
from imagehost.service import Imagehost
from imagehost.service.accounts import Accounts, check_new_user
from imagehost.service.collector import GarbageCollector
from imagehost.service.delivery import Delivery
from imagehost.service.errors import ValidationFailed
from imagehost.service.images import Images
from imagehost.service.library import Library
from imagehost.service.runtime_settings import RuntimeSettings
from imagehost.service.sessions import BrowserSessions
from imagehost.service.throttle import RateLimit
from imagehost.service.variant_cache import VariantCache
from imagehost.service.views import ViewCounter
from imagehost.service.workers import WorkerPool
from imagehost.storage import LocalStorage, Storage
from imagehost.web.api import ImagehostAPI
from imagehost.web.clients import ClientAddresses
from imagehost.web.metrics import Metrics
from imagehost.web.pages import ImagehostPages, SiteRoot
from imagehost.web.site import AccessLog, ImagehostSite, SiteLimits

_log = Logger()


class Options(usage.Options):
    """``twistd imagehost`` options."""

    synopsis = "[--listen ENDPOINT ...] [--data-dir DIR] [--config FILE]"
    optParameters = [
        ["data-dir", "d", None, "Data directory (default ./data, or [server] data_dir)."],
        ["config", "c", None, "Configuration file (ini); see etc/imagehost.ini."],
        ["workers", "w", None, "Processes serving the listening sockets (default 1, or "
         "[server] workers); tcp and unix endpoints only when above 1.", int],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on a Twisted endpoint, e.g. tcp:8080 (repeatable; default tcp:8080)."""
        try:
            endpoints._parseServer(endpoint, None)  # ssl: also loads the key and certificate
        except (ValueError, KeyError) as e:
            raise usage.UsageError(f"--listen {endpoint!r} is not a valid endpoint: {e}") from e
        except Exception as e:
            raise operator_mistake(f"cannot listen on {endpoint}: "
                                   f"{_endpoint_problem(endpoint, e)}") from e
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if self["config"] and not Path(self["config"]).is_file():
            raise usage.UsageError(f"--config {self['config']}: no such file")
        try:
            self.config = options_config(self)
        except ConfigError as e:
            # A mistake in the file or the environment, not in the command line: one
            # line, without twistd's usage text.
            raise operator_mistake(str(e)) from e


def operator_mistake(message: str) -> SystemExit:
    """What ends twistd on an operator mistake: ``message`` on stderr, exit status 1."""
    return SystemExit(f"imagehost: {message}")


def options_config(options) -> Config:
    config = load_config(options["config"], overrides={
        ("server", "data_dir"): options["data-dir"],
        ("server", "listen"): options["listen"] or None,
        ("server", "workers"): options.get("workers"),
    })
    if config.get("server", "workers") < 1:
        raise ConfigError("the number of workers must be at least 1")
    if config.get("server", "workers") > 1 and not all(
            d.split(":", 1)[0] in ("tcp", "tcp6", "unix") for d in config.get("server", "listen")):
        raise ConfigError("--workers above 1 needs tcp, tcp6 or unix endpoints "
                          "(terminate TLS in front, e.g. nginx)")
    return config


def utc_now() -> datetime:
    return datetime.now(UTC)


def prepare_installation(config: Config, sweep: bool = True) -> bytes:
    """Create the data directory, migrate the database, bootstrap the admin (blocking).

    Idempotent. Returns the JWT secret. ConfigError for a data directory that cannot be
    created or written and for an admin bootstrap that breaks the rules for new users.
    ``sweep`` removes the temp files a crash left; a CLI command running beside a live
    daemon must not, as they may be the daemon's writes in flight.
    """
    _prepare_data_dir(config.data_dir)
    secret = _load_or_create_secret(config.secret_file)
    build_storage(config).prepare(sweep)
    engine = create_engine(config.database_url)
    try:
        upgrade(engine)
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


def installation_problem(config: Config, error: Exception) -> str:
    """One line for a failure of ``prepare_installation``."""
    if isinstance(error, OSError):
        return _os_problem(error)
    if isinstance(error, sa.exc.OperationalError):
        url = sa.engine.make_url(config.database_url).render_as_string(hide_password=True)
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        return f"cannot use the database {url}: {reason}"
    return str(error)


def _os_problem(error: OSError) -> str:
    """``Permission denied: /srv/secret.key``"""
    return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")


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


# -- scale-out -- the one place that chooses the storage backend
def build_storage(config: Config, max_connections: int = 10) -> Storage:
    """The configured storage backend (nothing is touched until it is used)."""
    if config.get("storage", "backend") != "s3":
        return LocalStorage(config.data_dir)
    from imagehost.storage.s3 import S3Settings, S3Storage

    settings = S3Settings(**{name: config.get("storage", key) for name, key in (
        ("bucket", "s3_bucket"), ("endpoint_url", "s3_endpoint_url"), ("region", "s3_region"),
        ("access_key", "s3_access_key"), ("secret_key", "s3_secret_key"),
        ("path_style", "s3_path_style"), ("originals_prefix", "originals_prefix"),
        ("variants_prefix", "variants_prefix"))})
    return S3Storage(config.data_dir / "cache", settings, max_connections)


def _bootstrap_admin(engine, config: Config) -> None:
    username = config.get("admin", "username")
    password = config.get("admin", "password")
    if not username or not password:
        return
    email = config.get("admin", "email") or f"{username}@localhost"
    if run_sync(engine, account_queries.user_by_username, username) is not None:
        return
    _check_admin(username, email, password, email_given=bool(config.get("admin", "email")))
    user = account_queries.User(
        id=str(uuid.uuid4()), username=username, email=email, display_name=username,
        password_hash=auth.hash_password(password), is_admin=True, is_active=True,
        created_at=utc_now())
    run_sync(engine, account_queries.insert_user, user)
    _log.info("Created administrator {username}", username=username)


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


def build_imagehost(config: Config, reactor, secret: bytes) -> Imagehost:
    """Wire the service layer for ``config`` (pools are created, not started)."""
    from twisted.python.threadpool import ThreadPool

    engine = create_engine(config.database_url, config.get("database", "pool_size"))
    threads = db_threads(engine, config.get("database", "pool_size"))
    db = Database(engine, reactor, ThreadPool(minthreads=1, maxthreads=threads,
                                              name="imagehost-db"))
    workers = WorkerPool(reactor, config.render_threads(), config.get("render", "queue_size"))
    # -- scale-out -- a connection per worker and per reactor-pool thread (deletes)
    storage = build_storage(config, max_connections=config.render_threads() + 10)
    settings = RuntimeSettings(config, db)
    accounts = Accounts(db, workers, secret, algorithm=config.get("auth", "jwt_algorithm"),
                        access_ttl=config.get("auth", "access_token_ttl"),
                        refresh_ttl=config.get("auth", "refresh_token_ttl"), now=utc_now,
                        login_limits=(
                            RateLimit(db, "login-ip",
                                      config.get("limits", "logins_per_minute_per_ip"),
                                      time.time, "login attempts from this address"),
                            RateLimit(db, "login-user",
                                      config.get("limits", "logins_per_minute_per_user"),
                                      time.time, "login attempts for this user")))
    images = Images(db, workers, storage, settings,
                    limits=source_limits(config), now=utc_now,
                    guest_limit=RateLimit(db, "guest-upload-ip",
                                          config.get("limits", "guest_uploads_per_minute_per_ip"),
                                          time.time, "guest uploads from this address"))
    def run_io(fn, *args) -> Deferred:
        """Brief blocking I/O (file removal, S3 round trips, health checks): the reactor's
        own thread pool, so it never waits behind renders nor holds a CPU worker."""
        return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    delivery = Delivery(db, workers, storage,
                        VariantCache(storage, config.get("cache", "max_size")),
                        ViewCounter(db, clock=reactor),
                        max_dimension=config.get("image", "max_dimension"),
                        clock=reactor,
                        revalidate_after=config.get("cache", "revalidate_after"),
                        run_io=run_io)
    library = Library(db, storage, now=utc_now, run_blocking=run_io,
                      on_delete=delivery.forget)
    sessions = BrowserSessions(db, accounts, secret, ttl=config.get("auth", "session_ttl"),
                               now=utc_now)
    return Imagehost(db=db, workers=workers, storage=storage, accounts=accounts,
                     images=images, settings=settings, library=library, delivery=delivery,
                     garbage=GarbageCollector(db, storage, run_io), sessions=sessions,
                     run_blocking=run_io)


class ImagehostService(service.Service):
    """Starts the pools; on stop, lets in-flight requests finish, then stops them."""

    def __init__(self, imagehost: Imagehost, site: ImagehostSite, reactor,
                 shutdown_timeout: float):
        self.imagehost = imagehost
        self.site = site
        self._reactor = reactor
        self._shutdown_timeout = shutdown_timeout

    def startService(self) -> None:
        super().startService()
        self.site.access_log.start()
        self.imagehost.db.start()
        self.imagehost.workers.start()
        # -- delivery -- view flushing and the variant cache scan (off the reactor)
        self._delivery = Deferred.fromCoroutine(self.imagehost.delivery.start())
        self._delivery.addErrback(
            lambda f: _log.failure("Cannot start image delivery", f))

    async def _stop(self) -> None:
        idle = self.site.when_idle()
        idle.addTimeout(self._shutdown_timeout, self._reactor)
        try:
            await idle
        except Exception:
            _log.warn("Stopping with {n} requests still in flight", n=len(self.site.in_flight))
        # -- delivery -- pending view counts need the DB pool, so before it stops
        await self._delivery
        await self.imagehost.delivery.stop()
        self.imagehost.workers.stop()
        self.imagehost.db.stop()
        self.site.access_log.stop()

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())


class CannotListen(Exception):
    """An endpoint cannot be listened on; the message names it and says why."""


class ListeningService(service.Service):
    """Listens on one endpoint string from ``listen()`` on; ``port`` is set once listening."""

    def __init__(self, reactor, description: str, factory):
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.port = None
        self.listening: Deferred = Deferred()

    def listen(self) -> None:
        """Start listening; CannotListen if the endpoint refuses at once.

        Twisted's own endpoints (tcp, ssl, unix, systemd) bind synchronously, so a port in
        use or a bad interface is known here, before twistd daemonizes or writes its pid
        file, and the daemon never runs without its listeners.
        """
        try:
            endpoint = endpoints.serverFromString(self._reactor, self.description)
        except Exception as e:  # missing or unreadable TLS files, for example
            raise CannotListen(f"cannot listen on {self.description}: "
                               f"{_endpoint_problem(self.description, e)}") from e
        outcome: list = []
        d = endpoint.listen(self.factory)
        d.addBoth(lambda result: outcome.append(result) or result)
        if outcome and isinstance(outcome[0], Failure):
            d.addErrback(lambda _: None)
            raise CannotListen(f"cannot listen on {self.description}: "
                               f"{_listen_problem(outcome[0].value)}")
        d.addCallbacks(self._listened, self._failed)

    def _listened(self, port) -> None:
        self.port = port
        _log.info("imagehost listening on {description}", description=self.description)
        self.listening.callback(port)

    def _failed(self, failure) -> None:
        # Only an endpoint that binds asynchronously gets here.
        _log.error("imagehost: cannot listen on {description}: {reason}; stopping",
                   description=self.description, reason=_listen_problem(failure.value))
        self.listening.errback(failure)
        self._reactor.callWhenRunning(self._reactor.stop)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()


def _listen_problem(error: BaseException) -> str:
    """``Address already in use`` rather than Twisted's whole exception text."""
    if isinstance(error, CannotListenError):
        error = error.socketError
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _endpoint_problem(description: str, error: Exception) -> str:
    """Why an endpoint string could not be built, naming the file when one is missing
    (Twisted's ssl parser raises FileNotFoundError without the file's name)."""
    _, options = endpoints._parse(description)
    files = {option: value for option, value in options.items()
             if option in _ENDPOINT_FILE_OPTIONS}
    if isinstance(error, OSError):
        for option, path in files.items():
            if not os.access(path, os.R_OK):
                return f"{option} {path}: {os.strerror(error.errno or 2)}"
        return _os_problem(error)
    if type(error).__module__.startswith("OpenSSL"):
        named = ", ".join(f"{option} {path}" for option, path in files.items())
        return f"not a PEM key and certificate ({named})"
    return str(error) or type(error).__name__


_ENDPOINT_FILE_OPTIONS = ("privateKey", "certKey", "extraCertChain", "dhParameters",
                          "caCertsDir")


def source_limits(config: Config) -> SourceLimits:
    return SourceLimits(**{name: config.get("image", name) for name in (
        "max_pixels", "max_frames", "max_animation_pixels")})


def site_limits(config: Config) -> SiteLimits:
    return SiteLimits(**{name: config.get("server", name) for name in (
        "max_body_size", "max_header_size", "max_uri_length", "header_timeout",
        "idle_timeout")})


def build_daemon(config: Config, reactor, secret: bytes) -> tuple[service.MultiService,
                                                                  ImagehostSite]:
    """The service graph and HTTP site of one daemon process, without listeners."""
    imagehost = build_imagehost(config, reactor, secret)
    metrics = Metrics(imagehost, ImagehostAPI.app.url_map, ImagehostPages.app.url_map)
    clients = ClientAddresses(config.get("server", "trusted_proxies"))
    pages = ImagehostPages(imagehost, clients, config.get("server", "public_url"))
    site = ImagehostSite(SiteRoot(ImagehostAPI(imagehost, metrics).resource(),
                                  pages.resource()), reactor,
                         site_limits(config), metrics,
                         AccessLog(config.get("server", "access_log"), reactor), clients)
    top = service.MultiService()
    ImagehostService(imagehost, site, reactor,
                     config.get("server", "shutdown_timeout")).setServiceParent(top)
    return top, site


def read_secret(config: Config) -> bytes:
    """The JWT secret of an installation that ``prepare_installation`` has set up."""
    return _read_secret(config.secret_file)


def makeService(options, reactor=None) -> service.MultiService:
    """Build the whole daemon from parsed ``Options``, already listening.

    Operator mistakes (a data directory that cannot be written, a port in use, missing
    TLS files, a bad admin password) end twistd with one line and exit status 1.
    """
    if reactor is None:
        from twisted.internet import reactor
    config = options.config
    try:
        secret = prepare_installation(config)
        warn_if_no_users(config, options["config"])
    except (ConfigError, OSError, sa.exc.OperationalError) as e:
        raise operator_mistake(installation_problem(config, e)) from e
    top, site = build_daemon(config, reactor, secret)
    listeners = [ListeningService(reactor, description, site)
                 for description in config.get("server", "listen")]
    for listener in listeners:
        try:
            listener.listen()
        except CannotListen as e:
            for started in listeners:
                if started.port is not None:
                    started.port.stopListening()
            raise operator_mistake(str(e)) from e
        listener.setServiceParent(top)
    if config.get("server", "workers") > 1:
        arguments = ["--data-dir", str(config.data_dir.absolute())]
        if options["config"]:
            arguments += ["--config", str(Path(options["config"]).absolute())]
        WorkerProcesses(reactor, config.get("server", "workers") - 1, listeners, site,
                        arguments,
                        config.get("server", "shutdown_timeout")).setServiceParent(top)
    return top
