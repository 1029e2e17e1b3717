"""The HTTP API: thin Klein routes over the service layer."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_accept_header
from werkzeug.routing import RequestRedirect

from imagehost.db.accounts import User
from imagehost.service import Imagehost
from imagehost.service.accounts import Principal, require_admin
from imagehost.service.delivery import Body, ImageContent
from imagehost.service.errors import (
    BadRequest,
    NotFound,
    ServiceError,
    Unauthorized,
)
from imagehost.service.library import UNCHANGED, parse_limit, parse_listing, parse_page
from imagehost.service.moments import parse_moment
from imagehost.service.quotas import usage_json
from imagehost.service.wire import api_key_json, managed_user_json, new_api_key_json, user_json
from imagehost.web import album_json, errors, library_json
from imagehost.web.metrics import CONTENT_TYPE, Metrics
from imagehost.web.responses import json_object, json_response, no_content
from imagehost.web.share_json import share_json

_log = Logger()

# Matched with fullmatch: "$" would also match before a trailing newline (".jpg\n").
_IMAGE_NAME = re.compile(
    r"(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"(?P<thumbnail>_thumbnail)?\.(?P<ext>[a-z]{3,4})"
)


def authenticated(*, jwt: bool = True, api_key: bool = True, admin: bool = False):
    """Route decorator: resolve the caller (401 if none; 403 if ``admin`` and they are
    not one) and pass it as ``principal``."""

    def decorate(route):
        @functools.wraps(route)
        async def wrapper(self, request, *args, **kwargs):
            header = request.getHeader(b"authorization")
            principal = await self.imagehost.accounts.authenticate(
                header.decode("latin-1") if header else None, jwt=jwt, api_key=api_key)
            if admin:
                require_admin(principal)
            return await route(self, request, principal, *args, **kwargs)

        return wrapper

    return decorate


class ImagehostAPI:
    """All HTTP routes of one imagehost installation."""

    app = Klein()
    # werkzeug would answer "/a//b" with a redirect built from the Host header: a path is
    # matched as sent, or it is a 404. (Must be set before any route is added.)
    app.url_map.merge_slashes = False

    def __init__(self, imagehost: Imagehost, metrics: Metrics):
        self.imagehost = imagehost
        self.metrics = metrics

    def resource(self):
        return CachedImageHits(self.imagehost.delivery, self.app.resource())

    # -- errors ------------------------------------------------------------

    @app.handle_errors(*errors.HANDLED)
    def service_error(self, request: IRequest, failure: Failure) -> bytes:
        return _service_error(request, failure.value)

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, RequestRedirect):  # never a Location built from the Host header
            return json_response(request, errors.error_body(NotFound("No such resource.")), 404)
        body = {"error": {"title": type(error).__name__, "message": error.description}}
        return json_response(request, body, error.code)

    @app.handle_errors(Exception)
    def unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        return _unexpected_error(request, failure)

    # -- operations --------------------------------------------------------

    @app.route("/health", methods=["GET", "HEAD"])
    async def health(self, request: IRequest) -> bytes:
        healthy = await self.imagehost.healthy()
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"OK" if healthy else b"UNAVAILABLE"

    @app.route("/metrics", methods=["GET"])
    def prometheus_metrics(self, request: IRequest) -> bytes:
        try:
            self.metrics.access.check(_client(request), request.getHeader(b"authorization"))
        except Unauthorized:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="metrics"')
            raise
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return self.metrics.exposition()

    # -- authentication ----------------------------------------------------

    @app.route("/api/auth/login", methods=["POST"])
    async def login(self, request: IRequest) -> bytes:
        body = json_object(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequest('"username" and "password" are required strings.')
        pair = await self.imagehost.accounts.login(username, password, client=_client(request))
        return json_response(request, _token_pair(pair))

    @app.route("/api/auth/refresh", methods=["POST"])
    async def refresh(self, request: IRequest) -> bytes:
        pair = await self.imagehost.accounts.refresh(_refresh_token(request))
        return json_response(request, _token_pair(pair))

    @app.route("/api/auth/logout", methods=["POST"])
    async def logout(self, request: IRequest) -> bytes:
        await self.imagehost.accounts.logout(_refresh_token(request))
        return no_content(request)

    @app.route("/api/auth/signup", methods=["POST"])
    async def signup(self, request: IRequest) -> bytes:
        body = json_object(request)
        user = await self.imagehost.signup(
            email=body.get("email"), username=body.get("username"),
            password=body.get("password"), confirm=body.get("confirm"))
        return json_response(request, {"id": user.id}, 201)

    # -- the current user and their API keys -------------------------------

    @app.route("/api/user", methods=["GET"])
    @authenticated()
    async def current_user(self, request: IRequest, principal: Principal) -> bytes:
        return json_response(request, {"data": user_json(principal.user)})

    @app.route("/api/user/usage", methods=["GET"])
    @authenticated()
    async def current_usage(self, request: IRequest, principal: Principal) -> bytes:
        usage, limits = await self.imagehost.quotas.usage(principal.user)
        return json_response(request, {"data": usage_json(usage, limits)})

    @app.route("/api/user/password", methods=["POST"])
    @authenticated(api_key=False)
    async def change_own_password(self, request: IRequest, principal: Principal) -> bytes:
        """Old and new password; every other login ends, the caller gets a new pair."""
        body = json_object(request)
        accounts = self.imagehost.accounts
        await accounts.change_password(principal.user, body.get("currentPassword"),
                                       body.get("newPassword"),
                                       props=("currentPassword", "newPassword"))
        return json_response(request, _token_pair(await accounts.tokens_for(principal.user.id)))

    @app.route("/api/user", methods=["DELETE"])
    @authenticated(api_key=False)
    async def delete_own_account(self, request: IRequest, principal: Principal) -> bytes:
        body = json_object(request)
        await self.imagehost.administration.delete_own(principal.user, body.get("password"))
        return no_content(request)

    @app.route("/api/user/api-keys", methods=["POST"])
    @authenticated(api_key=False)
    async def create_api_key(self, request: IRequest, principal: Principal) -> bytes:
        body = json_object(request)
        expires_at = parse_moment(body.get("expiresAt"), "expiresAt")
        new = await self.imagehost.accounts.create_api_key(
            principal.user, body.get("name"), expires_at)
        return json_response(request, new_api_key_json(new.key, new.record), 201)

    @app.route("/api/user/api-keys", methods=["GET"])
    @authenticated(api_key=False)
    async def list_api_keys(self, request: IRequest, principal: Principal) -> bytes:
        keys = await self.imagehost.accounts.list_api_keys(principal.user)
        now = self.imagehost.accounts.now()
        return json_response(request, {"data": [api_key_json(k, now) for k in keys]})

    @app.route("/api/user/api-keys/<string:key_id>", methods=["DELETE"])
    @authenticated(api_key=False)
    async def revoke_api_key(self, request: IRequest, principal: Principal,
                             key_id: str) -> bytes:
        await self.imagehost.accounts.revoke_api_key(key_id, principal.user)
        return no_content(request)

    # -- settings ----------------------------------------------------------

    @app.route("/api/settings/public", methods=["GET"])
    async def public_settings(self, request: IRequest) -> bytes:
        settings = await self.imagehost.settings.current()
        return json_response(request, {"data": settings.tree(public_only=True)})

    @app.route("/api/settings", methods=["GET"])
    @authenticated()
    async def all_settings(self, request: IRequest, principal: Principal) -> bytes:
        require_admin(principal)
        settings = await self.imagehost.settings.current()
        return json_response(request, {"data": settings.tree()})

    @app.route("/api/settings", methods=["POST"])
    @authenticated()
    async def change_settings(self, request: IRequest, principal: Principal) -> bytes:
        require_admin(principal)
        body = json_object(request)
        await self.imagehost.settings.update(body.get("category"), body.get("settings"))
        return no_content(request)

    # -- user administration -------------------------------------------------

    @app.route("/api/admin/users", methods=["GET"])
    @authenticated(api_key=False, admin=True)
    async def list_users(self, request: IRequest, principal: Principal) -> bytes:
        listed = await self.imagehost.administration.list_users(
            _arg(request, "limit"), _arg(request, "cursor"))
        return json_response(request, {
            "data": [managed_user_json(m) for m in listed.users],
            "meta": {"size": len(listed.users), "total": listed.total,
                     "nextCursor": listed.next_cursor}})

    @app.route("/api/admin/users", methods=["POST"])
    @authenticated(api_key=False, admin=True)
    async def create_user(self, request: IRequest, principal: Principal) -> bytes:
        created = await self.imagehost.administration.create_user(json_object(request))
        return json_response(request, {"data": managed_user_json(created)}, 201)

    @app.route("/api/admin/users/<string:user_id>", methods=["GET"])
    @authenticated(api_key=False, admin=True)
    async def managed_user(self, request: IRequest, principal: Principal,
                           user_id: str) -> bytes:
        managed = await self.imagehost.administration.managed(user_id)
        return json_response(request, {"data": managed_user_json(managed)})

    @app.route("/api/admin/users/<string:user_id>", methods=["PATCH"])
    @authenticated(api_key=False, admin=True)
    async def change_user(self, request: IRequest, principal: Principal,
                          user_id: str) -> bytes:
        body = json_object(request)
        changed = await self.imagehost.administration.change_user(
            principal.user, user_id, roles=body.get("roles"), is_active=body.get("isActive"),
            quota=body.get("quota"))
        return json_response(request, {"data": managed_user_json(changed)})

    @app.route("/api/admin/users/<string:user_id>/password", methods=["POST"])
    @authenticated(api_key=False, admin=True)
    async def reset_password(self, request: IRequest, principal: Principal,
                             user_id: str) -> bytes:
        body = json_object(request)
        await self.imagehost.administration.reset_password(user_id, body.get("password"))
        return no_content(request)

    @app.route("/api/admin/users/<string:user_id>", methods=["DELETE"])
    @authenticated(api_key=False, admin=True)
    async def delete_user(self, request: IRequest, principal: Principal,
                          user_id: str) -> bytes:
        body = json_object(request)
        deleted = await self.imagehost.administration.delete_user(
            principal.user, user_id, images=body.get("images"), to=body.get("to"))
        return json_response(request, {"deletedImages": len(deleted.removed),
                                       "handedOverImages": deleted.handed_over})

    @app.route("/api/admin/guests/usage", methods=["GET"])
    @authenticated(api_key=False, admin=True)
    async def guest_usage(self, request: IRequest, principal: Principal) -> bytes:
        usage, limits = await self.imagehost.quotas.usage(None)
        return json_response(request, {"data": usage_json(usage, limits)})

    # -- uploads -----------------------------------------------------------

    @app.route("/api/upload", methods=["POST", "PUT"])
    @authenticated()
    async def upload(self, request: IRequest, principal: Principal) -> bytes:
        image = await self._upload(request, principal.user)
        return json_response(request, {"id": image.id}, 201)

    @app.route("/api/guest/upload", methods=["POST", "PUT"])
    async def guest_upload(self, request: IRequest) -> bytes:
        image = await self._upload(request, None)
        return json_response(request, {"id": image.id}, 201)

    @app.route("/api/external/upload", methods=["POST", "PUT"])
    @authenticated(jwt=False)
    async def external_upload(self, request: IRequest, principal: Principal) -> bytes:
        image = await self._upload(request, principal.user)
        delivery = self.imagehost.delivery
        return json_response(request, {
            "id": image.id,
            "url": delivery.display_url(image, prefix="/api/image/"),
            "thumbnailUrl": delivery.display_url(image, thumbnail=True, prefix="/api/image/"),
        }, 201)

    def _upload(self, request: IRequest, owner: User | None):
        content_type = request.getHeader(b"content-type")
        return self.imagehost.images.upload(
            request.content, content_type.decode("latin-1") if content_type else None, owner,
            client=_client(request))

    # -- library -------------------------------------------------------------

    @app.route("/api/image/<string:image_id>/detail", methods=["GET"])
    @authenticated()
    async def image_detail(self, request: IRequest, principal: Principal,
                           image_id: str) -> bytes:
        image = await self.imagehost.library.detail(principal, image_id)
        url = self.imagehost.delivery.display_url(image)
        return json_response(request, library_json.detail_json(image, url))

    @app.route("/api/image/<string:image_id>/url", methods=["GET"])
    @authenticated()
    async def image_url(self, request: IRequest, principal: Principal,
                        image_id: str) -> bytes:
        image = await self.imagehost.library.detail(principal, image_id)
        url = self.imagehost.delivery.variant_url(image, _query(request))
        return json_response(request, {"url": url})

    @app.route("/api/images/<string:page>", methods=["GET"])
    @authenticated()
    async def public_feed(self, request: IRequest, principal: Principal, page: str) -> bytes:
        params = parse_listing(
            page, limit=_arg(request, "limit"), order_by=_arg(request, "orderBy"),
            order=_arg(request, "order"), search_term=_arg(request, "searchTerm"),
            search_by=_arg(request, "searchBy"), cursor=_arg(request, "cursor"))
        listed = await self.imagehost.library.feed(principal, params)
        return json_response(request, library_json.feed_json(listed, principal))

    @app.route("/api/images", methods=["GET"])
    @app.route("/api/images/by-id", methods=["GET"])
    @authenticated()
    async def images_by_id(self, request: IRequest, principal: Principal) -> bytes:
        ids = _args(request, "uuid[]") + _args(request, "uuid")
        entries = await self.imagehost.library.by_ids(principal, ids)
        return json_response(request, [library_json.feed_item_json(e, principal)
                                       for e in entries])

    @app.route("/api/images/history/<string:page>", methods=["GET"])
    @authenticated()
    async def history(self, request: IRequest, principal: Principal, page: str) -> bytes:
        listed = await self.imagehost.library.history(
            principal, parse_page(page), parse_limit(_arg(request, "limit")))
        return json_response(request, library_json.history_json(listed, principal))

    @app.route("/api/image/<string:image_id>", methods=["PATCH"])
    @authenticated()
    async def edit_image(self, request: IRequest, principal: Principal,
                         image_id: str) -> bytes:
        body = json_object(request)
        await self.imagehost.library.edit(principal, image_id,
                                          description=body.get("description"),
                                          is_public=body.get("isPublic"),
                                          focal_point=body.get("focalPoint", UNCHANGED))
        return no_content(request)

    @app.route("/api/image/<string:image_id>", methods=["DELETE"])
    @authenticated()
    async def delete_image(self, request: IRequest, principal: Principal,
                           image_id: str) -> bytes:
        body = json_object(request, required=False)
        await self.imagehost.library.delete(
            principal, image_id, preserve_on_disk=body.get("preserveOnDisk", False))
        return no_content(request)

    # -- albums --------------------------------------------------------------

    @app.route("/api/albums", methods=["POST"])
    @authenticated()
    async def create_album(self, request: IRequest, principal: Principal) -> bytes:
        body = json_object(request)
        album = await self.imagehost.albums.create(
            principal, title=body.get("title"), description=body.get("description"),
            is_public=body.get("isPublic"))
        return json_response(request, album_json.album_json(album), 201)

    @app.route("/api/albums", methods=["GET"])
    @authenticated()
    async def list_albums(self, request: IRequest, principal: Principal) -> bytes:
        listed = await self.imagehost.albums.own(principal, limit=_arg(request, "limit"),
                                                 cursor=_arg(request, "cursor"))
        return json_response(request, album_json.album_page_json(listed))

    @app.route("/api/album/<string:album_id>", methods=["GET"])
    @authenticated()
    async def album(self, request: IRequest, principal: Principal, album_id: str) -> bytes:
        view = await self.imagehost.albums.view_page(principal, album_id,
                                                     limit=_arg(request, "limit"),
                                                     cursor=_arg(request, "cursor"))
        return json_response(request, album_json.album_view_json(view, principal))

    @app.route("/api/album/<string:album_id>", methods=["PATCH"])
    @authenticated()
    async def edit_album(self, request: IRequest, principal: Principal,
                         album_id: str) -> bytes:
        body = json_object(request)
        await self.imagehost.albums.edit(
            principal, album_id, title=body.get("title"), description=body.get("description"),
            is_public=body.get("isPublic"), cover_image_id=body.get("coverImageId", ...))
        return no_content(request)

    @app.route("/api/album/<string:album_id>", methods=["DELETE"])
    @authenticated()
    async def delete_album(self, request: IRequest, principal: Principal,
                           album_id: str) -> bytes:
        await self.imagehost.albums.delete(principal, album_id)
        return no_content(request)

    @app.route("/api/album/<string:album_id>/images", methods=["PUT", "POST", "DELETE"])
    @authenticated()
    async def album_images(self, request: IRequest, principal: Principal,
                           album_id: str) -> bytes:
        """PUT sets the album's images in order, POST appends, DELETE takes out."""
        albums = self.imagehost.albums
        change = {b"PUT": albums.set_images, b"POST": albums.add_images,
                  b"DELETE": albums.remove_images}[request.method]
        order = await change(principal, album_id, json_object(request).get("imageIds"))
        return json_response(request, album_json.album_order_json(order))

    # -- share links ---------------------------------------------------------

    @app.route("/api/shares", methods=["POST"])
    @authenticated()
    async def create_share(self, request: IRequest, principal: Principal) -> bytes:
        body = json_object(request)
        share = await self.imagehost.shares.create(
            principal, image_id=body.get("imageId"), album_id=body.get("albumId"),
            expires_at=body.get("expiresAt"), password=body.get("password"),
            variant=body.get("variant"))
        return json_response(request, share_json(share), 201)

    @app.route("/api/shares", methods=["GET"])
    @authenticated()
    async def list_shares(self, request: IRequest, principal: Principal) -> bytes:
        listed = await self.imagehost.shares.own_page(principal, limit=_arg(request, "limit"),
                                                      cursor=_arg(request, "cursor"))
        return json_response(request, {
            "meta": library_json.keyset_meta(listed.size, listed.total, listed.next_cursor),
            "data": [share_json(s) for s in listed.shares]})

    @app.route("/api/share/<string:code>", methods=["DELETE"])
    @authenticated()
    async def revoke_share(self, request: IRequest, principal: Principal, code: str) -> bytes:
        await self.imagehost.shares.revoke(principal, code)
        return no_content(request)

    # -- delivery ----------------------------------------------------------

    @app.route("/image/<string:name>", methods=["GET", "HEAD"])
    @app.route("/api/image/<string:name>", methods=["GET", "HEAD"])
    async def image(self, request: IRequest, name: str) -> bytes | None:
        match = _IMAGE_NAME.fullmatch(name)
        if match is None:
            raise NotFound("No such image.")
        delivery = self.imagehost.delivery
        content = await delivery.locate(match["id"], match["ext"],
                                        thumbnail=bool(match["thumbnail"]),
                                        query=_query(request), accepts=_accepted_images(request))
        if _etag_matches(request, content.etag):
            _set_image_headers(request, content)
            request.setResponseCode(304)
            return None
        body = await delivery.body(content, count_view=request.method == b"GET")
        # (Only now: an error answer must not carry the image's year-long Cache-Control.)
        _set_image_headers(request, content)
        return await _send_body(request, content.content_type, body)


