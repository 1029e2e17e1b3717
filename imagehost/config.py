"""Configuration: built-in defaults < ini file < IMAGEHOST_<SECTION>_<KEY> env < command line.

Every key is declared once in ``KEYS``; ``etc/imagehost.ini`` documents the same keys
(a test keeps the two in step).
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A configuration value is missing, unknown or malformed."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]


def _networks(text: str) -> list[str]:
    """A list of IP addresses or CIDR networks, each checked."""
    networks = _list(text)
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
    return networks


#: The longest lifetime an expiry setting may give (about a century).
MAX_LIFETIME = 100 * 366 * 24 * 3600


def _lifetime(text: str) -> int | None:
    """Seconds an image may live: a whole number from 1 to MAX_LIFETIME, or empty for
    no limit."""
    text = text.strip()
    if not text:
        return None
    value = int(text)
    if not 0 < value <= MAX_LIFETIME:
        raise ValueError(f"must be from 1 to {MAX_LIFETIME} seconds, or empty for none; "
                         f"got {text!r}")
    return value


#: The roles per-role settings are given for (a guest is anyone not logged in).
ROLES = ("guest", "user", "admin")

def _limit(text: str) -> int | None:
    """A quota: a count of bytes or images, or empty (or ``unlimited``) for none."""
    text = text.strip()
    if text.lower() in ("", "unlimited"):
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, or empty for unlimited; got {text!r}")
    return value


def parse_workers(text: str) -> int | str:
    """``auto`` (one process per core) or a number of processes."""
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit():
        raise ValueError(f"must be a number of processes or auto; got {text!r}")
    return int(text)


#: Endpoint types whose connections twistd can hand to worker processes.
HANDOFF_ENDPOINTS = ("tcp", "tcp6", "unix")
STORAGE_BACKENDS = ("local", "s3")
#: What clients are told to reach when ``[server] public_url`` is not set (the CLI).
DEFAULT_PUBLIC_URL = "http://localhost:8080"
SIGNATURE_MODES = ("off", "transforms", "all")


def _signature_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in SIGNATURE_MODES:
        raise ValueError(f"must be one of {', '.join(SIGNATURE_MODES)}; got {text!r}")
    return mode


def _backend(text: str) -> str:
    backend = text.strip().lower()
    if backend not in STORAGE_BACKENDS:
        raise ValueError(f"must be one of {', '.join(STORAGE_BACKENDS)}; got {text!r}")
    return backend


def _public_url(text: str) -> str:
    """"" (not set) or an absolute http(s) URL naming a host, without a trailing slash."""
    url = text.strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok
            or parts.username or parts.password or parts.query or parts.fragment):
        raise ValueError("must be an absolute http:// or https:// URL such as "
                         f"https://img.example.com; got {text!r}")
    return url


def _intermediate_size(text: str) -> int:
    """0 (no intermediates) or a longest side in pixels, 256 or more."""
    size = int(text)
    if size != 0 and size < 256:
        raise ValueError(f"must be 0 (off) or at least 256 pixels; got {size}")
    return size


@dataclass(frozen=True)
class Key:
    """One configuration key: where it lives, how to parse it, its default."""

    section: str
    name: str
    parse: Callable[[str], Any]
    default: Any

    @property
    def env_var(self) -> str:
        return f"IMAGEHOST_{self.section}_{self.name}".upper()


KEYS: tuple[Key, ...] = (
    Key("server", "data_dir", str, "./data"),
    Key("server", "listen", _list, ["tcp:8080"]),
    Key("server", "public_url", _public_url, ""),
    Key("server", "max_body_size", int, 64 * 1000 * 1000),
    Key("server", "shutdown_timeout", float, 10.0),
    Key("server", "workers", parse_workers, "auto"),
    Key("server", "access_log", str, ""),
    Key("server", "max_header_size", int, 16384),
    Key("server", "max_uri_length", int, 8192),
    Key("server", "header_timeout", float, 10.0),
    Key("server", "idle_timeout", float, 60.0),
    Key("server", "trusted_proxies", _networks, []),
    Key("database", "url", str, ""),
    Key("database", "pool_size", int, 5),
    Key("storage", "backend", _backend, "local"),
    Key("storage", "s3_bucket", str, ""),
    Key("storage", "s3_endpoint_url", str, ""),
    Key("storage", "s3_region", str, ""),
    Key("storage", "s3_access_key", str, ""),
    Key("storage", "s3_secret_key", str, ""),
    Key("storage", "s3_path_style", _bool, False),
    Key("storage", "originals_prefix", str, "originals/"),
    Key("storage", "variants_prefix", str, "variants/"),
    Key("auth", "access_token_ttl", int, 3600),
    Key("auth", "refresh_token_ttl", int, 30 * 24 * 3600),
    Key("auth", "jwt_algorithm", str, "HS256"),
    Key("auth", "secret_file", str, ""),
    Key("auth", "session_ttl", int, 14 * 24 * 3600),
    Key("access", "allow_guest_uploads", _bool, False),
    Key("access", "allow_registration", _bool, False),
    Key("image", "max_size", int, 15 * 1000 * 1000),
    Key("image", "allowed_mime_types", _list,
        ["image/jpeg", "image/png", "image/webp", "image/gif", "image/heic"]),
    Key("image", "max_pixels", int, 50 * 1000 * 1000),
    Key("image", "max_frames", int, 1000),
    Key("image", "max_animation_pixels", int, 200 * 1000 * 1000),
    Key("image", "max_dimension", int, 8192),
    Key("render", "threads", int, 0),
    Key("render", "queue_size", int, 64),
    Key("delivery", "require_signature", _signature_mode, "off"),
    Key("delivery", "signing_secret_file", str, ""),
    Key("delivery", "presets_only", _bool, False),
    Key("delivery", "auto_avif", _bool, False),
    Key("delivery", "eager_presets", _list, ["thumbnail"]),
    Key("delivery", "intermediate_size", _intermediate_size, 1536),
    Key("cache", "max_size", int, 1024 * 1000 * 1000),
    Key("cache", "revalidate_after", float, 5.0),
    Key("limits", "logins_per_minute_per_ip", int, 30),
    Key("limits", "logins_per_minute_per_user", int, 10),
    Key("limits", "guest_uploads_per_minute_per_ip", int, 60),
    Key("limits", "share_unlocks_per_minute_per_ip", int, 10),
    Key("limits", "share_unlocks_per_minute_per_share", int, 30),
    *(Key("expiry", f"{role}_{kind}", _lifetime, None)
      for role in ROLES for kind in ("default", "max")),
    Key("expiry", "sweep_interval", float, 60.0),
    Key("quota", "user_bytes", _limit, None),
    Key("quota", "user_images", _limit, None),
    Key("quota", "guest_bytes", _limit, None),
    Key("quota", "guest_images", _limit, None),
    Key("metrics", "allowed_networks", _networks, []),
    Key("metrics", "bearer_token", str, ""),
    Key("admin", "username", str, ""),
    Key("admin", "password", str, ""),
    Key("admin", "email", str, ""),
)

_BY_NAME = {(k.section, k.name): k for k in KEYS}
_BY_ENV_VAR = {k.env_var: k for k in KEYS}

#: Set to keep twistd in the interpreter it was started with (``footprint.run_lean``).
KEEP_INTERPRETER_ENV = "IMAGEHOST_KEEP_INTERPRETER"
#: ``IMAGEHOST_*`` variables that are not settings: the CLI's remote options, its debug
#: switch, the one above, and the test suite's own (``IMAGEHOST_TEST_*``).
OTHER_ENV_VARS = ("IMAGEHOST_URL", "IMAGEHOST_API_KEY", "IMAGEHOST_DEBUG", KEEP_INTERPRETER_ENV)
_TEST_ENV_PREFIX = "IMAGEHOST_TEST_"
#: ``[presets]`` holds names the operator chooses (each one a preset), not declared keys;
#: ``IMAGEHOST_PRESETS_<NAME>`` defines one from the environment.
PRESETS_SECTION = "presets"
_PRESET_ENV_PREFIX = "IMAGEHOST_PRESETS_"


# One frozen dataclass per section, so that ``config.server.max_body_size`` is checked
# by a type checker and a misspelt name fails at once; ``_check_sections`` keeps them in
# step with KEYS when this module loads.


@dataclass(frozen=True)
class ServerSection:
    data_dir: str
    listen: list[str]
    public_url: str
    max_body_size: int
    shutdown_timeout: float
    workers: int | str
    access_log: str
    max_header_size: int
    max_uri_length: int
    header_timeout: float
    idle_timeout: float
    trusted_proxies: list[str]

    def client_url(self) -> str:
        """Where clients reach this server (ShareX files, URLs the CLI prints):
        ``public_url``, or the default listener's address when it is not set."""
        return self.public_url or DEFAULT_PUBLIC_URL


