"""The transform parameters of an image URL, the operator's presets, and signed URLs.

``parse_transform`` validates a query (``w``, ``h``, ``crop``, ``gravity``, ``fp``, ``q``,
``dpr``, ``format``, ``p``) into a :class:`Transform`; everything else in a query is
ignored (cache busters). :class:`Presets` holds the ``[presets]`` of the configuration
(with the built-in ``thumbnail``), :class:`UrlSigner` signs and verifies the ``s=`` of a
URL, :class:`DeliveryPolicy` says which requests need one and whether only presets may
be asked for. Pure functions and small objects: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from imagehost.config import ConfigError
from imagehost.service.errors import BadRequest, Forbidden

#: Canonical name of each transform parameter -> the names a URL may use for it.
PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "w": ("w", "width"),
    "h": ("h", "height"),
    "crop": ("crop",),
    "gravity": ("gravity",),
    "fp": ("fp",),
    "q": ("q", "quality"),
    "dpr": ("dpr",),
    "format": ("format",),
    "p": ("p", "preset"),
}
SIGNATURE_PARAMETER = "s"
#: Extensions ``format=`` (and the URL) may name; ``auto`` picks one from ``Accept``.
AUTO = "auto"
MAX_DPR = 4
THUMBNAIL_PRESET = "thumbnail"
PRESET_MAX_DIMENSION = 16384
BUILT_IN_PRESETS = {THUMBNAIL_PRESET: "w=300,h=300,crop=true"}

# Matched with fullmatch: "$" would also match before a trailing newline.
_DIGITS = re.compile(r"[0-9]{1,9}")
_DPR = re.compile(r"[1-4](?:\.[0-9])?")
_FRACTION = r"(?:0(?:\.[0-9]{1,6})?|1(?:\.0{1,6})?)"
_FOCAL_POINT = re.compile(rf"({_FRACTION}),({_FRACTION})")
_PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_CROP_VALUES = {"true": True, "1": True, "false": False, "0": False, "smart": True}
_GRAVITY_VALUES = {"smart": "smart", "centre": "centre", "center": "centre"}
_FORMATS = ("jpg", "jpeg", "png", "webp", "gif", "avif", "heic", AUTO)


class SignatureInvalid(Forbidden):
    """A URL that must be signed has no ``s=``, or one this installation did not make."""


class TransformNotAllowed(Forbidden):
    """Only the operator's presets may be asked for (``[delivery] presets_only``)."""


