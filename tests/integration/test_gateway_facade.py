"""Gateway behaviour on the test proto that Envoy's transcoder cannot be compared on.

The gateway runs in-process against the echo backend of ``gateway_harness``, loading the
test descriptor set from a file as ``ENVIOS_GATEWAY_DESCRIPTOR_SET`` would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from tests.integration.gateway_harness import EchoBackend, load_test_source, wait_for

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def facade(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp, Path]]:
    path, source = load_test_source(tmp_path)
    backend = EchoBackend(source)
    address = await backend.start()
    config = GatewayConfig(upstream_grpc=address, descriptor_set=str(path), max_header_bytes=4096)
    app = GatewayApp(config)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        yield client, app, path
    await app.close()
    await backend.stop()


async def test_facade_loads_descriptor_file(facade):
    _, app, _ = facade

    services = {b.method.containing_service.full_name for b in app.bindings}

    assert services == {"facadetest.v1.FacadeTestService", "facadetest.v1.GatewayOnlyService"}


async def test_facade_service_filter(tmp_path: Path):
    path, _ = load_test_source(tmp_path)
    config = GatewayConfig(descriptor_set=str(path), services=("facadetest.v1.GatewayOnlyService",))

    app = GatewayApp(config)

    assert {b.method.name for b in app.bindings} == {"ListItems"}


async def test_facade_logs_route_table(facade, caplog: pytest.LogCaptureFixture):
    _, app, _ = facade
    caplog.set_level(logging.INFO, logger="gateway.app")

    app.log_routes()

    lines = [r.getMessage() for r in caplog.records]
    assert "route GET /v1/everything/{id} -> facadetest.v1.FacadeTestService.GetEverything" in lines
    assert (
        "route SEARCH /v1/everything:search -> facadetest.v1.FacadeTestService.CreateEverything"
        in lines
    )


async def test_facade_response_body_repeated(facade):
    client, _, _ = facade

    response = await client.get("/v1/items?page_size=2")

    assert response.status_code == 200
    assert response.json() == [{"name": "item-0", "count": "0"}, {"name": "item-1", "count": "1"}]


async def test_facade_response_body_scalar_and_full(facade):
    client, _, _ = facade

    token = await client.get("/v1/items:token?page_token=t1")
    full = await client.get("/v1/items:full?page_size=0&page_token=t1")

    assert token.json() == "t1"
    assert full.json() == {"items": [], "nextPageToken": "t1"}


async def test_facade_empty_repeated_response_body(facade):
    client, _, _ = facade

    response = await client.get("/v1/items")

    assert response.json() == []


async def test_facade_form_post_falls_back_to_get(facade):
    client, _, _ = facade

    response = await client.post(
        "/v1/everything/e1?tags=from-url",
        content=b"display_name=from+form&tags=from-form",
        headers={"content-type": FORM},
    )

    assert response.status_code == 200
    assert response.headers["grpc-metadata-echo-method"] == "GetEverything"
    assert response.json()["displayName"] == "from form"
    assert response.json()["tags"] == ["from-form", "from-url"]


async def test_facade_form_fallback_needs_exact_type(facade):
    client, _, _ = facade

    response = await client.post(
        "/v1/everything/e1", content=b"a=b", headers={"content-type": FORM + "; charset=utf-8"}
    )

    assert response.status_code == 501
    assert response.json()["code"] == 12


async def test_facade_method_override(facade):
    client, _, _ = facade

    response = await client.post(
        "/v1/everything/e1",
        content=b"display_name=x",
        headers={"content-type": FORM, "x-http-method-override": "delete"},
    )

    assert response.status_code == 200
    assert response.headers["grpc-metadata-echo-method"] == "DeleteEverything"


async def test_facade_header_limit_431(facade):
    client, _, _ = facade

    response = await client.get("/v1/everything/e1", headers={"x-big": "a" * 5000})

    assert response.status_code == 431
    assert response.json()["code"] == 8


async def test_facade_path_without_slash(facade):
    _, app, _ = facade
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "v1/everything/e1", "headers": []}
    await app(scope, receive, send)

    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"code": 3, "message": "Bad Request", "details": []}


async def test_facade_trailers_when_requested(facade):
    client, _, _ = facade

    with_te = await client.get("/v1/everything/e1", headers={"te": "trailers"})
    without = await client.get("/v1/everything/e1")

    assert with_te.headers["grpc-trailer-echo-trailer"] == "done"
    assert "grpc-trailer-echo-trailer" not in without.headers


async def test_facade_bad_binary_header(facade):
    client, _, _ = facade

    response = await client.get("/v1/metadata", headers={"grpc-metadata-blob-bin": "!!"})

    assert response.status_code == 400
    assert "blob-bin" in response.json()["message"]


async def test_facade_binary_header_forwarded(facade):
    client, _, _ = facade

    response = await client.get("/v1/metadata", headers={"grpc-metadata-blob-bin": "AQI"})

    assert response.json()["blob-bin"] == ["AQI="]


async def test_facade_query_go_rules(facade):
    client, _, _ = facade

    empty = await client.get("/v1/everything/e1?int32_value=&display_name=x")
    semicolon = await client.get("/v1/everything/e1?a=1;b=2")
    escape = await client.get("/v1/everything/e1?display_name=%zz")

    assert empty.status_code == 200
    assert empty.json()["displayName"] == "x"
    assert semicolon.status_code == 400
    assert escape.status_code == 400


async def test_facade_openapi_served(facade):
    client, _, _ = facade

    response = await client.get("/openapi.json")

    document = response.json()
    operation = document["paths"]["/v1/everything/{id}"]["get"]
    assert response.status_code == 200
    assert document["openapi"] == "3.0.3"
    assert operation["operationId"] == "FacadeTestService_GetEverything"
    assert {p["name"] for p in operation["parameters"]} >= {"id", "display_name", "nested.name"}
    assert "default" in operation["responses"]
    assert "/v1/{path_name}" in document["paths"]


async def test_facade_body_timeout_408(tmp_path: Path):
    path, source = load_test_source(tmp_path)
    backend = EchoBackend(source)
    address = await backend.start()
    config = GatewayConfig(
        upstream_grpc=address,
        descriptor_set=str(path),
        listen_address="127.0.0.1:0",
        body_timeout_s=0.3,
    )
    server = GatewayServer(GatewayApp(config), config)
    serving = asyncio.ensure_future(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await wait_for(started, 10.0, "the gateway to start")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /v1/everything HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    writer.close()
    server.should_exit = True
    await serving
    await backend.stop()

    assert head.startswith(b"HTTP/1.1 408")


async def test_facade_slow_head_disconnected(tmp_path: Path):
    """A client trickling its request head is cut off; a prompt one on the next
    connection is served."""
    path, source = load_test_source(tmp_path)
    backend = EchoBackend(source)
    address = await backend.start()
    config = GatewayConfig(
        upstream_grpc=address,
        descriptor_set=str(path),
        listen_address="127.0.0.1:0",
        header_timeout_s=0.5,
    )
    server = GatewayServer(GatewayApp(config), config)
    serving = asyncio.ensure_future(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await wait_for(started, 10.0, "the gateway to start")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    opened = time.monotonic()
    writer.write(b"GET /v1/everything/abc HTTP/1.1\r\nhost: x\r\n")
    closed_after_s = None
    for _ in range(40):
        try:
            writer.write(b"x-slow: 1\r\n")
            await writer.drain()
        except ConnectionError:
            closed_after_s = time.monotonic() - opened
            break
        if reader.at_eof() or await _closed(reader):
            closed_after_s = time.monotonic() - opened
            break
    writer.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        prompt = await client.get("/v1/everything/abc")
    server.should_exit = True
    await serving
    await backend.stop()

    assert closed_after_s is not None
    assert 0.4 < closed_after_s < 3.0
    assert prompt.status_code == 200


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Wait up to 0.1 s for the server to close the connection; True when it did."""
    try:
        data = await asyncio.wait_for(reader.read(1), timeout=0.1)
    except TimeoutError:
        return False
    return data == b""
