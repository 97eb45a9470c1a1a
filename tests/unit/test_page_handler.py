"""Responses and headers of the tracking page handler, driven as ASGI without a socket."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from gateway.app import GatewayApp
from gateway.config import GatewayConfig
from gateway.page import TrackingPage
from gateway.page.assets import load_assets


class Response:
    """What an ASGI application sent for one request."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message["headers"]:
                self.headers[name.decode("latin-1")] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def scope(path: str, query: str = "", method: str = "GET", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [
            (name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()
        ],
    }


async def fetch(path: str, query: str = "", method: str = "GET", **headers: str) -> Response:
    request = scope(path, query, method, **headers)
    page = TrackingPage()
    assert page.handles(request)
    response = Response()
    await page.serve(request, response.send)
    return response


def assert_security_headers(response: Response) -> None:
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_page_headers() -> None:
    response = await fetch("/track", "id=order-1", accept_language="es-AR,es;q=0.9")

    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Accept-Language, Cookie"
    assert "set-cookie" not in response.headers
    assert_security_headers(response)
    assert b'<html lang="es">' in response.body


async def test_page_language_query_sets_cookie() -> None:
    response = await fetch("/track", "lang=en&id=order-1", accept_language="es")

    assert b'<html lang="en">' in response.body
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("envios_lang=en;")
    assert "Path=/track" in cookie
    assert "SameSite=Lax" in cookie


async def test_page_language_from_cookie() -> None:
    response = await fetch("/track/", "", accept_language="en-US", cookie="envios_lang=es")

    assert b'<html lang="es">' in response.body


async def test_page_bad_cookie_ignored() -> None:
    response = await fetch("/track", "", accept_language="en-US", cookie='envios_lang="; x')

    assert response.status == 200
    assert b'<html lang="en">' in response.body


async def test_page_head_has_no_body() -> None:
    full = await fetch("/track", "id=order-1")
    head = await fetch("/track", "id=order-1", method="HEAD")

    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(full.body))


async def test_asset_headers() -> None:
    response = await fetch("/track/static/track.js")

    assert response.status == 200
    assert response.body == load_assets()["track.js"].body
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert_security_headers(response)


async def test_asset_unknown_not_found() -> None:
    response = await fetch("/track/static/missing.js")

    assert response.status == 404
    assert response.headers["cache-control"] == "no-store"
    assert_security_headers(response)


async def test_root_redirects_to_page() -> None:
    response = await fetch("/")

    assert response.status == 302
    assert response.headers["location"] == "/track"
    assert_security_headers(response)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/track"), ("GET", "/v1/shipments/x"), ("GET", "/trackers"), ("PUT", "/")],
)
def test_handles_only_page_requests(method: str, path: str) -> None:
    assert not TrackingPage().handles(scope(path, method=method))


async def test_app_serves_page() -> None:
    app = GatewayApp(GatewayConfig())
    response = Response()

    await app(scope("/track", "id=order-1"), _no_body, response.send)

    assert response.status == 200
    assert b'data-shipment-id="order-1"' in response.body
    assert app.in_flight == 0


async def test_app_page_counts_against_limit() -> None:
    app = GatewayApp(GatewayConfig(max_concurrent_requests=1))
    app.in_flight = 1
    response = Response()

    await app(scope("/track"), _no_body, response.send)

    assert response.status == 429


async def _no_body() -> MutableMapping[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}