@dataclass(frozen=True)
class DatabaseSection:
    url: str
    pool_size: int


@dataclass(frozen=True)
class StorageSection:
    backend: str
    s3_bucket: str
    s3_endpoint_url: str
    s3_region: str
    s3_access_key: str
    s3_secret_key: str
    s3_path_style: bool
    originals_prefix: str
    variants_prefix: str


@dataclass(frozen=True)
class AuthSection:
    access_token_ttl: int
    refresh_token_ttl: int
    jwt_algorithm: str
    secret_file: str
    session_ttl: int


@dataclass(frozen=True)
class AccessSection:
    allow_guest_uploads: bool
    allow_registration: bool


@dataclass(frozen=True)
class ImageSection:
    max_size: int
    allowed_mime_types: list[str]
    max_pixels: int
    max_frames: int
    max_animation_pixels: int
    max_dimension: int


@dataclass(frozen=True)
class RenderSection:
    threads: int
    queue_size: int


@dataclass(frozen=True)
class DeliverySection:
    require_signature: str
    signing_secret_file: str
    presets_only: bool
    auto_avif: bool
    eager_presets: list[str]
    intermediate_size: int


@dataclass(frozen=True)
class CacheSection:
    max_size: int
    revalidate_after: float


@dataclass(frozen=True)
class LimitsSection:
    logins_per_minute_per_ip: int
    logins_per_minute_per_user: int
    guest_uploads_per_minute_per_ip: int
    share_unlocks_per_minute_per_ip: int
    share_unlocks_per_minute_per_share: int


