"""The web interface: server-rendered pages beside the API, over the same service layer.

Pages authenticate with a browser session (an HttpOnly cookie naming a row in the
database), never with the API's bearer tokens, and every state-changing request
carries a CSRF token bound to the browser's cookie. Every page is sent with a
Content-Security-Policy that allows no inline script or style and no framing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException

from imagehost.db.accounts import User
from imagehost.service import Imagehost, links
from imagehost.service.accounts import Principal, require_admin
from imagehost.service.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from imagehost.service.forms import UploadForm
from imagehost.service.library import parse_listing
from imagehost.service.links import ImageLinks
from imagehost.service.runtime_settings import ACCEPTABLE_TYPES
from imagehost.service.shares import UNLOCK_TTL, SharedContent, share_ext
from imagehost.service.sharex import SHAREX_EXPIRIES, sharex_uploader
from imagehost.web import errors
from imagehost.web.api import send_image
from imagehost.web.clients import ClientAddresses, addressed_host
from imagehost.web.responses import dump_json

_log = Logger()

SESSION_COOKIE = b"imagehost_session"
BROWSER_COOKIE = b"imagehost_browser"  # binds a visitor's CSRF tokens before login
CSRF_FIELD = "csrf"
CSRF_HEADER = b"x-csrf-token"
CSRF_MESSAGE = ("This form has expired or was sent from another site. "
                "Reload the page and try again.")
PAGE_SIZE = 50
FORM_LIMIT = 64 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_HERE = Path(__file__).parent
# Paths the JSON API answers; everything else is a page.
_API_PREFIXES = {b"api", b"image", b"health", b"metrics"}


class SiteRoot(Resource):
    """Sends ``/api/…``, ``/image/…``, ``/health`` and ``/metrics`` to the API, the rest
    to the pages, each seeing the whole path (nothing is consumed here)."""

    def __init__(self, api: Resource, pages: ImagehostPages):
        super().__init__()
        self._api = api
        self._pages = pages.resource()
        self._page_errors = pages

    def getChildWithDefault(self, path: bytes, request: IRequest) -> Resource:
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self._api if path in _API_PREFIXES else self._pages

    def render(self, request: IRequest) -> bytes:  # only without any path segment
        return self._pages.render(request)

    def too_large_page(self, request: IRequest, limit: int) -> bytes | None:
        """What a page's form whose body is over ``limit`` bytes gets instead of the API's
        JSON 413 (None: the API's answer), setting the page's headers on ``request``."""
        first = request.path.split(b"/")[1:2]
        if (first and first[0] in _API_PREFIXES) or _wants_json(request):
            return None
        return self._page_errors.too_large_page(request, limit)


@dataclass
class Visit:
    """Who is looking at a page, their CSRF token and the fields of the form they sent."""

    user: User | None
    binding: str  # the cookie the CSRF token is bound to
    csrf: str
    form: dict[str, list[str]] = field(default_factory=dict)
    session: str | None = None

    @property
    def principal(self) -> Principal | None:
        return None if self.user is None else Principal(self.user)

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default


class StaticFiles:
    """The CSS and JavaScript under ``static/``, read once, served with a content hash
    in their URL so browsers may keep them for a year."""

    TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".svg": "image/svg+xml"}

    def __init__(self, folder: Path):
        self._files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix in self.TYPES:
                body = path.read_bytes()
                version = hashlib.sha256(body).hexdigest()[:12]
                self._files[path.name] = (body, self.TYPES[path.suffix], version)

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self._files[name][2]}"

    def get(self, name: str) -> tuple[bytes, str, str] | None:
        return self._files.get(name)


def page(*, login: bool = False, admin: bool = False, form: bool = False):
    """Route decorator: resolve the visitor (``visit``); ``login`` sends visitors who are
    not logged in to the login page, ``admin`` refuses non-admins, ``form`` reads an
    urlencoded body and refuses it without this browser's CSRF token."""

    def decorate(route):
        @functools.wraps(route)
        async def wrapper(self, request, *args, **kwargs):
            visit = await self.visit(request)
            if login and visit.user is None:
                return _redirect(request, "/login?" + urlencode({"next": _here(request)}))
            if admin and visit.user is None:
                return _redirect(request, "/login?" + urlencode({"next": _here(request)}))
            if admin:
                require_admin(visit.principal)
            if form:
                visit.form = _read_form(request)
                token = _header(request, CSRF_HEADER) or visit.field(CSRF_FIELD)
                if not self.sessions.csrf_valid(visit.binding, token):
                    raise Forbidden(CSRF_MESSAGE)
            return await route(self, request, visit, *args, **kwargs)

        return wrapper

    return decorate


class ImagehostPages:
    """The web interface's routes (a Klein app of its own beside ``ImagehostAPI``)."""

    app = Klein()

    def __init__(self, imagehost: Imagehost, client_addresses: ClientAddresses,
                 public_url: str):
        self.imagehost = imagehost
        self._public_url = public_url.rstrip("/")
        self.sessions = imagehost.sessions
        self._clients = client_addresses
        self._static = StaticFiles(_HERE / "static")
        self.share = ImageLinks(imagehost.delivery.urls, imagehost.delivery.presets)

    def resource(self):
        return self.app.resource()

    @functools.cached_property
    def _templates(self):
        """The Jinja2 environment, made on the first page: a daemon that serves only the
        API and images never loads Jinja2 (imagehost.footprint's reason: idle RSS)."""
        from jinja2 import Environment, FileSystemLoader

        templates = Environment(loader=FileSystemLoader(_HERE / "templates"),
                                autoescape=True, trim_blocks=True, lstrip_blocks=True)
        templates.globals.update(static=self._static.url, share=self.share,
                                 sharex_expiries=SHAREX_EXPIRIES)
        templates.filters.update(megabytes=_megabytes, moment=_moment)
        return templates

    # -- visitors, cookies, rendering ----------------------------------------------

    async def visit(self, request: IRequest) -> Visit:
        """The visitor of this request: a logged-in user or not, and their CSRF token."""
        token = _cookie(request, SESSION_COOKIE)
        user = await self.sessions.user(token)
        if user is not None:
            visit = Visit(user, token, self.sessions.csrf_token(token), session=token)
        else:
            if token:
                self._clear_cookie(request, SESSION_COOKIE)
            binding = _cookie(request, BROWSER_COOKIE)
            if not binding:
                binding = secrets.token_urlsafe(32)
                self._set_cookie(request, BROWSER_COOKIE, binding, max_age=365 * 24 * 3600)
            visit = Visit(None, binding, self.sessions.csrf_token(binding))
        request.imagehost_visit = visit
        return visit

    def _set_cookie(self, request: IRequest, name: bytes, value: str,
                    max_age: int | None) -> None:
        request.addCookie(name, value.encode(), path=b"/", httpOnly=True, sameSite="lax",
                          secure=self._clients.via_https(request),
                          max_age=None if max_age is None else str(max_age).encode())

    def _clear_cookie(self, request: IRequest, name: bytes) -> None:
        request.addCookie(name, b"", path=b"/", httpOnly=True, sameSite="lax",
                          secure=self._clients.via_https(request), max_age=b"0")

    def render(self, request: IRequest, template: str, status: int = 200,
               **context: Any) -> bytes:
        """A page from ``templates/``, with the security headers every page carries."""
        visit = getattr(request, "imagehost_visit", None)
        request.setResponseCode(status)
        _page_headers(request, "text/html; charset=utf-8")
        body = self._templates.get_template(template).render(
            visit=visit, user=visit.user if visit else None, csrf=visit.csrf if visit else "",
            request_path=_here(request), **context)
        return body.encode("utf-8")

    def base_url(self, request: IRequest) -> str:
        """Where absolute URLs (OpenGraph, share snippets, ShareX files) point:
        ``[server] public_url`` when it is set, whatever the request's ``Host`` says (a
        forged one must not end up in a page that unfurlers and caches keep); else as
        the browser addressed us, the ``Host`` checked (BadRequest when it is no host)."""
        if self._public_url:
            return self._public_url
        scheme = "https" if self._clients.via_https(request) else "http"
        try:
            host = addressed_host(request)
        except ValueError as e:
            raise BadRequest("The Host header does not name a host.") from e
        if host is None:  # HTTP/1.0 without Host: the address it connected to
            local = request.getHost()
            host = (f"[{local.host}]" if ":" in local.host else local.host) + f":{local.port}"
        return f"{scheme}://{host}"

    def _client(self, request: IRequest) -> str:
        return self._clients.of(request)

    # -- errors ----------------------------------------------------------------------

    @app.handle_errors(*errors.HANDLED)
    def service_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, Unauthorized) and not _wants_json(request):
            return _redirect(request, "/login?" + urlencode({"next": _here(request)}))
        wait = errors.retry_after(error)
        if wait is not None:
            request.setHeader(b"Retry-After", str(wait).encode())
        status = errors.status_of(error)
        if _wants_json(request):
            return _json(request, errors.error_body(error), status)
        titles = {400: "Bad request", 403: "Not allowed", 404: "Page not found",
                  413: "Too large", 422: "Not accepted", 429: "Too many attempts",
                  503: "Try again shortly"}
        return self.render(request, "error.html", status,
                           title=titles.get(status, "Something went wrong"),
                           message=error.message, violations=getattr(error, "violations", []))

    def too_large_page(self, request: IRequest, limit: int) -> bytes:
        """The error page for a form over the server's body limit (sent before routing)."""
        return self.render(request, "error.html", 413, title="Too large",
                           message=f"The file is larger than this server accepts "
                                   f"({limit / 1_000_000:.2f} MB).")

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if error.code == 404:
            return self.render(request, "error.html", 404, title="Page not found",
                               message="There is no page at this address.")
        return self.render(request, "error.html", error.code, title=error.name,
                           message=error.description)

    @app.handle_errors(Exception)
    def unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        _log.failure("Unhandled error in {method} {uri}", failure,
                     method=request.method, uri=request.uri)
        return self.render(request, "error.html", 500, title="Something went wrong",
                           message="The server failed to show this page. Try again shortly.")

    # -- static files ------------------------------------------------------------------

    @app.route("/static/<string:name>", methods=["GET", "HEAD"])
    def static(self, request: IRequest, name: str) -> bytes:
        found = self._static.get(name)
        if found is None:
            raise NotFound("No such file.")
        body, content_type, version = found
        _page_headers(request, content_type)
        immutable = (request.args.get(b"v") or [b""])[0] == version.encode()
        request.setHeader(b"Cache-Control", b"public, max-age=31536000, immutable"
                          if immutable else b"public, max-age=300")
        return body

    # -- logging in and out ------------------------------------------------------------

    @app.route("/login", methods=["GET"])
    @page()
    async def login_page(self, request: IRequest, visit: Visit) -> bytes:
        if visit.user is not None:
            return _redirect(request, _safe_next(_arg(request, "next")))
        return await self._login_form(request, _arg(request, "next") or "/")

    async def _login_form(self, request: IRequest, next_path: str, status: int = 200,
                          error: str = "", username: str = "") -> bytes:
        settings = await self.imagehost.settings.current()
        return self.render(request, "login.html", status, next=_safe_next(next_path),
                           error=error, username=username,
                           registration=settings.allow_registration)

    @app.route("/login", methods=["POST"])
    @page(form=True)
    async def login(self, request: IRequest, visit: Visit) -> bytes:
        username, next_path = visit.field("username").strip(), visit.field("next")
        try:
            started = await self.sessions.login(username, visit.field("password"),
                                                self._client(request))
        except Unauthorized:
            return await self._login_form(request, next_path, 401, username=username,
                                          error="The user name or password is not right.")
        except RateLimited as e:
            request.setHeader(b"Retry-After", str(e.retry_after).encode())
            return await self._login_form(request, next_path, 429, username=username,
                                          error=e.message)
        self._set_cookie(request, SESSION_COOKIE, started.token, self.sessions.ttl_seconds)
        return _redirect(request, _safe_next(next_path))

    @app.route("/logout", methods=["POST"])
    @page(form=True)
    async def logout(self, request: IRequest, visit: Visit) -> bytes:
        await self.sessions.end(visit.session)
        self._clear_cookie(request, SESSION_COOKIE)
        return _redirect(request, "/")

    @app.route("/signup", methods=["GET"])
    @page()
    async def signup_page(self, request: IRequest, visit: Visit) -> bytes:
        await self._require_registration()
        return self.render(request, "signup.html", fields={}, violations={})

    @app.route("/signup", methods=["POST"])
    @page(form=True)
    async def signup(self, request: IRequest, visit: Visit) -> bytes:
        await self._require_registration()
        fields = {name: visit.field(name) for name in ("username", "email")}
        try:
            user = await self.imagehost.signup(
                email=fields["email"].strip(), username=fields["username"].strip(),
                password=visit.field("password"), confirm=visit.field("confirm"))
        except ValidationFailed as e:
            return self.render(request, "signup.html", 422, fields=fields,
                               violations=_by_property(e))
        started = await self.sessions.start(user)
        self._set_cookie(request, SESSION_COOKIE, started.token, self.sessions.ttl_seconds)
        return _redirect(request, "/")

    async def _require_registration(self) -> None:
        if not (await self.imagehost.settings.current()).allow_registration:
            raise NotFound("There is no page at this address.")

    # -- uploading -----------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    @page()
    async def upload_page(self, request: IRequest, visit: Visit) -> bytes:
        return await self._upload_page(request, visit)

    async def _upload_page(self, request: IRequest, visit: Visit, status: int = 200,
                           error: str = "") -> bytes:
        settings = await self.imagehost.settings.current()
        albums = []
        if visit.user is not None:
            albums = (await self.imagehost.albums.own(visit.principal, limit="100")).albums
        return self.render(request, "upload.html", status, settings=settings, error=error,
                           can_upload=visit.user is not None or settings.allow_guest_uploads,
                           albums=albums, chosen_album=_arg(request, "album") or "")

    @app.route("/upload", methods=["POST"])
    @page()
    async def upload(self, request: IRequest, visit: Visit) -> bytes:
        """The upload form (multipart): a redirect to the new image's page, or JSON for
        the page's script (the API's envelope on errors, 422 messages included)."""
        header_token = _header(request, CSRF_HEADER)
        if header_token and not self.sessions.csrf_valid(visit.binding, header_token):
            raise Forbidden(CSRF_MESSAGE)

        def check_form(form: UploadForm) -> None:
            token = header_token or form.extra.get(CSRF_FIELD)
            if not self.sessions.csrf_valid(visit.binding, token):
                raise Forbidden(CSRF_MESSAGE)

        content_type = _header(request, b"content-type")
        try:
            image = await self.imagehost.images.upload(
                request.content, content_type, visit.user, client=self._client(request),
                check_form=check_form)
        except (ValidationFailed, PayloadTooLarge, BadRequest) as e:
            if _wants_json(request):
                raise
            messages = [v.message for v in getattr(e, "violations", [])] or [e.message]
            return await self._upload_page(request, visit, errors.status_of(e),
                                           " ".join(messages))
        if _wants_json(request):
            snippets = self.share.share_snippets(self.base_url(request), image, "original",
                                            "original")
            return _json(request, {"id": image.id, "page": f"/i/{image.id}", **snippets}, 201)
        return _redirect(request, f"/i/{image.id}")

    # -- browsing ------------------------------------------------------------------------

    @app.route("/images", methods=["GET"])
    @page(login=True)
    async def own_images(self, request: IRequest, visit: Visit) -> bytes:
        term, by = _arg(request, "q") or "", _arg(request, "by") or "description"
        params = parse_listing("1", limit=str(PAGE_SIZE), order_by="attributes.createdAt",
                               order="desc", search_term=term, search_by=by,
                               cursor=_arg(request, "cursor"))
        listed = await self.imagehost.library.own(visit.principal, params)
        more = _listing_url("/images", listed.next_cursor, q=term, by=by)
        albums = (await self.imagehost.albums.own(visit.principal, limit="100")).albums
        return self._grid(request, "images.html", listed, more, term=term, by=by,
                          selectable=True, albums=albums)

    @app.route("/explore", methods=["GET"])
    @page()
    async def explore(self, request: IRequest, visit: Visit) -> bytes:
        params = parse_listing("1", limit=str(PAGE_SIZE), order_by="attributes.createdAt",
                               order="desc", cursor=_arg(request, "cursor"))
        listed = await self.imagehost.library.feed(visit.principal, params)
        return self._grid(request, "explore.html", listed,
                          _listing_url("/explore", listed.next_cursor))

    def _grid(self, request: IRequest, template: str, listed, more: str | None,
              **context: Any) -> bytes:
        if _arg(request, "partial"):  # "load more": only the new items
            request.setHeader(b"X-Next-Page", (more or "").encode())
            return self.render(request, "_grid_items.html", entries=listed.entries,
                               **context)
        return self.render(request, template, entries=listed.entries, more=more,
                           total=listed.total, **context)

    @app.route("/images/bulk", methods=["POST"])
    @page(login=True, form=True)
    async def bulk(self, request: IRequest, visit: Visit) -> bytes:
        """Make several images public or private, or delete them (after confirmation)."""
        ids, action = visit.form.get("id", [])[:100], visit.field("action")
        if action not in ("public", "private", "delete", "album"):
            raise BadRequest("Choose what to do with the selected images.")
        if not ids:
            return _redirect(request, "/images")
        if action == "album":
            album_id = visit.field("albumId")
            await self.imagehost.albums.add_images(visit.principal, album_id, ids)
            return _redirect(request, f"/a/{album_id}")
        library = self.imagehost.library
        if action == "delete" and visit.field("confirm") != "yes":
            entries = await library.by_ids(visit.principal, ids)
            return self.render(request, "confirm_delete.html", entries=entries)
        for image_id in ids:
            await self._manageable(visit, image_id)
            if action == "delete":
                await library.delete(visit.principal, image_id)
            else:
                await library.edit(visit.principal, image_id, is_public=action == "public")
        return _redirect(request, "/images")

    # -- one image -------------------------------------------------------------------------

    @app.route("/i/<string:image_id>", methods=["GET"])
    @page()
    async def image_page(self, request: IRequest, visit: Visit, image_id: str) -> bytes:
        return await self._image_page(request, visit, image_id)

    async def _image_page(self, request: IRequest, visit: Visit, image_id: str,
                          status: int = 200, **context: Any) -> bytes:
        entry = await self.imagehost.library.viewable(visit.principal, image_id)
        image, base = entry.image, self.base_url(request)
        size = _choice(_arg(request, "size"), self.share.SHARE_SIZES, "original")
        fmt = _choice(_arg(request, "format"), self.share.SHARE_FORMATS, "original")
        is_owner = visit.user is not None and visit.user.id == image.owner_id
        shares = ([s for s in await self.imagehost.shares.own(visit.principal)
                   if s.image_id == image.id] if is_owner else [])
        return self.render(
            request, "image.html", status, entry=entry, image=image, base=base, size=size,
            fmt=fmt, is_owner=is_owner, shares=shares, share_sizes=_SHARE_WIDTHS, **context,
            snippets=self.share.share_snippets(base, image, size, fmt),
            all_snippets=json.dumps(self.share.all_share_snippets(base, image)),
            can_manage=visit.user is not None and (
                visit.user.is_admin or visit.user.id == image.owner_id),
            oembed=f"{base}/oembed?" + urlencode({"url": f"{base}/i/{image.id}",
                                                  "format": "json"}))

    @app.route("/i/<string:image_id>/share", methods=["POST"])
    @page(login=True, form=True)
    async def share_image(self, request: IRequest, visit: Visit, image_id: str) -> bytes:
        """A share link to one's own image, optionally at a fixed width."""
        width = visit.field("width")
        if width and width not in {str(w) for w in _SHARE_WIDTHS}:
            raise BadRequest("Choose one of the offered sizes.")
        new = await self.imagehost.shares.create(
            visit.principal, image_id=image_id, expires_at=self._share_expiry(visit),
            password=visit.field("password") or None,
            variant={"width": int(width)} if width else None)
        return await self._image_page(request, visit, image_id, 201, new_share=new)

    def _share_expiry(self, visit: Visit) -> str | None:
        """The expiry a share form chose (one of the offered lifetimes), as ISO 8601."""
        lifetime = visit.field("expiresIn")
        if not lifetime:
            return None
        if lifetime not in {str(seconds) for seconds, _ in SHAREX_EXPIRIES}:
            raise BadRequest("Choose when the link expires.")
        return (self.imagehost.shares.now() + timedelta(seconds=int(lifetime))).isoformat()

    @app.route("/i/<string:image_id>/edit", methods=["POST"])
    @page(login=True, form=True)
    async def edit_image(self, request: IRequest, visit: Visit, image_id: str) -> bytes:
        visibility = visit.field("visibility")
        await self._manageable(visit, image_id)
        try:
            await self.imagehost.library.edit(
                visit.principal, image_id, description=visit.field("description"),
                is_public=None if not visibility else visibility == "public")
        except ValidationFailed as e:
            return self.render(request, "error.html", 422, title="Not saved",
                               message="The changes were not saved.",
                               violations=e.violations, back=f"/i/{image_id}")
        return _redirect(request, f"/i/{image_id}")

    @app.route("/i/<string:image_id>/delete", methods=["GET"])
    @page(login=True)
    async def confirm_delete(self, request: IRequest, visit: Visit, image_id: str) -> bytes:
        entry = await self._manageable(visit, image_id)
        return self.render(request, "confirm_delete.html", entries=[entry])

    @app.route("/i/<string:image_id>/delete", methods=["POST"])
    @page(login=True, form=True)
    async def delete_image(self, request: IRequest, visit: Visit, image_id: str) -> bytes:
        await self._manageable(visit, image_id)
        await self.imagehost.library.delete(visit.principal, image_id)
        return _redirect(request, "/images")

    async def _manageable(self, visit: Visit, image_id: str):
        """The image if the visitor may change it: 404 when they may not even see it (a
        private image's existence stays hidden), 403 when it is someone else's public one."""
        entry = await self.imagehost.library.viewable(visit.principal, image_id)
        if not (visit.user.is_admin or entry.image.owner_id == visit.user.id):
            raise Forbidden("Only the owner or an administrator may change this image.")
        return entry

    # -- the account -----------------------------------------------------------------------

    @app.route("/account", methods=["GET"])
    @page(login=True)
    async def account(self, request: IRequest, visit: Visit) -> bytes:
        return await self._account_page(request, visit, notice=_NOTICES.get(
            _arg(request, "done") or "", ""))

    async def _account_page(self, request: IRequest, visit: Visit, status: int = 200,
                            **context: Any) -> bytes:
        accounts = self.imagehost.accounts
        keys = await accounts.list_api_keys(visit.user)
        return self.render(request, "account.html", status, keys=keys, now=accounts.now(),
                           violations=context.pop("violations", {}), **context)

    @app.route("/account/password", methods=["POST"])
    @page(login=True, form=True)
    async def change_password(self, request: IRequest, visit: Visit) -> bytes:
        """Change one's own password: every session ends, this browser gets a new one."""
        new = visit.field("password")
        try:
            if new != visit.field("confirm"):
                raise ValidationFailed.one("confirm", "The two passwords do not match.")
            await self.imagehost.accounts.change_password(visit.user, visit.field("current"),
                                                          new)
        except ValidationFailed as e:
            return await self._account_page(request, visit, 422, violations=_by_property(e))
        started = await self.sessions.start(visit.user)
        self._set_cookie(request, SESSION_COOKIE, started.token, self.sessions.ttl_seconds)
        return _redirect(request, "/account?done=password")

    @app.route("/account/delete", methods=["POST"])
    @page(login=True, form=True)
    async def delete_account(self, request: IRequest, visit: Visit) -> bytes:
        """Delete one's own account and images, confirmed with the password."""
        try:
            await self.imagehost.administration.delete_own(
                visit.user, visit.field("deletePassword"), prop="deletePassword")
        except ValidationFailed as e:
            return await self._account_page(request, visit, 422, violations=_by_property(e))
        self._clear_cookie(request, SESSION_COOKIE)
        return _redirect(request, "/")

    @app.route("/account/keys", methods=["POST"])
    @page(login=True, form=True)
    async def create_api_key(self, request: IRequest, visit: Visit) -> bytes:
        """A new API key, shown on this one page only."""
        try:
            new = await self._new_key(visit, visit.field("name"))
        except ValidationFailed as e:
            return await self._account_page(request, visit, 422, violations=_by_property(e))
        return await self._account_page(request, visit, 201, new_key=new)

    @app.route("/account/keys/<string:key_id>/revoke", methods=["POST"])
    @page(login=True, form=True)
    async def revoke_api_key(self, request: IRequest, visit: Visit, key_id: str) -> bytes:
        await self.imagehost.accounts.revoke_api_key(key_id, visit.user)
        return _redirect(request, "/account?done=revoked")

    @app.route("/account/sharex", methods=["POST"])
    @page(login=True, form=True)
    async def sharex(self, request: IRequest, visit: Visit) -> bytes:
        """A ShareX uploader holding a new API key (named so it can be revoked)."""
        lifetime = visit.field("imageExpiry")
        if lifetime and lifetime not in {str(seconds) for seconds, _ in SHAREX_EXPIRIES}:
            raise BadRequest("Choose how long uploaded images live.")
        new = await self._new_key(visit, visit.field("name") or "ShareX")
        request.setHeader(b"Content-Disposition", b'attachment; filename="imagehost.sxcu"')
        return _json(request, sharex_uploader(
            self.base_url(request), new.key, expires_in=int(lifetime) if lifetime else None,
            album_id=visit.field("albumId") or None))

    async def _new_key(self, visit: Visit, name: str):
        days = visit.field("expires")
        if days and not (days.isdigit() and 0 < int(days) <= 3650):
            raise ValidationFailed.one("expires", "Choose how long the key stays valid.")
        accounts = self.imagehost.accounts
        expires = accounts.now() + timedelta(days=int(days)) if days else None
        return await accounts.create_api_key(visit.user, name, expires)

    # -- administration ----------------------------------------------------------------------

    @app.route("/admin", methods=["GET"])
    @page(login=True, admin=True)
    async def admin(self, request: IRequest, visit: Visit) -> bytes:
        return await self._admin_page(request, notice=_NOTICES.get(_arg(request, "done") or "",
                                                                   ""))

    async def _admin_page(self, request: IRequest, status: int = 200, **context: Any) -> bytes:
        settings = await self.imagehost.settings.current()
        users = await self.imagehost.accounts.list_users()
        usage = await self.imagehost.quotas.usage_of(users)
        return self.render(request, "admin.html", status, settings=settings, users=users,
                           usage=usage,
                           mime_types=ACCEPTABLE_TYPES,
                           violations=context.pop("violations", {}),
                           fields=context.pop("fields", {}), **context)

    @app.route("/admin/settings", methods=["POST"])
    @page(login=True, admin=True, form=True)
    async def admin_settings(self, request: IRequest, visit: Visit) -> bytes:
        """The runtime settings the CLI changes too; effective at once on every daemon."""
        settings = self.imagehost.settings
        try:
            image = {"maxSize": _bytes_from_megabytes(visit.field("maxSize")),
                     "allowedMimeTypes": visit.form.get("allowedMimeTypes", [])}
            settings.validate("image", image)
            await settings.update("access", {
                "allowGuestUploads": visit.field("allowGuestUploads") == "true",
                "allowRegistration": visit.field("allowRegistration") == "true"})
            await settings.update("image", image)
        except ValidationFailed as e:
            return await self._admin_page(request, 422, violations=_by_property(e))
        return _redirect(request, "/admin?done=settings")

    @app.route("/admin/users", methods=["POST"])
    @page(login=True, admin=True, form=True)
    async def admin_create_user(self, request: IRequest, visit: Visit) -> bytes:
        fields = {name: visit.field(name).strip() for name in ("username", "email")}
        try:
            await self.imagehost.accounts.create_user(
                fields["username"], fields["email"], visit.field("password"),
                is_admin=visit.field("isAdmin") == "true")
        except ValidationFailed as e:
            return await self._admin_page(request, 422, violations=_by_property(e),
                                          fields=fields)
        return _redirect(request, "/admin?done=user")

    @app.route("/admin/users/<string:username>/delete", methods=["POST"])
    @page(login=True, admin=True, form=True)
    async def admin_delete_user(self, request: IRequest, visit: Visit, username: str) -> bytes:
        """Delete a user (not oneself); the form says what happens to their images."""
        target = await self.imagehost.accounts.user_named(username)
        images, _, to = visit.field("images").partition(":")
        try:
            await self.imagehost.administration.delete_user(visit.user, target.id,
                                                            images=images, to=to or None)
        except ValidationFailed as e:
            return await self._admin_page(request, 422, violations=_by_property(e))
        return _redirect(request, "/admin?done=deleted")

    @app.route("/admin/users/<string:username>/active", methods=["POST"])
    @page(login=True, admin=True, form=True)
    async def admin_set_active(self, request: IRequest, visit: Visit, username: str) -> bytes:
        """Disable (ending the user's sessions) or enable an account; not one's own."""
        if username == visit.user.username:
            raise Forbidden("You cannot disable your own account.")
        await self.imagehost.accounts.set_active(username, visit.field("active") == "true")
        return _redirect(request, "/admin?done=user")

    # -- albums ---------------------------------------------------------------------------

    @app.route("/albums", methods=["GET"])
    @page(login=True)
    async def albums(self, request: IRequest, visit: Visit) -> bytes:
        return await self._albums_page(request, visit)

    async def _albums_page(self, request: IRequest, visit: Visit, status: int = 200,
                           **context: Any) -> bytes:
        listed = await self.imagehost.albums.own(visit.principal, limit=str(PAGE_SIZE),
                                                 cursor=_arg(request, "cursor"))
        more = _listing_url("/albums", listed.next_cursor)
        return self.render(request, "albums.html", status, albums=listed.albums, more=more,
                           fields=context.pop("fields", {}),
                           violations=context.pop("violations", {}), **context)

    @app.route("/albums", methods=["POST"])
    @page(login=True, form=True)
    async def create_album(self, request: IRequest, visit: Visit) -> bytes:
        fields = {name: _text_field(visit, name) for name in ("title", "description")}
        try:
            album = await self.imagehost.albums.create(
                visit.principal, title=fields["title"], description=fields["description"],
                is_public=visit.field("isPublic") == "true")
        except ValidationFailed as e:
            return await self._albums_page(request, visit, 422, fields=fields,
                                           violations=_by_property(e))
        return _redirect(request, f"/a/{album.id}")

    @app.route("/a/<string:album_id>", methods=["GET"])
    @page()
    async def album(self, request: IRequest, visit: Visit, album_id: str) -> bytes:
        return await self._album_page(request, visit, album_id,
                                      notice=_NOTICES.get(_arg(request, "done") or "", ""))

    async def _album_page(self, request: IRequest, visit: Visit, album_id: str,
                          status: int = 200, **context: Any) -> bytes:
        view = await self.imagehost.albums.view(visit.principal, album_id)
        shares = []
        if view.can_manage:
            shares = [s for s in await self.imagehost.shares.own(visit.principal)
                      if s.album_id == album_id]
        cover = view.cover
        return self.render(request, "album.html", status, album=view.album,
                           entries=view.entries, can_manage=view.can_manage,
                           cover_id=cover.image.id if cover else None, shares=shares,
                           base=self.base_url(request), **context)

    @app.route("/a/<string:album_id>/edit", methods=["POST"])
    @page(login=True, form=True)
    async def edit_album(self, request: IRequest, visit: Visit, album_id: str) -> bytes:
        visibility = visit.field("visibility")
        try:
            await self.imagehost.albums.edit(
                visit.principal, album_id, title=_text_field(visit, "title"),
                description=_text_field(visit, "description"),
                is_public=None if not visibility else visibility == "public")
        except ValidationFailed as e:
            return self.render(request, "error.html", 422, title="Not saved",
                               message="The changes were not saved.",
                               violations=e.violations, back=f"/a/{album_id}")
        return _redirect(request, f"/a/{album_id}?done=album")

    @app.route("/a/<string:album_id>/delete", methods=["POST"])
    @page(login=True, form=True)
    async def delete_album(self, request: IRequest, visit: Visit, album_id: str) -> bytes:
        await self.imagehost.albums.delete(visit.principal, album_id)
        return _redirect(request, "/albums")

    @app.route("/a/<string:album_id>/images", methods=["POST"])
    @page(login=True, form=True)
    async def arrange_album(self, request: IRequest, visit: Visit, album_id: str) -> bytes:
        """One image of the album: move it earlier or later, make it the cover, or take
        it out (the buttons on each tile; they work without JavaScript)."""
        albums, image_id, action = self.imagehost.albums, visit.field("image"), visit.field(
            "action")
        if action == "cover":
            await albums.edit(visit.principal, album_id, cover_image_id=image_id)
        elif action == "remove":
            await albums.remove_images(visit.principal, album_id, [image_id])
        elif action in ("up", "down"):
            view = await albums.view(visit.principal, album_id)
            order = [e.image.id for e in view.entries]
            if image_id not in order:
                raise NotFound("That image is not in this album.")
            at = order.index(image_id)
            to = max(0, at - 1) if action == "up" else min(len(order) - 1, at + 1)
            order[at], order[to] = order[to], order[at]
            await albums.set_images(visit.principal, album_id, order)
        else:
            raise BadRequest("Choose what to do with the image.")
        return _redirect(request, f"/a/{album_id}")

    @app.route("/a/<string:album_id>/order", methods=["POST"])
    @page(login=True, form=True)
    async def order_album(self, request: IRequest, visit: Visit, album_id: str) -> bytes:
        """The order after a drag and drop on the album page (its script sends it)."""
        order = await self.imagehost.albums.set_images(visit.principal, album_id,
                                                       visit.form.get("id", []))
        return _json(request, {"imageIds": order})

    @app.route("/a/<string:album_id>/share", methods=["POST"])
    @page(login=True, form=True)
    async def share_album(self, request: IRequest, visit: Visit, album_id: str) -> bytes:
        new = await self.imagehost.shares.create(
            visit.principal, album_id=album_id, expires_at=self._share_expiry(visit),
            password=visit.field("password") or None)
        return await self._album_page(request, visit, album_id, 201, new_share=new)

    @app.route("/shares/<string:code>/revoke", methods=["POST"])
    @page(login=True, form=True)
    async def revoke_share(self, request: IRequest, visit: Visit, code: str) -> bytes:
        await self.imagehost.shares.revoke(visit.principal, code)
        return _redirect(request, _safe_next(visit.field("back")))

    # -- share links -----------------------------------------------------------------------

    @app.route("/s/<string:code>", methods=["GET"])
    @page()
    async def shared(self, request: IRequest, visit: Visit, code: str) -> bytes:
        """A share link's page; a password share shows only its unlock form (no
        OpenGraph either) until this browser has unlocked it."""
        share = await self.imagehost.shares.open(code)
        if not self.imagehost.shares.unlocked(share, _cookie(request, _share_cookie(code))):
            return self.render(request, "share_locked.html", code=code)
        shares = self.imagehost.shares
        content = await shares.content(share)
        await shares.count_view(share)
        return self.render(request, "share.html", code=code, base=self.base_url(request),
                           **_shared_context(content, self.share))

    @app.route("/s/<string:code>/unlock", methods=["POST"])
    @page(form=True)
    async def unlock_share(self, request: IRequest, visit: Visit, code: str) -> bytes:
        """Check a share's password (rate limited); right: a cookie for this share only."""
        shares = self.imagehost.shares
        share = await shares.open(code)
        try:
            unlocked = await shares.unlock(share, visit.field("password"),
                                           self._client(request))
        except Unauthorized as e:
            return self.render(request, "share_locked.html", 401, code=code, error=e.message)
        except RateLimited as e:
            request.setHeader(b"Retry-After", str(e.retry_after).encode())
            return self.render(request, "share_locked.html", 429, code=code, error=e.message)
        request.addCookie(_share_cookie(code), unlocked.encode(), path=f"/s/{code}".encode(),
                          httpOnly=True, sameSite="lax",
                          secure=self._clients.via_https(request),
                          max_age=str(int(UNLOCK_TTL.total_seconds())).encode())
        return _redirect(request, f"/s/{code}")

    @app.route("/s/<string:code>/<string:name>", methods=["GET", "HEAD"])
    async def shared_image(self, request: IRequest, code: str, name: str) -> bytes | None:
        """An image of a share, under the share's URL (``image.{ext}`` or an album image's
        key), checked against the share's state on every request."""
        shares = self.imagehost.shares
        share = await shares.open(code)
        if not shares.unlocked(share, _cookie(request, _share_cookie(code))):
            raise Forbidden("This link needs its password.")
        query = {k.decode("latin-1"): [v.decode("latin-1") for v in values]
                 for k, values in request.args.items()}
        located = await shares.locate(await shares.content(share), name, query)
        return await send_image(request, self.imagehost.delivery, located,
                                cache_control=b"private, no-cache")

    @app.route("/oembed", methods=["GET"])
    @page()
    async def oembed(self, request: IRequest, visit: Visit) -> bytes:
        """oEmbed (photo) for a public image's page URL."""
        path = urlsplit(_arg(request, "url") or "").path
        if not path.startswith("/i/"):
            raise NotFound("No such image.")
        entry = await self.imagehost.library.viewable(None, path[3:])
        picture, base = self.share.og_image(entry.image), self.base_url(request)
        return _json(request, {
            "version": "1.0", "type": "photo", "title": self.share.alt_text(entry.image),
            "url": base + picture.path, "width": picture.width, "height": picture.height,
            "provider_name": "imagehost", "provider_url": base + "/"})


