"""The gateway against a real grpc.aio server with in-test fakes of the three services."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from envios.shipment.v1 import shipment_pb2, shipment_pb2_grpc
from envios.status.v1 import status_pb2, status_pb2_grpc
from envios.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import any_pb2, message_factory, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway.app import GatewayApp
from gateway.bindings import Binding, load_bindings
from gateway.config import GatewayConfig
from gateway.routes import parse_template
from gateway.server import GatewayServer

Recorded = list[tuple[str, Any, dict[str, Any]]]


async def _abort(context: grpc.aio.ServicerContext, code: int, message: str, reason: str) -> None:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain="envios.test", metadata={"k": "v"})
    )
    status = rpc_status_pb2.Status(code=code, message=message, details=[detail])
    await context.abort_with_status(rpc_status.to_status(status))


class FakeShipments(shipment_pb2_grpc.ShipmentServiceServicer):
    def __init__(self, calls: Recorded) -> None:
        self.calls = calls

    def _record(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.calls.append((name, request, dict(context.invocation_metadata() or ())))

    async def CreateShipment(self, request, context):
        self._record("CreateShipment", request, context)
        return shipment_pb2.Shipment(id=request.shipment.id, status="pending", etag="e1")

    async def GetShipment(self, request, context):
        self._record("GetShipment", request, context)
        if request.id == "missing":
            await _abort(
                context, code_pb2.NOT_FOUND, "shipment missing not found", "SHIPMENT_NOT_FOUND"
            )
        if request.id == "slow":
            await asyncio.sleep(1.0)
        await context.send_initial_metadata((("etag", "e1"),))
        context.set_trailing_metadata((("checksum", "c1"),))
        return shipment_pb2.Shipment(
            id=request.id, status="shipped", status_time=timestamp_pb2.Timestamp(seconds=1704067200)
        )

    async def ListShipments(self, request, context):
        self._record("ListShipments", request, context)
        return shipment_pb2.ListShipmentsResponse(
            shipments=[shipment_pb2.Shipment(id="a"), shipment_pb2.Shipment(id="b")],
            next_page_token="n",
        )

    async def UpdateShipment(self, request, context):
        self._record("UpdateShipment", request, context)
        if request.shipment.status == "pending":
            await _abort(
                context,
                code_pb2.FAILED_PRECONDITION,
                "cannot go back to pending",
                "INVALID_TRANSITION",
            )
        if request.shipment.etag == "stale":
            await _abort(context, code_pb2.ABORTED, "etag mismatch", "ETAG_MISMATCH")
        return shipment_pb2.Shipment(id=request.shipment.id, status=request.shipment.status)


class FakeTasks(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, calls: Recorded) -> None:
        self.calls = calls

    async def SubmitTask(self, request, context):
        self.calls.append(("SubmitTask", request, dict(context.invocation_metadata() or ())))
        return task_pb2.Task(id="t1", type=request.task.type, state=task_pb2.Task.QUEUED)

    async def GetTask(self, request, context):
        self.calls.append(("GetTask", request, {}))
        if request.id == "secret":
            await _abort(context, code_pb2.UNAUTHENTICATED, 'Bearer realm="envios"', "NO_TOKEN")
        return task_pb2.Task(id=request.id, state=task_pb2.Task.RUNNING)

    async def CancelTask(self, request, context):
        self.calls.append(("CancelTask", request, {}))
        return task_pb2.Task(id=request.id, state=task_pb2.Task.CANCELLED)

    async def RunTask(self, request, context):
        self.calls.append(("RunTask", request, {}))
        return task_pb2.Task(id="t2", type=request.task.type, state=task_pb2.Task.SUCCEEDED)

    async def WatchTask(self, request, context):
        self.calls.append(("WatchTask", request, {}))
        for state in (task_pb2.Task.RUNNING, task_pb2.Task.SUCCEEDED):
            yield task_pb2.Task(id=request.id, state=state)


class FakeStatus(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, calls: Recorded) -> None:
        self.calls = calls

    async def GetShipmentStatus(self, request, context):
        self.calls.append(("GetShipmentStatus", request, {}))
        return status_pb2.ShipmentStatus(
            shipment_id=request.shipment_id, source=status_pb2.SOURCE_CACHE
        )

    async def GetTaskStatus(self, request, context):
        self.calls.append(("GetTaskStatus", request, {}))
        return status_pb2.TaskStatus(task_id=request.task_id, progress_percent=40)

    async def BatchGetStatus(self, request, context):
        self.calls.append(("BatchGetStatus", request, {}))
        return status_pb2.BatchGetStatusResponse(missing_shipment_ids=list(request.shipment_ids))

    async def GetOverview(self, request, context):
        self.calls.append(("GetOverview", request, {}))
        return status_pb2.Overview(tasks_in_flight=3, serving_site="primary")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Recorded]]:
    calls: Recorded = []
    server = grpc.aio.server()
    shipment_pb2_grpc.add_ShipmentServiceServicer_to_server(FakeShipments(calls), server)
    task_pb2_grpc.add_TaskServiceServicer_to_server(FakeTasks(calls), server)
    status_pb2_grpc.add_StatusServiceServicer_to_server(FakeStatus(calls), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", calls
    await server.stop(None)


async def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` every 10 ms; fail the test when it is still false after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition still false after {timeout_s} s")


def _config(target: str, **overrides: Any) -> GatewayConfig:
    return GatewayConfig(upstream_grpc=target, **overrides)


@pytest.fixture
async def gateway(
    upstream: tuple[str, Recorded],
) -> AsyncIterator[tuple[httpx.AsyncClient, Recorded, GatewayApp]]:
    target, calls = upstream
    app = GatewayApp(_config(target))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        yield client, calls, app
    await app.close()


ROUTES = [
    ("POST", "/v1/shipments?request_id=r1", {"id": "s1"}, "CreateShipment"),
    ("GET", "/v1/shipments/s1", None, "GetShipment"),
    ("GET", "/v1/shipments?page_size=2&status=shipped", None, "ListShipments"),
    ("PATCH", "/v1/shipments/s1", {"status": "shipped"}, "UpdateShipment"),
    ("PATCH", "/shippings/s1", {"status": "shipped"}, "UpdateShipment"),
    ("POST", "/v1/tasks", {"type": "transition", "shipmentIds": ["s1"]}, "SubmitTask"),
    ("POST", "/api/tarea-concurrente", {"type": "transition", "shipmentIds": ["s1"]}, "SubmitTask"),
    ("GET", "/v1/tasks/t1", None, "GetTask"),
    ("POST", "/v1/tasks/t1:cancel", {}, "CancelTask"),
    ("GET", "/api/status/shipments/s1", None, "GetShipmentStatus"),
    ("GET", "/v1/status/shipments/s1", None, "GetShipmentStatus"),
    ("GET", "/api/status/tasks/t1", None, "GetTaskStatus"),
    ("GET", "/v1/status/tasks/t1", None, "GetTaskStatus"),
    ("GET", "/api/status:batchGet?shipment_ids=a&shipment_ids=b", None, "BatchGetStatus"),
    ("GET", "/v1/status:batchGet?shipment_ids=a&shipment_ids=b", None, "BatchGetStatus"),
    ("GET", "/api/status", None, "GetOverview"),
    ("GET", "/v1/status", None, "GetOverview"),
]


@pytest.mark.parametrize(("method", "url", "body", "rpc"), ROUTES)
async def test_gateway_route_reaches_rpc(gateway, method: str, url: str, body: Any, rpc: str):
    client, calls, _ = gateway

    response = await client.request(method, url, json=body)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert [name for name, _, _ in calls] == [rpc]


async def test_gateway_create_request_mapping(gateway):
    client, calls, _ = gateway

    response = await client.post(
        "/v1/shipments?request_id=r1", json={"id": "s1", "trackingNumber": "TN1"}
    )

    _, request, _ = calls[0]
    assert request.shipment.id == "s1"
    assert request.shipment.tracking_number == "TN1"
    assert request.request_id == "r1"
    assert response.json()["status"] == "pending"
    assert response.json()["statusTime"] is None


async def test_gateway_patch_builds_update_mask(gateway):
    client, calls, _ = gateway

    response = await client.patch(
        "/shippings/s9", json={"status": "shipped", "substatus": "in_transit"}
    )

    _, request, _ = calls[0]
    assert response.status_code == 200
    assert request.shipment.id == "s9"
    assert list(request.update_mask.paths) == ["status", "substatus"]


async def test_gateway_batch_get_repeated_query(gateway):
    client, calls, _ = gateway

    response = await client.get("/api/status:batchGet?shipment_ids=a&shipment_ids=b")

    _, request, _ = calls[0]
    assert list(request.shipment_ids) == ["a", "b"]
    assert response.json() == {
        "shipments": [],
        "tasks": [],
        "missingShipmentIds": ["a", "b"],
        "missingTaskIds": [],
    }


async def test_gateway_protojson_response(gateway):
    client, _, _ = gateway

    overview = (await client.get("/api/status")).json()
    status = (await client.get("/api/status/shipments/s1")).json()

    assert overview["tasksInFlight"] == "3"
    assert overview["shipmentsByStatus"] == {}
    assert overview["computeTime"] is None
    assert status["source"] == "SOURCE_CACHE"
    assert status["shipmentId"] == "s1"


async def test_gateway_percent_decoded_path(gateway):
    client, calls, _ = gateway

    response = await client.get("/v1/shipments/a%20b")

    _, request, _ = calls[0]
    assert response.status_code == 200
    assert request.id == "a b"


async def test_gateway_not_found_error_details(gateway):
    client, _, _ = gateway

    response = await client.get("/v1/shipments/missing")

    body = response.json()
    assert response.status_code == 404
    assert body["code"] == 5
    assert body["message"] == "shipment missing not found"
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert body["details"][0]["reason"] == "SHIPMENT_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "http_status", "code", "reason"),
    [
        ({"status": "pending"}, 400, 9, "INVALID_TRANSITION"),
        ({"status": "shipped", "etag": "stale"}, 409, 10, "ETAG_MISMATCH"),
    ],
)
async def test_gateway_update_errors_mapped(
    gateway, body: dict[str, str], http_status: int, code: int, reason: str
):
    client, _, _ = gateway

    response = await client.patch("/v1/shipments/s1", json=body)

    assert response.status_code == http_status
    assert response.json()["code"] == code
    assert response.json()["details"][0]["reason"] == reason


async def test_gateway_unauthenticated_www_authenticate(gateway):
    client, _, _ = gateway

    response = await client.get("/v1/tasks/secret")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="envios"'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": "s1",', "not valid JSON"),
        (b'{"id": 5}', "id"),
        (b'{"statusTime": "yesterday"}', "statusTime"),
        (b"[]", "expected a JSON object"),
    ],
)
async def test_gateway_bad_json_not_forwarded(gateway, content: bytes, expected: str):
    client, calls, _ = gateway

    response = await client.post(
        "/v1/shipments", content=content, headers={"content-type": "application/json"}
    )

    body = response.json()
    assert response.status_code == 400
    assert body["code"] == 3
    assert expected in body["message"]
    assert body["details"] == []
    assert calls == []


async def test_gateway_bad_query_not_forwarded(gateway):
    client, calls, _ = gateway

    response = await client.get("/v1/shipments?page_size=lots")

    assert response.status_code == 400
    assert "page_size" in response.json()["message"]
    assert calls == []


async def test_gateway_unknown_path_and_method(gateway):
    client, calls, _ = gateway

    missing = await client.get("/v2/nothing")
    wrong_method = await client.delete("/v1/shipments/s1")

    assert missing.status_code == 404
    assert missing.json() == {"code": 5, "message": "Not Found", "details": []}
    assert wrong_method.status_code == 501
    assert wrong_method.json()["code"] == 12
    assert calls == []


async def test_gateway_body_too_large(upstream):
    target, calls = upstream
    app = GatewayApp(_config(target, max_body_bytes=64))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.post("/v1/shipments", json={"id": "x" * 100})
    await app.close()

    assert response.status_code == 413
    assert response.json()["code"] == 8
    assert calls == []


async def test_gateway_metadata_both_ways(gateway):
    client, calls, _ = gateway
    headers = {
        "authorization": "Bearer tok",
        "grpc-metadata-tenant": "acme",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "te": "trailers",
    }

    response = await client.get("/v1/shipments/s1", headers=headers)

    _, _, metadata = calls[0]
    assert metadata["authorization"] == "Bearer tok"
    assert metadata["grpcgateway-authorization"] == "Bearer tok"
    assert metadata["tenant"] == "acme"
    assert metadata["traceparent"] == headers["traceparent"]
    assert metadata["x-forwarded-host"] == "gw.test"
    assert metadata["x-forwarded-for"] == "127.0.0.1"
    assert response.headers["grpc-metadata-etag"] == "e1"
    assert response.headers["grpc-trailer-checksum"] == "c1"


async def test_gateway_deadline_from_header(gateway):
    client, _, _ = gateway

    response = await client.get("/v1/shipments/slow", headers={"grpc-timeout": "100m"})

    assert response.status_code == 504
    assert response.json()["code"] == 4


async def test_gateway_bad_timeout_header(gateway):
    client, calls, _ = gateway

    response = await client.get("/v1/shipments/s1", headers={"grpc-timeout": "soon"})

    assert response.status_code == 400
    assert "Grpc-Timeout" in response.json()["message"]
    assert calls == []


async def test_gateway_upstream_unreachable():
    app = GatewayApp(_config("127.0.0.1:1", default_timeout_s=5.0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.get("/v1/shipments/s1")
    await app.close()

    assert response.status_code == 503
    assert response.json()["code"] == 14


async def test_gateway_concurrency_limit(upstream):
    target, _ = upstream
    app = GatewayApp(_config(target, max_concurrent_requests=1))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        slow = asyncio.ensure_future(client.get("/v1/shipments/slow"))
        await _wait_until(lambda: app.in_flight > 0)
        rejected = await client.get("/v1/shipments/s1")
        health = await client.get("/healthz")
        completed = await slow
    await app.close()

    assert rejected.status_code == 429
    assert rejected.json()["code"] == 8
    assert health.status_code == 200
    assert completed.status_code == 200


async def test_gateway_healthz_draining(gateway):
    client, _, app = gateway

    before = await client.get("/healthz")
    app.start_draining()
    after = await client.get("/healthz")

    assert before.status_code == 200
    assert before.json() == {"status": "SERVING"}
    assert after.status_code == 503
    assert after.json() == {"status": "NOT_SERVING"}


async def test_gateway_server_drains_on_shutdown(upstream):
    target, _ = upstream
    config = _config(target, listen_address="127.0.0.1:0", drain_s=0.2, shutdown_grace_s=5.0)
    app = GatewayApp(config)
    server = GatewayServer(app, config)
    serving = asyncio.ensure_future(server.serve())
    await _wait_until(lambda: server.started)
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base) as client:
        slow = asyncio.ensure_future(client.get("/v1/shipments/slow"))
        await _wait_until(lambda: app.in_flight > 0)
        server.request_shutdown()
        health = await client.get("/healthz")
        completed = await slow
    await asyncio.wait_for(serving, timeout=10)

    assert health.status_code == 503
    assert completed.status_code == 200
    assert completed.json()["id"] == "slow"


def _health_watch_binding() -> Binding:
    """A server-streaming binding; the envios protos have no streaming rpc yet."""
    method = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Watch"]
    return Binding(
        http_method="GET",
        template=parse_template("/v1/health:watch"),
        body="",
        response_body="",
        method=method,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
    )


async def test_gateway_server_stream_lines(upstream):
    target, _ = upstream
    app = GatewayApp(_config(target), bindings=[*load_bindings(), _health_watch_binding()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.get("/v1/health:watch?service=", headers={"grpc-timeout": "300m"})
    await app.close()

    lines = [json.loads(line) for line in response.text.splitlines()]
    assert response.status_code == 200
    assert lines[0] == {"result": {"status": "SERVING"}}
    assert lines[-1]["error"]["code"] == 4


async def test_gateway_server_stream_error_first():
    app = GatewayApp(_config("127.0.0.1:1"), bindings=[_health_watch_binding()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.get("/v1/health:watch", headers={"grpc-timeout": "5S"})
    await app.close()

    lines = [json.loads(line) for line in response.text.splitlines()]
    assert response.status_code == 503
    assert len(lines) == 1
    assert lines[0]["error"]["code"] == 14


async def test_gateway_request_id_sent_as_idempotency_key(gateway):
    client, calls, _ = gateway

    await client.patch("/shippings/s1?request_id=evt-9", json={"status": "handling"})
    await client.get("/v1/shipments/s1")

    _, request, metadata = calls[0]
    assert request.request_id == "evt-9"
    assert metadata["idempotency-key"] == "evt-9"
    _, _, read_metadata = calls[1]
    assert "idempotency-key" not in read_metadata


async def test_gateway_non_ascii_request_id_reaches_service(gateway):
    client, calls, _ = gateway

    response = await client.patch("/shippings/s1?request_id=%23%C2%9E", json={"status": "handling"})

    assert response.status_code == 200
    _, request, metadata = calls[0]
    assert request.request_id == "#\x9e"
    assert "idempotency-key" not in metadata