@dataclass(frozen=True)
class ExpirySection:
    guest_default: int | None
    guest_max: int | None
    user_default: int | None
    user_max: int | None
    admin_default: int | None
    admin_max: int | None
    sweep_interval: float


@dataclass(frozen=True)
class QuotaSection:
    user_bytes: int | None
    user_images: int | None
    guest_bytes: int | None
    guest_images: int | None


@dataclass(frozen=True)
class MetricsSection:
    allowed_networks: list[str]
    bearer_token: str


@dataclass(frozen=True)
class AdminSection:
    username: str
    password: str
    email: str


SECTIONS: dict[str, type] = {
    "server": ServerSection, "database": DatabaseSection, "storage": StorageSection,
    "auth": AuthSection, "access": AccessSection, "image": ImageSection,
    "render": RenderSection, "delivery": DeliverySection, "cache": CacheSection,
    "limits": LimitsSection, "quota": QuotaSection, "expiry": ExpirySection,
    "metrics": MetricsSection,
    "admin": AdminSection,
}


def _check_sections() -> None:
    declared = {(section, f.name) for section, cls in SECTIONS.items() for f in fields(cls)}
    if declared != set(_BY_NAME):
        raise AssertionError(f"config sections and KEYS differ: {declared ^ set(_BY_NAME)}")


_check_sections()


class Config:
    """Resolved configuration values: ``config.server.listen``, one frozen dataclass per
    section (``config.get("server", "listen")`` reads the same value by name)."""

    def __init__(self, values: Mapping[tuple[str, str], Any],
                 presets: Mapping[str, str] | None = None):
        self._values = dict(values)
        #: ``[presets]``: preset name -> its parameters as written (``w=300,h=300,crop=true``);
        #: checked by ``imagehost.service.transforms.Presets.from_config``.
        self.presets: dict[str, str] = dict(presets or {})
        for section, cls in SECTIONS.items():
            setattr(self, section, cls(**{f.name: self._values[(section, f.name)]
                                           for f in fields(cls)}))

    server: ServerSection
    database: DatabaseSection
    storage: StorageSection
    auth: AuthSection
    access: AccessSection
    image: ImageSection
    render: RenderSection
    delivery: DeliverySection
    cache: CacheSection
    limits: LimitsSection
    expiry: ExpirySection
    quota: QuotaSection
    metrics: MetricsSection
    admin: AdminSection

    def get(self, section: str, name: str) -> Any:
        return self._values[(section, name)]

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        url = self.database.url
        return url or f"sqlite:///{(self.data_dir / 'imagehost.db').absolute()}"

    @property
    def secret_file(self) -> Path:
        """The JWT secret: shared by every daemon of one installation."""
        path = self.auth.secret_file
        return Path(path) if path else self.data_dir / "secret.key"

    @property
    def url_signing_secret_file(self) -> Path:
        """The key of image URL signatures (``s=``): shared by every daemon, like the JWT
        secret, and kept apart from it so that it can be given to a site that signs URLs."""
        path = self.delivery.signing_secret_file
        return Path(path) if path else self.data_dir / "url-signing.key"

    def processes(self) -> int:
        """Processes serving connections: ``[server] workers``; ``auto`` is one per core,
        or 1 when an endpoint cannot be handed to workers (ssl: TLS is terminated in
        front when there are several)."""
        workers = self.server.workers
        if workers != "auto":
            return int(workers)
        if not all(d.split(":", 1)[0] in HANDOFF_ENDPOINTS for d in self.server.listen):
            return 1
        return os.cpu_count() or 1

    def render_threads(self) -> int:
        """Threads of the CPU pool: ``[render] threads``, or one per core."""
        return self.render.threads or os.cpu_count() or 1