# -- helpers ------------------------------------------------------------------------------

def _share_cookie(code: str) -> bytes:
    """The cookie that holds one share's unlocked state (codes are URL-safe, so they are
    valid in a cookie name)."""
    return f"imagehost_share_{code}".encode()


def _shared_context(content: SharedContent, share: ImageLinks) -> dict[str, Any]:
    """What ``share.html`` shows of an image or album share, by the share's own URLs."""
    code = content.share.code
    if content.album is None:
        image = content.entries[0].image
        ext = share_ext(content)
        og = (f"/s/{code}/image.{ext}" if content.share.variant
              else f"/s/{code}/image.jpg?w={links.OG_IMAGE_WIDTH}")
        return {"title": share.alt_text(image), "image": image, "ext": ext, "og_image": og,
                "album": None}
    items = [{"key": content.key(e), "ext": links.extension(e.image),
              "thumb": share.thumbnail(e.image), "alt": share.alt_text(e.image)}
             for e in content.entries]
    cover_id = content.album.cover_image_id
    cover = next((i for i, e in zip(items, content.entries, strict=True)
                  if e.image.id == cover_id), items[0] if items else None)
    og = f"/s/{code}/{cover['key']}.jpg?w={links.OG_IMAGE_WIDTH}" if cover else None
    return {"title": content.album.title, "album": content.album, "items": items,
            "og_image": og}


