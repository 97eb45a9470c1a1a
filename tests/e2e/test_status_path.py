"""Status reads and the event projector in the whole stack, through the front Envoy."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from ops.stack import Stack
from services.common.cache import EVENT_KEY, SHIPMENT_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SOURCE_HEADER = "grpc-metadata-x-envios-source"
"""How the gateway forwards StatusService's ``x-envios-source`` response metadata."""


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.front_http_url, timeout=30) as client:
        yield client


def test_status_source_header(http: httpx.Client) -> None:
    shipment_id = "e2e-status-" + uuid.uuid4().hex[:12]
    created = http.post("/v1/shipments", json={"id": shipment_id})
    assert created.status_code == 200, created.text

    first = http.get(f"/api/status/shipments/{shipment_id}")
    second = http.get(f"/api/status/shipments/{shipment_id}")

    assert first.status_code == 200, first.text
    assert first.headers[SOURCE_HEADER] in ("cache", "database")
    assert second.headers[SOURCE_HEADER] == "cache"
    assert second.json()["source"] == "SOURCE_CACHE"


def test_projector_consumes_events(http: httpx.Client, stack: Stack) -> None:
    shipment_id = "e2e-proj-" + uuid.uuid4().hex[:12]
    assert http.post("/v1/shipments", json={"id": shipment_id}).status_code == 200
    patched = http.patch(f"/shippings/{shipment_id}", json={"status": "handling"})
    assert patched.status_code == 200, patched.text
    database = sqlite3.connect(stack.database_url.removeprefix("sqlite:///"))
    try:
        rows = database.execute(
            "SELECT message_id, body FROM outbox WHERE exchange = 'envios.events'"
        ).fetchall()
    finally:
        database.close()
    markers = [
        EVENT_KEY.format(message_id)
        for message_id, body in rows
        if json.loads(body)["shipment_id"] == shipment_id
    ]
    assert len(markers) == 2

    processes = {row["name"]: row["state"] for row in stack.status()["processes"]}
    with redis.Redis.from_url(stack.redis_url) as client:
        deadline = time.monotonic() + 15.0
        while client.exists(*markers) != len(markers):
            assert time.monotonic() < deadline, "the projector did not mark both events"
            time.sleep(0.05)
        assert client.hget(SHIPMENT_KEY.format(shipment_id), "version") == b"2"
    assert processes["projector-primary"] == "RUNNING"
    assert processes["projector-secondary"] == "RUNNING"