def _service_error(request: IRequest, error: Exception) -> bytes:
    """The envelope of a service or storage error, with ``Retry-After`` if it has one."""
    wait = errors.retry_after(error)
    if wait is not None:
        request.setHeader(b"Retry-After", str(wait).encode())
    return json_response(request, errors.error_body(error), errors.status_of(error))


def _unexpected_error(request: IRequest, failure: Failure) -> bytes:
    """A 500 with the envelope; the failure goes to the log."""
    _log.failure("Unhandled error in {method} {uri}", failure,
                 method=request.method, uri=request.uri)
    body = {"error": {"title": "InternalServerError",
                      "message": "The server failed to handle this request."}}
    return json_response(request, body, 500)


async def send_image(request: IRequest, delivery, content: ImageContent, *,
                     cache_control: bytes, count_view: bool = False) -> bytes | None:
    """Answer with located image content as the delivery routes do (ETag, 304, body),
    with another ``Cache-Control`` (share links must not be cached by proxies)."""
    if _etag_matches(request, content.etag):
        _set_image_headers(request, content)
        request.setHeader(b"Cache-Control", cache_control)
        request.setResponseCode(304)
        return None
    body = await delivery.body(content, count_view=count_view and request.method == b"GET")
    _set_image_headers(request, content)
    request.setHeader(b"Cache-Control", cache_control)
    return await _send_body(request, content.content_type, body)