def _page_headers(request: IRequest, content_type: str) -> None:
    request.setHeader(b"Content-Type", content_type.encode())
    request.setHeader(b"Content-Security-Policy", CSP.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"X-Frame-Options", b"DENY")
    request.setHeader(b"Referrer-Policy", b"same-origin")
    request.setHeader(b"Cache-Control", b"no-store")


def _redirect(request: IRequest, location: str) -> bytes:
    request.setResponseCode(303)
    _page_headers(request, "text/plain; charset=utf-8")
    request.setHeader(b"Location", location.encode("utf-8"))
    return b""


def _json(request: IRequest, value: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    _page_headers(request, "application/json; charset=utf-8")
    return dump_json(value)


def _wants_json(request: IRequest) -> bool:
    return b"application/json" in (request.getHeader(b"accept") or b"")


def _cookie(request: IRequest, name: bytes) -> str | None:
    value = request.getCookie(name)
    try:
        return value.decode("ascii") if value else None
    except UnicodeDecodeError:
        return None


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value else None


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f'The query parameter "{name}" is not valid UTF-8.') from e


def _read_form(request: IRequest) -> dict[str, list[str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body."""
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
    if content_type != b"application/x-www-form-urlencoded":
        return {}
    content = request.content
    content.seek(0, 2)
    if content.tell() > FORM_LIMIT:
        raise PayloadTooLarge("The form is too large.")
    content.seek(0)
    try:
        return parse_qs(content.read().decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest("The form is not valid UTF-8.") from e


def _here(request: IRequest) -> str:
    return request.uri.decode("latin-1")


def _safe_next(path: str | None) -> str:
    """A same-site path to go to after logging in (never another site: no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _choice(value: str | None, allowed, default: str) -> str:
    return value if value in allowed else default


def _listing_url(path: str, cursor: str | None, **query: str) -> str | None:
    if cursor is None:
        return None
    kept = {k: v for k, v in query.items() if v and not (k == "by" and v == "description")}
    return f"{path}?" + urlencode({**kept, "cursor": cursor})


def _text_field(visit: Visit, name: str) -> str:
    """A text field of a form, without NUL (which PostgreSQL refuses in text)."""
    value = visit.field(name)
    if "\0" in value:
        raise BadRequest(f'The field "{name}" holds a NUL character.')
    return value


def _by_property(error: ValidationFailed) -> dict[str, str]:
    return {v.property: v.message for v in error.violations}


#: Fixed widths the image page offers for a share link.
_SHARE_WIDTHS = (1920, 1280, 640, 320)

_NOTICES = {"password": "Your password was changed; other browsers were logged out.",
            "revoked": "The API key was revoked.", "settings": "The settings were saved.",
            "user": "The user was saved.", "album": "The album was saved.",
            "deleted": "The user was deleted."}


def _bytes_from_megabytes(text: str) -> int:
    try:
        megabytes = float(text)
    except ValueError as e:
        raise ValidationFailed.one("image.maxSize", "Give the size in megabytes.") from e
    # Not finite or not positive: 0, which the settings' own check refuses with its range.
    return int(megabytes * 1_000_000) if math.isfinite(megabytes) and megabytes > 0 else 0


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.2f}".rstrip("0").rstrip(".")


def _moment(value) -> str:
    return "" if value is None else value.strftime("%b %d, %Y %H:%M UTC")

