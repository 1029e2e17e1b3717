"""A cookie-keeping HTTP client for the web pages (treq against the real daemon)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from tests.conftest import ADMIN, Response

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class PageClient:
    """Sends the cookies it was given, like a browser, and follows no redirect."""

    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)

    async def request(self, method: str, path: str, *, headers: dict | None = None,
                      **kwargs) -> Response:
        import treq

        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await treq.request(method, self.base_url + path, headers=sent,
                                      allow_redirects=False, **kwargs)
        body = await response.content()
        for raw in response.headers.getRawHeaders("set-cookie", []):
            self.set_cookies.append(raw)
            morsel = next(iter(SimpleCookie(raw).values()))
            if morsel["max-age"] == "0":
                self.cookies.pop(morsel.key, None)
            else:
                self.cookies[morsel.key] = morsel.value
        return Response(response.code, response.headers, body)

    async def get(self, path: str, **kwargs) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, fields: dict | list, **kwargs) -> Response:
        return await self.request(
            "POST", path, data=urlencode(fields, doseq=True).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     **kwargs.pop("headers", {})}, **kwargs)

    async def csrf(self, path: str = "/") -> str:
        """The CSRF token of a page's forms."""
        page = await self.get(path)
        return csrf_of(page)

    async def submit(self, form_page: str, action: str, fields: dict | list) -> Response:
        """Load ``form_page`` for its token, then post ``fields`` with it to ``action``."""
        token = await self.csrf(form_page)
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        return await self.post(action, [("csrf", token), *items])

    async def login(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> Response:
        response = await self.submit("/login", "/login",
                                     {"username": username, "password": password})
        assert response.code == 303, response.body
        return response

    async def upload(self, data: bytes, *, filename: str = "photo.jpg",
                     fields: dict | None = None, json: bool = False) -> Response:
        token = await self.csrf("/")
        files = {"image": (filename, "application/octet-stream", io.BytesIO(data))}
        headers = {"Accept": "application/json", "X-CSRF-Token": token} if json else {}
        body = dict(fields or {})
        if not json:
            body["csrf"] = token
        return await self.request("POST", "/upload", data=body, files=files, headers=headers)


def csrf_of(page: Response) -> str:
    found = _CSRF.search(page.body.decode())
    assert found, page.body[:500]
    return found.group(1)