class CachedImageHits(Resource):
    """The API's resource. A GET or HEAD of a cached variant of a remembered image
    (``/image/{name}``, ``/api/image/{name}``) is answered here at once, without Klein's
    routing and the Deferreds of the route, which were half the cost of such a hit
    (bench/README.md); a GET of such a variant that is not cached yet is rendered from
    here too (``_render_miss``), without routing it and resolving its URL again. Everything
    else (an original, an image to look up, an invalid URL, a HEAD of a miss) goes to the
    routes.

    What a URL (with its ``Accept``) resolved to is kept, with its headers, for as long
    as the delivery still remembers its image: parsing the query, planning the variant
    and formatting the headers again was a fifth of the cost of a hit."""

    isLeaf = True

    def __init__(self, delivery, routes: Resource):
        super().__init__()
        self._delivery = delivery
        self._routes = routes
        self._prepared: dict[tuple[bytes, bytes | None], _PreparedHit] = {}

    def render(self, request: IRequest):
        path = request.postpath
        if request.method in (b"GET", b"HEAD") and (
                (len(path) == 2 and path[0] == b"image")
                or (len(path) == 3 and path[0] == b"api" and path[1] == b"image")):
            answer = self._hit(request, path[-1])
            if answer is not None:
                return answer
        return self._routes.render(request)

    def _hit(self, request: IRequest, name: bytes):
        key = (request.uri, request.getHeader(b"accept"))
        prepared = self._prepared.get(key)
        if prepared is None or not self._delivery.still_remembered(prepared.content):
            prepared = self._prepare(request, name)
            if prepared is None:
                return None
            if len(self._prepared) >= _PREPARED_HITS:
                self._prepared.clear()
            self._prepared[key] = prepared
        content = prepared.content
        if _etag_matches(request, content.etag):
            _set_image_headers(request, content, prepared.headers)
            request.setResponseCode(304)
            return b""
        head = request.method == b"HEAD"
        body = self._delivery.cached_body(content, count_view=not head,
                                          read_up_to=0 if head else _SEND_AT_ONCE)
        if body is None:
            return None if head else self._render_miss(request, prepared)
        return _send_prepared(request, prepared, body)

    def _render_miss(self, request: IRequest, prepared: _PreparedHit):
        """Render (or join the render of) a variant not cached yet and answer with it, as
        the route would: the same headers, the envelope for an error."""
        rendering = self._delivery.render_miss(prepared.content)
        # The client hung up: stop waiting (the render itself goes on for the cache).
        request.notifyFinish().addErrback(lambda _: rendering.cancel())
        rendering.addCallback(self._rendered, request, prepared)
        rendering.addErrback(self._failed, request)
        return NOT_DONE_YET

    @staticmethod
    def _rendered(body: Body, request: IRequest, prepared: _PreparedHit) -> None:
        if getattr(request, "_disconnected", False):
            if body.file is not None:
                body.file.close()
            return
        if body.file is not None and body.size <= _SEND_AT_ONCE:
            with body.file:  # it got cached meanwhile
                body = Body(size=body.size, data=body.file.read(), cache=body.cache)
        answer = _send_prepared(request, prepared, body)
        if answer is not NOT_DONE_YET:
            request.write(answer)
            request.finish()

    @staticmethod
    def _failed(failure: Failure, request: IRequest) -> None:
        if failure.check(CancelledError) or getattr(request, "_disconnected", False):
            return
        if request.startedWriting:  # the answer itself failed half-way: nothing to add
            _log.failure("Cannot answer {uri}", failure, uri=request.uri)
            request.channel.loseConnection()
            return
        if failure.check(*errors.HANDLED):
            answer = _service_error(request, failure.value)
        else:
            answer = _unexpected_error(request, failure)
        request.write(answer)
        request.finish()

    def _prepare(self, request: IRequest, name: bytes) -> _PreparedHit | None:
        match = _IMAGE_NAME.fullmatch(name.decode("latin-1"))
        if match is None:
            return None
        try:
            content = self._delivery.locate_remembered(
                match["id"], match["ext"], thumbnail=bool(match["thumbnail"]),
                query=_query(request), accepts=_accepted_images(request))
        except ServiceError:
            return None  # the route answers it with the envelope
        if content is None or content.spec is None:
            return None
        headers = (*_image_headers(content), (b"Content-Type", content.content_type.encode()))
        head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        return _PreparedHit(content, headers, head)


