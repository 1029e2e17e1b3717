"""``imagehost remote``: a client for a server's HTTP API, built on treq.

Every HTTP failure becomes a ``RemoteError`` carrying the server's envelope message, so
the operator sees one line, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, DeferredSemaphore, gatherResults

from imagehost.storage.files import atomic_write
from imagehost_cli.errors import CommandFailed
from imagehost_cli.options import RemoteOptions
from imagehost_cli.output import FileProgress, Output, human_size, table_time


class RemoteError(CommandFailed):
    """The server refused a request, or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def error_message(status: int, phrase: str, body: bytes) -> str:
    """One line for an HTTP error: the envelope's message and violations, or the status."""
    try:
        error = json.loads(body)["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status} {phrase}".strip()
    violations = error.get("violations") or []
    if violations:
        message = "; ".join(f"{v.get('property')}: {v.get('message')}" for v in violations)
    return f"{message} (HTTP {status})"


class RemoteServer:
    """One server, one identity; logs in lazily when given a username."""

    def __init__(self, reactor, options: RemoteOptions):
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        self.url = options.url
        self._options = options
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._http = HTTPClient(Agent(reactor, pool=self._pool))
        self._bearer: str | None = options.api_key

    async def close(self) -> None:
        await self._pool.closeCachedConnections()

    async def _authorization(self) -> dict[str, str]:
        from imagehost.auth import looks_like_api_key

        if self._options.api_key and not looks_like_api_key(self._options.api_key):
            # The server would take it for an access token and say that one is invalid.
            raise RemoteError("Invalid API key: API keys are sk_ followed by 64 hex digits.")
        if self._bearer is None and self._options.username:
            tokens = await self.request_json(
                "POST", "/api/auth/login", authenticate=False,
                json={"username": self._options.username, "password": self._options.password})
            self._bearer = tokens["access_token"]
        return {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}

    async def request(self, method: str, path: str, *, authenticate: bool = True,
                      **kwargs: Any) -> tuple[Any, bytes]:
        """Send a request; the response and its body, or RemoteError for any failure."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if authenticate:
            headers.update(await self._authorization())
        try:
            response = await self._http.request(method, self.url + path, headers=headers,
                                                **kwargs)
            body = await response.content()
        except CancelledError:
            raise
        except Exception as e:
            raise RemoteError(f"Cannot reach {self.url}: {_reason(e)}") from e
        if response.code >= 400:
            raise RemoteError(error_message(response.code, response.phrase.decode("latin-1"),
                                            body), response.code)
        return response, body

    async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON body (None for an empty body)."""
        _, body = await self.request(method, path, **kwargs)
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError as e:
            raise RemoteError(f"{self.url}{path} did not answer with JSON") from e

    async def upload(self, path: Path, is_public: bool, description: str | None) -> dict:
        """Upload one file: /api/external/upload with an API key (it answers with URLs)."""
        endpoint = "/api/external/upload" if self._options.api_key else "/api/upload"
        fields = {"isPublic": "true" if is_public else "false"}
        if description is not None:
            fields["description"] = description
        with path.open("rb") as f:
            files = {"image": (path.name, "application/octet-stream", f)}
            return await self.request_json("POST", endpoint, data=fields, files=files)


def _reason(error: Exception) -> str:
    reasons = getattr(error, "reasons", None)  # ResponseNeverReceived and friends
    if reasons:
        return "; ".join(str(r.value) for r in reasons)
    return str(error) or type(error).__name__


async def _with_server(reactor, options: RemoteOptions, work):
    server = RemoteServer(reactor, options)
    try:
        return await work(server)
    finally:
        await server.close()


# -- commands ---------------------------------------------------------------------


async def upload(reactor, options: RemoteOptions, files: list[Path], is_public: bool,
                 description: str | None, jobs: int) -> None:
    out = Output(options.as_json)
    semaphore = DeferredSemaphore(jobs)
    total = sum(f.stat().st_size for f in files)

    async def upload_all(server: RemoteServer) -> list[dict]:
        with FileProgress(out, "Uploading", len(files), total) as advance:
            async def one(path: Path) -> dict:
                try:
                    answer = await server.upload(path, is_public, description)
                    result = {"path": str(path), **(answer or {})}
                except RemoteError as e:
                    result = {"path": str(path), "error": e.message}
                advance(path.stat().st_size)
                return result

            from twisted.internet.defer import Deferred

            return await gatherResults([
                semaphore.run(lambda p=path: Deferred.fromCoroutine(one(p))) for path in files])

    results = await _with_server(reactor, options, upload_all)
    failed = [r for r in results if "error" in r]
    out.show(results, lambda: out.table(
        ["File", "Id", "Result"],
        [(r["path"], r.get("id", ""), r.get("error") or "uploaded") for r in results]))
    if failed:
        raise CommandFailed(f"{len(failed)} of {len(results)} uploads failed: "
                            f"{failed[0]['path']}: {failed[0]['error']}")


async def listing(reactor, options: RemoteOptions, command: str, page_number: int,
                  params: dict) -> None:
    """``remote list`` (the public feed) or ``remote history`` (your own images)."""
    path = {"list": "/api/images", "history": "/api/images/history"}[command]
    query = {k: str(v) for k, v in params.items() if v is not None}

    async def fetch(server: RemoteServer):
        return await server.request_json("GET", f"{path}/{page_number}", params=query)

    page = await _with_server(reactor, options, fetch)
    out = Output(options.as_json)

    def human() -> None:
        _show_listing(out, page)
        more = next_page_hint(options, command, page.get("meta", {}), query)
        if more:
            out.say(more)

    out.show(page, human)


def next_page_hint(options: RemoteOptions, command: str, meta: dict, query: dict) -> str:
    """How to get the next page ("" on the last one): the command to run."""
    page, size, total = meta.get("page"), meta.get("size"), meta.get("total")
    if not all(isinstance(n, int) and n > 0 for n in (page, size)) or not isinstance(total,
                                                                                        int):
        return ""
    pages = max(1, -(-total // size))
    if page >= pages:
        return f"Page {page} of {pages}: the last page."
    limit = f" --limit {query['limit']}" if "limit" in query else ""
    return (f"Page {page} of {pages}. Next page: imagehost remote --url {options.url} "
            f"{command} {page + 1}{limit}")


def _show_listing(out: Output, page: dict) -> None:
    meta = page.get("meta", {})
    rows = []
    for item in page.get("data", []):
        attributes, metadata = item.get("attributes", {}), item.get("metadata", {})
        owner = item.get("owner") or {}
        by = owner.get("username") or owner.get("displayName") or "guest"
        # The id shares its column with the name and owner: the table fits 80 columns.
        image = f"{item.get('id')}\n{attributes.get('originalName') or ''}\nby {by}"
        rows.append((image, "yes" if attributes.get("isPublic") else "no",
                     human_size(metadata.get("size")),
                     table_time((attributes.get("createdAt") or {}).get("timestamp"))))
    title = f"Page {meta.get('page', '?')} ({meta.get('total', len(rows))} images)"
    out.table(["Image", "Public", "Size", "Created (UTC)"], rows, title=title,
              ids=("Image",), times=("Public", "Size", "Created (UTC)"))


async def detail(reactor, options: RemoteOptions, image_id: str) -> None:
    async def fetch(server: RemoteServer):
        return await server.request_json("GET", f"/api/image/{image_id}/detail")

    image = await _with_server(reactor, options, fetch)
    out = Output(options.as_json)
    out.show(image, lambda: out.table(["Field", "Value"],
                                      [(k, json.dumps(v)) for k, v in image.items()]))


async def update(reactor, options: RemoteOptions, image_id: str, description: str | None,
                 is_public: bool | None) -> None:
    changes: dict[str, Any] = {}
    if description is not None:
        changes["description"] = description
    if is_public is not None:
        changes["isPublic"] = is_public

    async def patch(server: RemoteServer):
        await server.request("PATCH", f"/api/image/{image_id}", json=changes)

    await _with_server(reactor, options, patch)
    out = Output(options.as_json)
    out.show({"id": image_id, **changes}, lambda: out.say(f"Image {image_id} updated"))


async def delete(reactor, options: RemoteOptions, image_id: str, preserve_on_disk: bool) -> None:
    async def remove(server: RemoteServer):
        await server.request("DELETE", f"/api/image/{image_id}",
                             json={"preserveOnDisk": preserve_on_disk})

    await _with_server(reactor, options, remove)
    out = Output(options.as_json)
    out.show({"id": image_id, "deleted": True}, lambda: out.say(f"Image {image_id} deleted"))


async def download(reactor, options: RemoteOptions, image_id: str, target: Path | None,
                   width: int | None, height: int | None, crop: bool,
                   ext: str | None) -> None:
    params = {"w": width, "h": height, "crop": "true" if crop else None, "format": ext}
    query = {k: str(v) for k, v in params.items() if v is not None}

    async def fetch(server: RemoteServer):
        nonlocal ext
        # The server hands out the URL: signed when it requires signatures.
        made = await server.request_json("GET", f"/api/image/{image_id}/url", params=query)
        path = str(made["url"])
        ext = path.split("?", 1)[0].rsplit(".", 1)[-1]
        response, body = await server.request("GET", path, authenticate=False)
        return response, body

    response, body = await _with_server(reactor, options, fetch)
    path = target or Path(f"{image_id}.{ext}")
    # A download is a copy: a crash loses nothing, so no fsync (durable=False).
    atomic_write(path.absolute(), body, durable=False)
    content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
    result = {"id": image_id, "path": str(path), "size": len(body), "contentType": content_type}
    out = Output(options.as_json)
    out.show(result, lambda: out.say(f"Saved {path} ({human_size(len(body))}, {content_type})"))
