"""The front listener of the rendered Envoy configuration with no gateway running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from ops.topology import HOST, load_topology
from tests.integration.envoy_harness import EnvoyProcess
from tests.integration.gateway_harness import wait_for

START_TIMEOUT_S = 15.0


@pytest_asyncio.fixture
async def front(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    topology = load_topology().with_free_ports()
    envoy = EnvoyProcess(topology, tmp_path)
    envoy.start()
    try:
        await wait_for(envoy.ready, START_TIMEOUT_S, "envoy admin /ready")
        base_url = f"http://{HOST}:{topology.front_port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            yield client
    finally:
        envoy.stop()


@pytest.mark.parametrize(
    "path", ["/track", "/track?id=MLB-1&lang=en", "/", "/track/static/track.js"]
)
async def test_page_without_gateways_html(front: httpx.AsyncClient, path: str) -> None:
    response = await front.get(path)

    assert response.status_code == 503
    assert response.headers["content-type"] == "text/html; charset=UTF-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["retry-after"] == "30"
    assert (
        response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<h1>Seguimiento de envíos</h1>" in response.text
    assert "Shipment tracking" in response.text


@pytest.mark.parametrize(
    "path", ["/v1/shipments/MLB-1", "/api/status/shipments/MLB-1", "/tracking"]
)
async def test_api_without_gateways_json(front: httpx.AsyncClient, path: str) -> None:
    response = await front.get(path)

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"code": 14, "message": "no healthy upstream", "details": []}


async def test_page_post_without_gateways_json(front: httpx.AsyncClient) -> None:
    response = await front.post("/track", content=b"")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