@dataclass(frozen=True)
class Transform:
    """What a URL asks of an image (None = not given). ``focus`` is a focal point in
    thousandths of the displayed width and height; ``dpr`` in tenths (20 = 2x)."""

    width: int | None = None
    height: int | None = None
    crop: bool = False
    smart: bool = False
    focus: tuple[int, int] | None = None
    quality: int | None = None
    dpr: int = 10
    format: str | None = None

    def scaled_size(self, max_dimension: int) -> tuple[int | None, int | None]:
        """``width`` and ``height`` multiplied by ``dpr``; the multiplication goes up to
        ``max_dimension`` at most (a preset's own size may be larger)."""
        def scale(length: int | None) -> int | None:
            if length is None:
                return None
            return min(max(length, max_dimension), (length * self.dpr + 5) // 10)
        return scale(self.width), scale(self.height)


def canonical_parameters(query: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The transform parameters of ``query`` under their canonical names (``width`` is
    ``w``); BadRequest when one is given twice with different values."""
    found = {}
    for name, aliases in PARAMETER_NAMES.items():
        values = {value for alias in aliases for value in query.get(alias, ())}
        if len(values) > 1:
            raise BadRequest(f'"{name}" is given more than once with different values.')
        if values:
            found[name] = values.pop()
    return found


def parse_transform(parameters: Mapping[str, str], max_dimension: int) -> Transform:
    """Validate canonical parameters (see ``canonical_parameters``; ``p`` is not looked
    at) into a Transform; BadRequest naming the first bad one."""
    crop_text = parameters.get("crop", "false").lower()
    if crop_text not in _CROP_VALUES:
        raise BadRequest('"crop" must be true, false, smart, 1 or 0.')
    gravity = parameters.get("gravity")
    if gravity is not None and gravity.lower() not in _GRAVITY_VALUES:
        raise BadRequest('"gravity" must be smart or centre.')
    gravity = None if gravity is None else _GRAVITY_VALUES[gravity.lower()]
    focus = _focal_point(parameters.get("fp"))
    smart = crop_text == "smart" or gravity == "smart"
    explicit_no_crop = "crop" in parameters and not _CROP_VALUES[crop_text]
    if explicit_no_crop and (gravity is not None or focus is not None):
        raise BadRequest('"gravity" and "fp" place a crop: they cannot go with crop=false.')
    if smart and focus is not None:
        raise BadRequest('"fp" and a smart crop contradict each other: give one.')
    crop = _CROP_VALUES[crop_text] or gravity is not None or focus is not None
    fmt = parameters.get("format")
    if fmt is not None and fmt.lower() not in _FORMATS:
        raise BadRequest(f'"format" must be one of {", ".join(_FORMATS)}.')
    dpr_text = parameters.get("dpr")
    if dpr_text is not None and not (_DPR.fullmatch(dpr_text)
                                     and 1 <= float(dpr_text) <= MAX_DPR):
        raise BadRequest(f'"dpr" must be a number from 1 to {MAX_DPR} (one decimal at most).')
    return Transform(
        width=_integer(parameters, "w", 1, max_dimension),
        height=_integer(parameters, "h", 1, max_dimension),
        crop=crop, smart=smart, focus=focus,
        quality=_integer(parameters, "q", 1, 100),
        dpr=10 if dpr_text is None else round(float(dpr_text) * 10),
        format=None if fmt is None else fmt.lower())


def _integer(parameters: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    text = parameters.get(name)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise BadRequest(f'"{name}" must be an integer from {low} to {high}.')
    return int(text)


def _focal_point(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = _FOCAL_POINT.fullmatch(text)
    if match is None:
        raise BadRequest('"fp" must be x,y with both from 0 to 1 (for example fp=0.25,0.6).')
    return round(float(match[1]) * 1000), round(float(match[2]) * 1000)


# -- presets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named set of transform parameters (``[presets] card = w=1200,h=630,crop=smart``)."""

    name: str
    parameters: Mapping[str, str]
    transform: Transform


class Presets:
    """The operator's presets by name, with the built-in ``thumbnail`` (which ``_thumbnail``
    URLs use, and which ``[presets] thumbnail = ...`` redefines)."""

    def __init__(self, presets: Mapping[str, Preset]):
        self._presets = dict(presets)

    @classmethod
    def from_config(cls, definitions: Mapping[str, str], max_dimension: int) -> Presets:
        """Parse ``[presets]`` definitions; ConfigError naming a bad one."""
        # The operator's sizes are not bound by [image] max_dimension (clients' bound).
        largest = max(max_dimension, PRESET_MAX_DIMENSION)
        presets = {}
        for name, text in {**BUILT_IN_PRESETS, **definitions}.items():
            presets[name] = _parse_preset(name, text, largest)
        return cls(presets)

    def get(self, name: str) -> Preset | None:
        """The preset of that name, or None."""
        return self._presets.get(name)

    def __getitem__(self, name: str) -> Preset:
        return self._presets[name]

    def __iter__(self) -> Iterator[Preset]:
        return iter(self._presets.values())

    def __contains__(self, name: object) -> bool:
        return name in self._presets

    def names(self) -> list[str]:
        """Every preset's name, sorted."""
        return sorted(self._presets)


def _parse_preset(name: str, text: str, max_dimension: int) -> Preset:
    where = f"[presets] {name}"
    if not _PRESET_NAME.fullmatch(name):
        raise ConfigError(f"{where}: a preset name is lowercase letters, digits, - and _")
    parameters: dict[str, list[str]] = {}
    last = None
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        if not sep and last == "fp" and item:
            parameters["fp"][-1] += "," + item  # fp=x,y: the y came after the separator
            last = None
            continue
        if not sep:
            raise ConfigError(f"{where}: expected name=value items separated by commas, "
                              f"got {item!r}")
        last = key.strip()
        parameters.setdefault(last, []).append(value.strip())
    allowed = {alias for name, aliases in PARAMETER_NAMES.items() if name != "p"
               for alias in aliases}
    unknown = set(parameters) - allowed
    if unknown:
        raise ConfigError(f"{where}: not a transform parameter: {', '.join(sorted(unknown))}")
    try:
        canonical = canonical_parameters(parameters)
        transform = parse_transform(canonical, max_dimension)
    except BadRequest as e:
        raise ConfigError(f"{where}: {e}") from e
    return Preset(name, canonical, transform)


# -- signatures and policy --------------------------------------------------------------


class UrlSigner:
    """HMAC-SHA256 signatures of image URLs (URL-safe base64 without padding), keyed by
    the installation's URL signing secret.

    The message is the image's name in the URL (``{id}.{ext}``, ``{id}_thumbnail.{ext}``:
    the same under ``/image/`` and ``/api/image/``) and the transform parameters under
    their canonical names, sorted: ``{name}?crop=true&h=300&w=300``.
    """

    def __init__(self, secret: bytes):
        self._key = hmac.new(secret, b"imagehost url signatures", hashlib.sha256).digest()

    def signature(self, name: str, parameters: Mapping[str, str]) -> str:
        """The ``s=`` value of ``name`` with these canonical parameters."""
        message = f"{name}?{_canonical_query(parameters)}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def verify(self, name: str, parameters: Mapping[str, str], signature: str | None) -> None:
        """SignatureInvalid unless ``signature`` is the one this signer makes."""
        if not signature:
            raise SignatureInvalid("This image URL must be signed (s=); ask the API for one: "
                                   "GET /api/image/{id}/url.")
        if not hmac.compare_digest(signature.encode("latin-1", "replace"),
                                   self.signature(name, parameters).encode()):
            raise SignatureInvalid("The signature (s=) does not match this image URL.")


def _canonical_query(parameters: Mapping[str, str]) -> str:
    return "&".join(f"{name}={parameters[name]}" for name in sorted(parameters))


def url_query(parameters: Mapping[str, str], signature: str | None = None) -> str:
    """``?w=300&crop=true&s=…`` for a URL (empty when there is nothing to add)."""
    pairs = [(name, parameters[name]) for name in sorted(parameters)]
    if signature is not None:
        pairs.append((SIGNATURE_PARAMETER, signature))
    return "?" + urlencode(pairs, safe=",") if pairs else ""


@dataclass(frozen=True)
class DeliveryPolicy:
    """Which image requests must be signed (``require_signature``: off, transforms or
    all) and whether only presets may be asked for (``presets_only``)."""

    require_signature: str = "off"
    presets_only: bool = False

    def needs_signature(self, parameters: Mapping[str, str]) -> bool:
        """True when a request with these canonical parameters must carry ``s=``.

        In ``transforms`` mode a preset alone (``p=``) needs none: presets are the
        operator's bounded list, not an open door to new variants.
        """
        if self.require_signature == "all":
            return True
        if self.require_signature == "transforms":
            return bool(set(parameters) - {"p"})
        return False

    def check_presets_only(self, parameters: Mapping[str, str]) -> None:
        """TransformNotAllowed for any transform but ``p=`` when only presets are allowed."""
        if self.presets_only and set(parameters) - {"p"}:
            raise TransformNotAllowed(
                "Only presets may be requested on this server (?p=NAME); other transform "
                f"parameters are refused: {', '.join(sorted(set(parameters) - {'p'}))}.")



class ImageUrls:
    """Paths of image URLs, carrying ``s=`` when the policy requires it for them."""

    def __init__(self, signer: UrlSigner, policy: DeliveryPolicy):
        self.signer = signer
        self.policy = policy

    def path(self, image_id: str, ext: str, parameters: Mapping[str, str] | None = None, *,
             thumbnail: bool = False, prefix: str = "/image/") -> str:
        """``/image/{id}.{ext}?{parameters}`` (canonical names), signed when required."""
        name = f"{image_id}{'_thumbnail' if thumbnail else ''}.{ext}"
        parameters = dict(parameters or {})
        signature = (self.signer.signature(name, parameters)
                     if self.policy.needs_signature(parameters) else None)
        return f"{prefix}{name}{url_query(parameters, signature)}"
