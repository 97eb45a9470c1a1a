"""One trace per request across Envoy, the gateway, the services, RabbitMQ and the worker.

The session stack runs without tracing, so this module starts its own stack (with its own
Redis and RabbitMQ, so no other stack consumes its messages) whose ``OTEL_*`` variables
point every process and Envoy at an in-process OTLP/gRPC receiver.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from ops.stack import Stack
from ops.topology import load_topology
from tests.conftest import STACK_UP_TIMEOUT_S, base_environ

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SPANS_TIMEOUT_S = 30.0
"""Time for every span of a request to arrive; Envoy exports its spans in batches on a
timer, so they arrive seconds after the request."""

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5
"""``Span.SpanKind`` values of the OTLP protocol."""


@dataclass(frozen=True)
class Span:
    """The fields of a received span that the assertions use."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    service: str
    attributes: dict[str, Any]


def _value(value: common_pb2.AnyValue) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            service=str(resource.get("service.name", "")),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [span for span in self._spans if span.trace_id == trace_id]

    def find(self, predicate: Callable[[Span], bool]) -> list[Span]:
        with self._lock:
            return [span for span in self._spans if predicate(span)]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@pytest.fixture(scope="module")
def traced_stack(
    receiver: tuple[Receiver, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    environ = base_environ()
    for name in ("REDIS_URL", "AMQP_URL"):
        environ.pop(name, None)
    environ.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "ENVIOS_ENVOY_TRACE_SAMPLING": "100",
        }
    )
    state_dir: Path = tmp_path_factory.mktemp("traced-stack")
    running = Stack(load_topology().with_free_ports(), state_dir, environ)
    try:
        running.up(timeout_s=STACK_UP_TIMEOUT_S)
        yield running
    finally:
        running.down()


@pytest.fixture(scope="module")
def http(traced_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=traced_stack.front_http_url, timeout=30) as client:
        yield client


def new_shipment(http: httpx.Client) -> str:
    shipment_id = "trace-" + uuid.uuid4().hex[:12]
    response = http.post("/v1/shipments", json={"id": shipment_id})
    assert response.status_code == 200, response.text
    return shipment_id


def wait_for_trace(
    receiver: Receiver, trace_id: str, complete: Callable[[list[Span]], bool]
) -> list[Span]:
    """Return the spans of ``trace_id`` once ``complete`` accepts them; fail after a deadline."""
    deadline = time.monotonic() + SPANS_TIMEOUT_S
    while True:
        spans = receiver.spans(trace_id)
        if complete(spans):
            return spans
        assert time.monotonic() < deadline, [(s.service, s.name) for s in spans]
        time.sleep(0.2)


def only(spans: list[Span], service: str, kind: int, name: str | None = None) -> Span:
    """Return the one span of ``service`` with ``kind`` (and ``name``), failing otherwise."""
    found = [
        span
        for span in spans
        if span.service == service and span.kind == kind and name in (None, span.name)
    ]
    assert len(found) == 1, [(s.service, s.kind, s.name) for s in spans]
    return found[0]


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [span for span in spans if span.parent_id == parent.span_id]


def child(
    spans: list[Span], parent: Span, service: str, kind: int, name: str | None = None
) -> Span:
    """Return the one child of ``parent`` from ``service`` with ``kind`` (and ``name``)."""
    return only(children(spans, parent), service, kind, name)


