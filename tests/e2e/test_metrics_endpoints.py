"""Every process's /metrics on the running stack, and the key numbers of `envios status`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ops import key_numbers
from ops.key_numbers import Samples, scrape, total
from ops.stack import Stack
from ops.topology import MetricsEndpoint

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SHIPMENT_SERVICE = "envios.shipment.v1.ShipmentService"
TASK_SERVICE = "envios.task.v1.TaskService"
STATUS_SERVICE = "envios.status.v1.StatusService"
TASK_DEADLINE_S = 60.0


def run_task(http: httpx.Client, shipment_id: str) -> None:
    """Submit a short transition task and wait until it succeeded."""
    body = {
        "type": "transition",
        "shipmentIds": [shipment_id],
        "targetStatus": "handling",
        "workDuration": "0.2s",
    }
    response = http.post("/api/tarea-concurrente", json=body)
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    deadline = time.monotonic() + TASK_DEADLINE_S
    while True:
        state = http.get(f"/api/status/tasks/{task_id}").json().get("state")
        if state == "SUCCEEDED":
            return
        assert state not in ("FAILED", "CANCELLED"), state
        assert time.monotonic() < deadline, f"task {task_id} still {state}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> dict[str, Samples]:
    """Send a little traffic of every kind, then scrape every process once."""
    with httpx.Client(base_url=stack.front_http_url, timeout=30) as http:
        shipment_id = "metrics-" + uuid.uuid4().hex[:12]
        assert http.post("/v1/shipments", json={"id": shipment_id}).status_code == 200
        run_task(http, shipment_id)
        patched = http.patch(f"/shippings/{shipment_id}", json={"status": "ready_to_ship"})
        assert patched.status_code == 200, patched.text
        invalid = http.patch(f"/shippings/{shipment_id}", json={"status": "pending"})
        assert invalid.status_code == 400, invalid.text
        for _ in range(3):
            assert http.get(f"/api/status/shipments/{shipment_id}").status_code == 200
    return {endpoint.name: scrape(endpoint) for endpoint in stack.topology.metrics_endpoints()}


def endpoints_of(stack: Stack, job: str) -> list[MetricsEndpoint]:
    found = [e for e in stack.topology.metrics_endpoints() if e.job == job]
    assert found, f"the topology has no {job} process"
    return found


def job_total(
    stack: Stack, scraped: dict[str, Samples], job: str, name: str, **labels: str
) -> float:
    """Return the sum of a sample over every process of ``job``."""
    return sum(total(scraped[e.name], name, **labels) for e in endpoints_of(stack, job))


def test_metrics_every_process_basics(stack: Stack, scraped: dict[str, Samples]) -> None:
    for endpoint in stack.topology.metrics_endpoints():
        samples = scraped[endpoint.name]
        assert total(samples, "process_cpu_seconds_total") > 0, endpoint.name
        assert total(samples, "process_resident_memory_bytes") > 1_000_000, endpoint.name
        info = total(samples, "envios_build_info", replica=endpoint.name, site=endpoint.site)
        assert info == 1, endpoint.name


def test_metrics_gateway_routes(stack: Stack, scraped: dict[str, Samples]) -> None:
    route = "/shippings/{shipment.id}"
    ok = job_total(stack, scraped, "gateway", "envios_http_requests_total", route=route, code="200")
    rejected = job_total(
        stack, scraped, "gateway", "envios_http_requests_total", route=route, code="400"
    )
    assert ok >= 1
    assert rejected >= 1
    durations = job_total(
        stack, scraped, "gateway", "envios_http_request_duration_seconds_count", route=route
    )
    assert durations >= ok + rejected
    for endpoint in endpoints_of(stack, "gateway"):
        samples = scraped[endpoint.name]
        assert ("envios_http_requests_in_flight", frozenset()) in samples, endpoint.name
        routes = {dict(labels).get("route") for name, labels in samples if "route" in dict(labels)}
        assert not any(str(r).startswith("/shippings/metrics-") for r in routes), routes


def test_metrics_grpc_services(stack: Stack, scraped: dict[str, Samples]) -> None:
    for job, service in (
        ("shipment", SHIPMENT_SERVICE),
        ("task", TASK_SERVICE),
        ("status", STATUS_SERVICE),
    ):
        handled = job_total(
            stack, scraped, job, "grpc_server_handled_total", grpc_service=service, grpc_code="OK"
        )
        started = job_total(stack, scraped, job, "grpc_server_started_total", grpc_service=service)
        latency = job_total(
            stack, scraped, job, "grpc_server_handling_seconds_count", grpc_service=service
        )
        assert handled >= 1, job
        assert started >= handled, job
        assert latency >= handled, job
    failed = job_total(
        stack,
        scraped,
        "shipment",
        "grpc_server_handled_total",
        grpc_service=SHIPMENT_SERVICE,
        grpc_code="FAILED_PRECONDITION",
    )
    assert failed >= 1


def test_metrics_shipment_transitions(stack: Stack, scraped: dict[str, Samples]) -> None:
    name = "envios_shipment_transitions_total"
    created = job_total(stack, scraped, "shipment", name, from_status="none", to_status="pending")
    handled = job_total(
        stack, scraped, "shipment", name, from_status="pending", to_status="handling"
    )
    shipped = job_total(
        stack, scraped, "shipment", name, from_status="handling", to_status="ready_to_ship"
    )
    assert created >= 1
    assert handled >= 1
    assert shipped >= 1
    invalid = job_total(
        stack, scraped, "shipment", "envios_shipment_transitions_rejected_total", reason="invalid"
    )
    assert invalid >= 1


def test_metrics_task_worker(stack: Stack, scraped: dict[str, Samples]) -> None:
    runs = job_total(
        stack,
        scraped,
        "worker",
        "envios_task_attempt_duration_seconds_count",
        type="transition",
        outcome="succeeded",
    )
    assert runs >= 1
    for endpoint in endpoints_of(stack, "worker"):
        samples = scraped[endpoint.name]
        assert ("envios_tasks_in_flight", frozenset()) in samples, endpoint.name
        names = {name for name, _ in samples}
        assert "envios_task_queue_depth" in names, endpoint.name
        assert "envios_task_dead_letter_depth" in names, endpoint.name


def test_metrics_status_and_projector(stack: Stack, scraped: dict[str, Samples]) -> None:
    reads = job_total(stack, scraped, "status", "envios_status_reads_total", kind="shipment")
    assert reads >= 3
    for endpoint in endpoints_of(stack, "status"):
        ratio = total(scraped[endpoint.name], "envios_status_cache_hit_ratio")
        assert 0 <= ratio <= 1, endpoint.name
    events = job_total(stack, scraped, "projector", "envios_projector_events_total")
    lags = job_total(stack, scraped, "projector", "envios_projector_lag_seconds_count")
    assert events >= 1
    assert lags >= 1


@pytest.fixture
def steady_reads(stack: Stack) -> Iterator[None]:
    """Read one shipment's status over and over from a thread, for at most 20 s."""
    stop = threading.Event()
    shipment_id = "metrics-" + uuid.uuid4().hex[:12]
    with httpx.Client(base_url=stack.front_http_url, timeout=10) as http:
        assert http.post("/v1/shipments", json={"id": shipment_id}).status_code == 200

    def read() -> None:
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=stack.front_http_url, timeout=10) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                http.get(f"/api/status/shipments/{shipment_id}")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=15)


@pytest.mark.usefixtures("steady_reads")
def test_key_numbers_under_reads(stack: Stack) -> None:
    numbers = key_numbers.measure(stack.topology, stack.envoy_admin_url, window_s=1.0)
    primary = numbers.sites["primary"]
    assert numbers.unreachable == []
    assert primary.requests_per_s > 1
    assert primary.error_ratio is not None
    assert primary.error_ratio < 0.5
    assert numbers.serving_site == "primary"
    assert primary.envoy_share is not None
    assert primary.envoy_share > 0.9
    assert numbers.tasks_in_flight >= 0
    assert numbers.cache_hit_ratio is not None
    text = key_numbers.format_numbers(numbers)
    assert "serving site     primary" in text
    assert key_numbers.as_dict(numbers)["serving_site"] == "primary"