def _send_prepared(request: IRequest, prepared: _PreparedHit, body: Body):
    """Answer 200 with the ``body`` of a variant whose headers are ``prepared``: the bytes
    to write, or NOT_DONE_YET when the answer is (being) written already."""
    content = prepared.content
    head = request.method == b"HEAD"
    if body.data is not None and content.image.expires_at is None and not head:
        _write_answer(request, prepared.head, body)
        return NOT_DONE_YET
    _set_image_headers(request, content, prepared.headers)
    _set_body_headers(request, None, body)
    if body.data is not None:
        return b"" if head else body.data
    assert body.file is not None
    if head:
        body.file.close()
        return b""
    _stream(request, body.file)
    return NOT_DONE_YET


# URLs whose answers CachedImageHits keeps prepared (then it starts over).
_PREPARED_HITS = 4096


@dataclass(frozen=True)
class _PreparedHit:
    """What a URL resolved to, and the headers of its answer that never change."""

    content: ImageContent
    headers: tuple[tuple[bytes, bytes], ...]
    head: bytes  # the same headers, formatted for the wire


def _write_answer(request: IRequest, head: bytes, body: Body) -> None:
    """Answer 200 with ``body.data`` in one write and finish the request: what
    ``request.write`` and ``finish`` do, with the ``head`` of prepared headers added to
    those Twisted set itself (``Server``, ``Date``, ``Connection: close``), instead of
    setting them one by one (a tenth of the cost of a hit, bench/README.md)."""
    assert body.data is not None
    parts = [request.clientproto, b" %d " % request.code, request.code_message, b"\r\n"]
    for name, values in request.responseHeaders.getAllRawHeaders():
        for value in values:
            parts += (name, b": ", value, b"\r\n")
    parts += (head, b"Content-Length: %d\r\n" % body.size)
    if body.cache is not None:
        parts += (b"X-Cache: ", body.cache.encode(), b"\r\n")
    parts += (b"\r\n", body.data)
    request.startedWriting = True
    request.sentLength = body.size
    request.channel.write(b"".join(parts))
    request.finish()


