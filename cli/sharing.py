"""``imagehost remote album …`` and ``imagehost remote share …``: albums and share links
of a remote server, over its HTTP API (``imagehost_cli.remote``'s client)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imagehost_cli.options import RemoteOptions
from imagehost_cli.output import Output, table_time
from imagehost_cli.remote import RemoteServer, _with_server


async def _call(reactor, options: RemoteOptions, method: str, path: str,
                body: Any = None, params: dict | None = None) -> Any:
    async def send(server: RemoteServer):
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if params:
            kwargs["params"] = params
        return await server.request_json(method, path, **kwargs)

    return await _with_server(reactor, options, send)


async def _every_page(reactor, options: RemoteOptions, path: str, items: str) -> Any:
    """The answer of ``path``'s first page, with the ``items`` of every page after it
    (followed by ``meta.nextCursor``, 100 at a time) added to its own."""
    first = await _call(reactor, options, "GET", path, params={"limit": "100"})
    page = first
    while page["meta"]["nextCursor"]:
        page = await _call(reactor, options, "GET", path,
                           params={"limit": "100", "cursor": page["meta"]["nextCursor"]})
        first[items] += page[items]
    return first


# -- albums -----------------------------------------------------------------------


async def album_create(reactor, options: RemoteOptions, title: str, description: str | None,
                       is_public: bool) -> None:
    body = {"title": title, "isPublic": is_public}
    if description is not None:
        body["description"] = description
    album = await _call(reactor, options, "POST", "/api/albums", body)
    out = Output(options.as_json)
    out.show(album, lambda: out.say(f"Album {album['id']} created: {album['title']}"))


async def album_list(reactor, options: RemoteOptions, limit: int | None,
                     cursor: str | None) -> None:
    params = {k: str(v) for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
    page = await _call(reactor, options, "GET", "/api/albums", params=params)
    out = Output(options.as_json)

    def human() -> None:
        out.table(["Album", "Images", "Public"],
                  [(f"{a['id']}\n{a['title']}", str(a["imageCount"]),
                    "yes" if a["isPublic"] else "no") for a in page["data"]],
                  title=f"{page['meta']['total']} albums", ids=("Album",))
        if page["meta"].get("nextCursor"):
            out.say(f"More: imagehost remote --url {options.url} album list "
                    f"--cursor {page['meta']['nextCursor']}")

    out.show(page, human)


async def album_show(reactor, options: RemoteOptions, album_id: str) -> None:
    album = await _every_page(reactor, options, f"/api/album/{album_id}", "images")
    del album["meta"]
    out = Output(options.as_json)

    def human() -> None:
        out.say(f"{album['title']} ({'public' if album['isPublic'] else 'private'}, "
                f"{album['imageCount']} images, cover {album['coverImageId'] or 'none'})")
        out.table(["#", "Image", "Public"],
                  [(str(n), f"{i['id']}\n{i['attributes'].get('originalName') or ''}",
                    "yes" if i["attributes"]["isPublic"] else "no")
                   for n, i in enumerate(album["images"], 1)], ids=("Image",))

    out.show(album, human)


async def album_edit(reactor, options: RemoteOptions, album_id: str,
                     changes: dict[str, Any]) -> None:
    await _call(reactor, options, "PATCH", f"/api/album/{album_id}", changes)
    out = Output(options.as_json)
    out.show({"id": album_id, **changes}, lambda: out.say(f"Album {album_id} updated"))


async def album_delete(reactor, options: RemoteOptions, album_id: str) -> None:
    await _call(reactor, options, "DELETE", f"/api/album/{album_id}")
    out = Output(options.as_json)
    out.show({"id": album_id, "deleted": True},
             lambda: out.say(f"Album {album_id} deleted (its images stay)"))


async def album_images(reactor, options: RemoteOptions, method: str, album_id: str,
                       image_ids: list[str]) -> None:
    """``add`` (POST), ``remove`` (DELETE) or ``order`` (PUT) an album's images."""
    answer = await _call(reactor, options, method, f"/api/album/{album_id}/images",
                         {"imageIds": image_ids})
    order = answer["data"]["imageIds"]
    out = Output(options.as_json)
    out.show(answer["data"], lambda: out.say(
        f"Album {album_id} now holds {len(order)} images: " + (" ".join(order) or "none")))


# -- share links ------------------------------------------------------------------


async def share_create(reactor, options: RemoteOptions, target: dict[str, str],
                       expires_at: datetime | None, password: str | None,
                       variant: dict[str, Any]) -> None:
    body: dict[str, Any] = dict(target)
    if expires_at is not None:
        body["expiresAt"] = expires_at.isoformat()
    if password:
        body["password"] = password
    if variant:
        body["variant"] = variant
    share = await _call(reactor, options, "POST", "/api/shares", body)
    share["url"] = options.url + share["url"]
    out = Output(options.as_json)
    out.show(share, lambda: out.say(share["url"]))


async def share_list(reactor, options: RemoteOptions) -> None:
    shares = (await _every_page(reactor, options, "/api/shares", "data"))["data"]
    out = Output(options.as_json)
    out.show(shares, lambda: out.table(
        ["Code", "Of", "Expires", "Password", "Views"],
        [(s["code"], f"image {s['imageId']}" if s["imageId"] else f"album {s['albumId']}",
          table_time(s["expiresAt"]) or "never", "yes" if s["hasPassword"] else "no",
          str(s["views"])) for s in shares],
        title=f"Share links (open {options.url}/s/CODE)", ids=("Code", "Of")))


async def share_revoke(reactor, options: RemoteOptions, code: str) -> None:
    await _call(reactor, options, "DELETE", f"/api/share/{code}")
    out = Output(options.as_json)
    out.show({"code": code, "revoked": True}, lambda: out.say(f"Share {code} revoked"))