def load_config(
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, str], Any] | None = None,
) -> Config:
    """Resolve every key: defaults, then the ini file, then the environment, then overrides."""
    environ = os.environ if environ is None else environ
    values = {(k.section, k.name): k.default for k in KEYS}
    presets: dict[str, str] = {}
    if path is not None:
        values.update(_read_ini(Path(path), presets))
    for name, text in environ.items():
        if name.startswith(_PRESET_ENV_PREFIX):
            presets[name.removeprefix(_PRESET_ENV_PREFIX).lower()] = text
            continue
        key = _env_key(name) if name.startswith("IMAGEHOST_") else None
        if key is not None:
            values[(key.section, key.name)] = _parse(key, text, name)
    for (section, name), value in (overrides or {}).items():
        if value is not None:
            values[(section, name)] = value
    if values[("storage", "backend")] == "s3" and not values[("storage", "s3_bucket")]:
        raise ConfigError("[storage] s3_bucket is required when backend = s3")
    return Config(values, presets)


def _env_key(name: str) -> Key | None:
    """The key an ``IMAGEHOST_*`` variable sets (None for the few that are not settings);
    ConfigError, naming the nearest valid variable, for one that names nothing."""
    key = _BY_ENV_VAR.get(name)
    if key is not None:
        return key
    if name in OTHER_ENV_VARS or name.startswith(_TEST_ENV_PREFIX):
        return None
    # Compared without the common prefix, which would make every name look close.
    suffixes = {k.removeprefix("IMAGEHOST_"): k for k in _BY_ENV_VAR}
    close = difflib.get_close_matches(name.removeprefix("IMAGEHOST_"), suffixes, n=1)
    hint = f"; did you mean {suffixes[close[0]]}?" if close else ""
    raise ConfigError(f"environment variable {name} names no setting{hint}")


def _nearest(name: str, names: list[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``names``, or "" when none is close."""
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _read_ini(path: Path, presets: dict[str, str]) -> dict[tuple[str, str], Any]:
    """The keys of the file; its ``[presets]`` (free names) go into ``presets``."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not an ini file (not UTF-8 text)") from e
    except configparser.Error as e:
        raise ConfigError(f"config file {path} is not an ini file: {_first_line(e)}") from e
    values = {}
    for section in parser.sections():
        if section == PRESETS_SECTION:
            presets.update(parser.items(section))
            continue
        for name, text in parser.items(section):
            key = _BY_NAME.get((section, name))
            if key is None:
                known = [f"[{k.section}] {k.name}" for k in KEYS]
                raise ConfigError(f"{path}: unknown key [{section}] {name}"
                                  f"{_nearest(f'[{section}] {name}', known)}")
            values[(section, name)] = _parse(key, text, f"[{section}] {name}")
    return values


def _first_line(error: configparser.Error) -> str:
    """configparser's messages quote the offending lines below the first one."""
    first = str(error.message).splitlines()[0].rstrip(".")
    line = getattr(error, "lineno", None)
    if line is None and getattr(error, "errors", None):
        line = error.errors[0][0]
    return f"{first} (line {line})" if line else first


def _parse(key: Key, text: str, where: str) -> Any:
    try:
        return key.parse(text)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