def test_patch_is_one_trace(receiver: tuple[Receiver, int], http: httpx.Client) -> None:
    spans_of = receiver[0]
    shipment_id = new_shipment(http)
    response = http.patch(f"/shippings/{shipment_id}", json={"status": "handling"})
    assert response.status_code == 200, response.text

    def gateway_span(span: Span) -> bool:
        return (
            span.kind == SERVER and span.attributes.get("url.path") == f"/shippings/{shipment_id}"
        )

    deadline = time.monotonic() + SPANS_TIMEOUT_S
    while not (gateway := spans_of.find(gateway_span)):
        assert time.monotonic() < deadline, "no gateway span for the PATCH request"
        time.sleep(0.2)
    assert len(gateway) == 1
    trace_id = gateway[0].trace_id

    def complete(spans: list[Span]) -> bool:
        return sum(span.service.startswith("envoy") for span in spans) >= 2 and any(
            span.service == "shipment" for span in spans
        )

    spans = wait_for_trace(spans_of, trace_id, complete)
    front = only(spans, "envoy-front", SERVER)
    assert front.parent_id == ""
    server = child(spans, front, "gateway", SERVER, "PATCH /shippings/{shipment.id}")
    assert server.attributes["http.response.status_code"] == 200
    call = child(
        spans, server, "gateway", CLIENT, "envios.shipment.v1.ShipmentService/UpdateShipment"
    )
    assert call.attributes["rpc.grpc.status_code"] == 0
    internal = child(spans, call, "envoy-grpc", SERVER)
    service = child(spans, internal, "shipment", SERVER)
    assert service.attributes["rpc.service"] == "envios.shipment.v1.ShipmentService"
    assert service.attributes["rpc.method"] == "UpdateShipment"
    event = child(spans, service, "shipment", PRODUCER, "send envios.events")
    assert event.attributes["messaging.rabbitmq.destination.routing_key"] == "shipment.handling"


def test_task_is_one_trace(receiver: tuple[Receiver, int], http: httpx.Client) -> None:
    spans_of = receiver[0]
    shipment_id = new_shipment(http)
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = http.post(
        "/api/tarea-concurrente",
        json={
            "type": "transition",
            "shipmentIds": [shipment_id],
            "targetStatus": "handling",
            "workDuration": "0.2s",
        },
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]

    def complete(spans: list[Span]) -> bool:
        services = [span.service for span in spans]
        worker_calls = [s for s in spans if s.service == "task-worker" and s.kind == CLIENT]
        return (
            bool(worker_calls)
            and "shipment" in services
            and "envoy-front" in services
            and services.count("envoy-grpc") >= 2
        )

    spans = wait_for_trace(spans_of, trace_id, complete)
    assert http.get(f"/api/status/tasks/{task_id}").json()["state"] == "SUCCEEDED"
    front = only(spans, "envoy-front", SERVER)
    assert front.parent_id == caller_span
    server = child(spans, front, "gateway", SERVER, "POST /api/tarea-concurrente")
    call = child(spans, server, "gateway", CLIENT, "envios.task.v1.TaskService/SubmitTask")
    internal = child(spans, call, "envoy-grpc", SERVER)
    submit = child(spans, internal, "task", SERVER, "envios.task.v1.TaskService/SubmitTask")
    produce = child(spans, submit, "task", PRODUCER, "send envios.tasks")
    consume = child(spans, produce, "task-worker", CONSUMER, "process envios.tasks")
    assert consume.attributes["messaging.message.id"] == task_id
    update = child(
        spans, consume, "task-worker", CLIENT, "envios.shipment.v1.ShipmentService/UpdateShipment"
    )
    worker_envoy = child(spans, update, "envoy-grpc", SERVER)
    child(
        spans, worker_envoy, "shipment", SERVER, "envios.shipment.v1.ShipmentService/UpdateShipment"
    )


def test_traced_error_keeps_details(receiver: tuple[Receiver, int], http: httpx.Client) -> None:
    spans_of = receiver[0]
    shipment_id = new_shipment(http)
    trace_id = uuid.uuid4().hex
    response = http.patch(
        f"/shippings/{shipment_id}",
        json={"status": "delivered"},
        headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
    )

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 9
    assert body["details"][0]["reason"] == "INVALID_TRANSITION"
    assert "allowed_next_statuses" in body["details"][0]["metadata"]

    def complete(spans: list[Span]) -> bool:
        return any(span.service == "shipment" for span in spans) and any(
            span.service == "gateway" and span.kind == SERVER for span in spans
        )

    spans = wait_for_trace(spans_of, trace_id, complete)
    method = "envios.shipment.v1.ShipmentService/UpdateShipment"
    service = only(spans, "shipment", SERVER, method)
    call = only(spans, "gateway", CLIENT, method)
    server = only(spans, "gateway", SERVER, "PATCH /shippings/{shipment.id}")
    assert service.attributes["rpc.grpc.status_code"] == 9
    assert call.attributes["rpc.grpc.status_code"] == 9
    assert server.attributes["http.response.status_code"] == 400
