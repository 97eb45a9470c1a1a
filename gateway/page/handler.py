"""ASGI handling of the tracking page, its static files and the ``/`` redirect to it.

Every response carries ``SECURITY_HEADERS``. The page itself is ``no-store``, because
its URL and content name a shipment. The static files hold no personal data, so they are
cached for a day under URLs that change with their content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from gateway.page.assets import STATIC_PREFIX, Asset, find_asset
from gateway.page.language import LANGUAGE_COOKIE, choose_language
from gateway.page.render import PAGE_PATH, render_page
from gateway.page.texts import LANGUAGES

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[str, str]]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""Only same-origin scripts, styles, images and requests; no inline script or style."""

SECURITY_HEADERS: Headers = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
]
"""Headers on every response of the page, its files and its redirect."""

PAGE_CACHE_CONTROL = "no-store"
ASSET_CACHE_CONTROL = "public, max-age=86400"
LANGUAGE_COOKIE_MAX_AGE_S = 365 * 24 * 3600
DEFAULT_REFRESH_S = 10.0
"""Seconds between two refreshes of a shipment in transit; failures back off from it."""


class TrackingPage:
    """Serves ``GET``/``HEAD`` of ``/``, ``/track`` and ``/track/static/<file>``."""

    def __init__(self, refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self.refresh_s = refresh_s

    def handles(self, scope: Scope) -> bool:
        """True when ``scope`` is a request that ``serve`` handles."""
        if scope["method"] not in ("GET", "HEAD"):
            return False
        path = scope["path"]
        return path in ("/", PAGE_PATH, PAGE_PATH + "/") or path.startswith(STATIC_PREFIX)

    async def serve(self, scope: Scope, send: Send) -> None:
        """Send the response to a request for which ``handles`` is true.

        Raises:
            OSError: a template or static file is missing from the installed package.
        """
        path = scope["path"]
        if path == "/":
            await _respond(scope, send, 302, [("location", PAGE_PATH)], b"")
        elif path.startswith(STATIC_PREFIX):
            await self._asset(scope, send, find_asset(path))
        else:
            await self._page(scope, send)

    async def _page(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        picked = _first(query, "lang")
        headers = _request_headers(scope)
        language = choose_language(
            picked, _cookie(headers, LANGUAGE_COOKIE), headers.get("accept-language", "")
        )
        body = render_page(language, _first(query, "id") or "", self.refresh_s)
        extra = [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", PAGE_CACHE_CONTROL),
            ("vary", "Accept-Language, Cookie"),
        ]
        if picked in LANGUAGES:
            extra.append(("set-cookie", _language_cookie(language)))
        await _respond(scope, send, 200, extra, body)

    async def _asset(self, scope: Scope, send: Send, asset: Asset | None) -> None:
        if asset is None:
            headers = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")]
            await _respond(scope, send, 404, headers, b"not found\n")
            return
        headers = [("content-type", asset.content_type), ("cache-control", ASSET_CACHE_CONTROL)]
        await _respond(scope, send, 200, headers, asset.body)


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _request_headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


def _cookie(headers: dict[str, str], name: str) -> str | None:
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None


def _language_cookie(language: str) -> str:
    return (
        f"{LANGUAGE_COOKIE}={language}; Path={PAGE_PATH}; Max-Age={LANGUAGE_COOKIE_MAX_AGE_S}; "
        "SameSite=Lax; HttpOnly"
    )


async def _respond(scope: Scope, send: Send, status: int, headers: Headers, body: bytes) -> None:
    all_headers = [*headers, *SECURITY_HEADERS, ("content-length", str(len(body)))]
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in all_headers]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    payload = b"" if scope["method"] == "HEAD" else body
    await send({"type": "http.response.body", "body": payload, "more_body": False})