def _stream(request: IRequest, file) -> None:
    """Send a large file in chunks and finish the request (unless the client left)."""
    gone = []
    request.notifyFinish().addErrback(gone.append)

    def sent(_result) -> None:
        file.close()
        if not gone and not getattr(request, "_disconnected", False):
            request.finish()

    _FileSender().beginFileTransfer(file, request).addBoth(sent)


def _query(request: IRequest) -> dict[str, list[str]]:
    return {name.decode("latin-1"): [v.decode("latin-1") for v in values]
            for name, values in request.args.items()}


def _accepted_images(request: IRequest) -> frozenset[str]:
    """The image types the ``Accept`` header names with a quality above 0. Wildcards do
    not count: ``*/*`` says nothing about whether a client decodes WebP."""
    header = request.getHeader(b"accept")
    if not header:
        return frozenset()
    accept = parse_accept_header(header.decode("latin-1"), MIMEAccept)
    return frozenset(value.lower() for value, quality in accept
                     if quality > 0 and value.lower().startswith("image/") and "*" not in value)


def _image_headers(content: ImageContent) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of an image answer that are the same for every request of it (all
    but the ``Cache-Control`` of an expiring image)."""
    headers = [(b"Vary", b"Accept")] if content.negotiated else []
    headers += [(b"ETag", content.etag.encode()),
                (b"Last-Modified", format_datetime(content.last_modified, usegmt=True).encode())]
    if content.image.expires_at is None:
        headers.append((b"Cache-Control", b"public, max-age=31536000, immutable"))
    headers.append((b"X-Content-Type-Options", b"nosniff"))
    return tuple(headers)


def _set_image_headers(request: IRequest, content: ImageContent,
                       prepared: tuple[tuple[bytes, bytes], ...] | None = None) -> None:
    """The image headers (``prepared`` by ``_image_headers`` when given)."""
    for name, value in prepared or _image_headers(content):
        request.setHeader(name, value)
    expires_at = content.image.expires_at
    if expires_at is not None:  # no cache may keep an expiring image beyond its expiry
        left = max(0, int((expires_at - datetime.now(UTC)).total_seconds()))
        request.setHeader(b"Cache-Control", f"public, max-age={left}".encode())


def _set_body_headers(request: IRequest, content_type: str | None, body: Body) -> None:
    if content_type is not None:
        request.setHeader(b"Content-Type", content_type.encode())
    request.setHeader(b"Content-Length", b"%d" % body.size)
    if body.cache is not None:
        request.setHeader(b"X-Cache", body.cache.encode())


def _etag_matches(request: IRequest, etag: str) -> bool:
    header = (request.getHeader(b"if-none-match") or b"").decode("latin-1")
    # If-None-Match uses the weak comparison: a W/ prefix does not matter.
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags


# A file this small goes out in one read and one write, as static.File sends it; a
# producer's per-chunk cooperator ticks cost more than the read (bench/README.md).
_SEND_AT_ONCE = 2 ** 16


class _FileSender(FileSender):
    CHUNK_SIZE = 2 ** 16  # static.File's buffer size; FileSender's 16 KB means 4x the ticks


async def _send_body(request: IRequest, content_type: str, body: Body) -> bytes | None:
    """Send in-memory bytes, or a file: small ones in one read, larger ones streamed."""
    _set_body_headers(request, content_type, body)
    if body.file is None:
        return b"" if request.method == b"HEAD" else body.data
    with body.file:
        if request.method == b"HEAD":
            return b""
        if body.size <= _SEND_AT_ONCE:
            return body.file.read()
        await _FileSender().beginFileTransfer(body.file, request)
    return None


def _args(request: IRequest, name: str) -> list[str]:
    """Every value of a query parameter, decoded; BadRequest if not UTF-8 or holding NUL
    (which PostgreSQL refuses in text)."""
    try:
        values = [v.decode("utf-8") for v in request.args.get(name.encode(), [])]
    except UnicodeDecodeError as e:
        raise BadRequest(f'The query parameter "{name}" is not valid UTF-8.') from e
    if any("\0" in v for v in values):
        raise BadRequest(f'The query parameter "{name}" holds a NUL character.')
    return values


def _arg(request: IRequest, name: str) -> str | None:
    values = _args(request, name)
    return values[0] if values else None


def _client(request: IRequest) -> str:
    """The client's address: the peer, or what a trusted proxy forwarded
    (``[server] trusted_proxies``)."""
    return request.site.client_addresses.of(request)


def _token_pair(pair) -> dict[str, str]:
    return {"access_token": pair.access_token, "refresh_token": pair.refresh_token}


def _refresh_token(request: IRequest) -> str:
    token = json_object(request).get("refresh_token")
    if not isinstance(token, str) or not token:
        raise BadRequest('"refresh_token" is required.')
    return token
