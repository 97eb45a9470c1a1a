"""The whole stack through the front Envoy: HTTP -> Envoy -> gateway -> Envoy -> services."""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from ops import health, traffic
from ops.cli import main as envios
from ops.drill import wait_worker_priorities
from ops.stack import Stack
from ops.topology import HOST

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.front_http_url, timeout=30) as client:
        yield client


def new_id() -> str:
    return "e2e-" + uuid.uuid4().hex[:12]


def create(http: httpx.Client, shipment_id: str) -> dict[str, Any]:
    response = http.post("/v1/shipments", json={"id": shipment_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def detail(body: dict[str, Any], type_url: str) -> dict[str, Any]:
    return next(item for item in body["details"] if item["@type"] == type_url)


def test_patch_through_every_state(http: httpx.Client) -> None:
    shipment_id = new_id()
    create(http, shipment_id)
    for status in ("handling", "ready_to_ship", "shipped", "delivered"):
        response = http.patch(f"/shippings/{shipment_id}", json={"status": status})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    current = http.get(f"/api/status/shipments/{shipment_id}")
    assert current.status_code == 200, current.text
    assert current.json()["status"] == "delivered"
    history = http.get(f"/v1/shipments/{shipment_id}").json()["history"]
    assert [event["toStatus"] for event in history] == [
        "pending",
        "handling",
        "ready_to_ship",
        "shipped",
        "delivered",
    ]


def test_invalid_transition_is_400_with_reason(http: httpx.Client) -> None:
    shipment_id = new_id()
    create(http, shipment_id)
    response = http.patch(f"/shippings/{shipment_id}", json={"status": "delivered"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 9
    info = detail(body, ERROR_INFO)
    assert info["reason"] == "INVALID_TRANSITION"
    assert info["metadata"]["current_status"] == "pending"
    assert info["metadata"]["allowed_next_statuses"] == "handling,cancelled"


def test_unknown_id_is_404(http: httpx.Client) -> None:
    for path in (
        "/v1/shipments/nope-404",
        "/api/status/shipments/nope-404",
        "/api/status/tasks/nope404",
    ):
        response = http.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == 5


def test_wrong_etag_is_409(http: httpx.Client) -> None:
    shipment_id = new_id()
    create(http, shipment_id)
    response = http.patch(f"/shippings/{shipment_id}", json={"status": "handling", "etag": 'W/"9"'})
    assert response.status_code == 409
    assert detail(response.json(), ERROR_INFO)["reason"] == "ETAG_MISMATCH"


def test_matching_etag_is_applied(http: httpx.Client) -> None:
    shipment_id = new_id()
    etag = create(http, shipment_id)["etag"]
    response = http.patch(f"/shippings/{shipment_id}", json={"status": "handling", "etag": etag})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/shippings/{id}", b'{"status": "handling"', None),
        ("PATCH", "/shippings/{id}", b'{"status": 7}', "status"),
        ("PATCH", "/shippings/{id}", b'{"status": "teleported"}', "shipment.status"),
        ("PATCH", "/shippings/{id}", b'{"colour": "red"}', "colour"),
        ("PATCH", "/shippings/{id}", b'{"substatus": "' + b"x" * 65 + b'"}', "shipment.substatus"),
        ("POST", "/v1/shipments", b'{"id": "' + b"a" * 65 + b'"}', "shipment.id"),
        ("POST", "/v1/shipments", b'{"id": "has/slash"}', "shipment.id"),
        ("POST", "/v1/shipments", b"[]", None),
        ("POST", "/api/tarea-concurrente", b'{"type": "transition"}', "task.shipment_ids"),
        ("POST", "/api/tarea-concurrente", b'{"type": "nap", "shipmentIds": ["a"]}', "task.type"),
        ("POST", "/api/tarea-concurrente", b'{"shipmentIds": "a"}', "shipmentIds"),
        ("GET", "/v1/shipments?pageSize=abc", None, "page_size"),
        ("GET", "/v1/shipments?status=flying", None, "status"),
    ],
)
def test_bad_input_is_400_and_writes_nothing(
    http: httpx.Client, method: str, path: str, body: bytes | None, field: str | None
) -> None:
    shipment_id = new_id()
    before = create(http, shipment_id)
    response = http.request(method, path.format(id=shipment_id), content=body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["code"] == 3
    if field is not None:
        assert field in payload["message"]
    after = http.get(f"/v1/shipments/{shipment_id}").json()
    assert after["etag"] == before["etag"]


def test_oversized_body_is_4xx(http: httpx.Client) -> None:
    shipment_id = new_id()
    create(http, shipment_id)
    body = b'{"substatus": "' + b"x" * (2 << 20) + b'"}'
    response = http.patch(f"/shippings/{shipment_id}", content=body)
    assert 400 <= response.status_code < 500


def test_concurrent_task_route_changes_shipment(http: httpx.Client) -> None:
    shipment_id = new_id()
    create(http, shipment_id)
    response = http.post(
        "/api/tarea-concurrente",
        json={
            "type": "transition",
            "shipmentIds": [shipment_id],
            "targetStatus": "handling",
            "workDuration": "0.2s",
        },
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    wait_task_succeeded(http, f"/api/status/tasks/{task_id}")
    assert http.get(f"/api/status/shipments/{shipment_id}").json()["status"] == "handling"


def test_overview_names_serving_site(http: httpx.Client) -> None:
    response = http.get("/api/status")
    assert response.status_code == 200, response.text
    overview = response.json()
    assert overview["servingSite"] == "primary"
    assert "shipmentsByStatus" in overview


def test_killed_primary_replica_calls_still_succeed(stack: Stack, http: httpx.Client) -> None:
    name = "shipment-primary-1"
    stack.kill_process(name)
    try:
        for _ in range(40):
            shipment_id = new_id()
            create(http, shipment_id)
            response = http.get(f"/v1/shipments/{shipment_id}")
            assert response.status_code == 200, response.text
    finally:
        stack.start_process(name)
        stack.wait_ready([name], timeout_s=60)


def test_frozen_gateway_taken_out(stack: Stack, http: httpx.Client) -> None:
    """A frozen gateway (SIGSTOP) leaves the front's rotation by health check (1 s
    interval, 1 s timeout). Every later read goes to the other gateway."""
    shipment_id = new_id()
    create(http, shipment_id)
    gateway_2 = f"{HOST}:{stack.topology.gateway_ports[1]}"
    stack.kill_process("gateway-2", signal.SIGSTOP, wait=False)
    try:
        deadline = time.monotonic() + 10.0
        while gateway_healthy(stack, gateway_2):
            assert time.monotonic() < deadline, "frozen gateway-2 still healthy after 10 s"
            time.sleep(0.1)
        with httpx.Client(base_url=stack.front_http_url, timeout=3) as quick:
            late = [quick.get(f"/v1/shipments/{shipment_id}").status_code for _ in range(20)]
    finally:
        stack.kill_process("gateway-2", signal.SIGCONT, wait=False)
        stack.wait_ready(["gateway-2", "envoy"], timeout_s=60)

    assert late == [200] * 20


def test_read_on_frozen_gateway_retried(stack: Stack, http: httpx.Client) -> None:
    """Reads already sent to a gateway when it froze are retried on the other one after
    the front's per-try idle timeout (3 s), not left waiting for the 60 s route timeout."""
    shipment_id = new_id()
    create(http, shipment_id)
    idle_timeouts = "cluster.gateway.upstream_rq_per_try_idle_timeout"
    before = traffic.cluster_stats(stack.envoy_admin_url).get(idle_timeouts, 0)
    url = f"{stack.front_http_url}/v1/shipments/{shipment_id}"

    def read(_: int) -> int:
        # 15 s is far below the route timeout, so a read left on the frozen gateway fails.
        return httpx.get(url, timeout=15).status_code

    stack.kill_process("gateway-2", signal.SIGSTOP, wait=False)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(read, range(8)))
        after = traffic.cluster_stats(stack.envoy_admin_url).get(idle_timeouts, 0)
    finally:
        stack.kill_process("gateway-2", signal.SIGCONT, wait=False)
        stack.wait_ready(["gateway-2", "envoy"], timeout_s=60)

    assert statuses == [200] * 8
    assert after > before, "no read reached the frozen gateway"


def test_quiet_watch_stream_not_cut(stack: Stack, http: httpx.Client) -> None:
    """A task watch may be quiet for longer than the front's read idle timeout (3 s)
    while its task works. The stream must still reach the final state."""
    shipment_id = new_id()
    create(http, shipment_id)
    task = {
        "type": "transition",
        "shipmentIds": [shipment_id],
        "targetStatus": "handling",
        "workDuration": "4.5s",
    }
    response = http.post("/api/tarea-concurrente", json=task)
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]

    arrivals: list[float] = []
    states: list[str] = []
    with http.stream("GET", f"/v1/tasks/{task_id}:watch") as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            arrivals.append(time.monotonic())
            states.append(json.loads(line)["result"]["state"])

    longest_gap = max(later - earlier for earlier, later in itertools.pairwise(arrivals))
    assert states[-1] == "SUCCEEDED", states
    assert longest_gap > 3.0, f"the stream was never quiet for 3 s: {states}"


def test_tasks_follow_manual_shift(stack: Stack, http: httpx.Client) -> None:
    """While every call is shifted to the secondary, tasks run on its workers too."""
    try:
        traffic.set_secondary_percent(stack.envoy_admin_url, 100)
        shifted = {"worker-primary-1": 0, "worker-secondary-1": 10}
        assert wait_worker_priorities(stack, shifted, PRIORITY_TIMEOUT_S) is not None
        during_shift = run_simulate_task(http)
    finally:
        traffic.set_secondary_percent(stack.envoy_admin_url, 0)
        normal = {"worker-primary-1": 10, "worker-secondary-1": 0}
        assert wait_worker_priorities(stack, normal, PRIORITY_TIMEOUT_S) is not None
    after = run_simulate_task(http)

    assert during_shift["worker"] == "worker-secondary-1"
    assert after["worker"] == "worker-primary-1"


PRIORITY_TIMEOUT_S = 15.0


def run_simulate_task(http: httpx.Client) -> dict[str, Any]:
    """Submit a 0.1 s simulate task, wait until it succeeded and return it."""
    body = {"type": "simulate", "simulatedDuration": {"fixed": "0.1s"}}
    response = http.post("/api/tarea-concurrente", json=body)
    assert response.status_code == 200, response.text
    return wait_task_succeeded(http, f"/v1/tasks/{response.json()['id']}")


def wait_task_succeeded(http: httpx.Client, path: str) -> dict[str, Any]:
    """Read the task at ``path`` until it is SUCCEEDED (within 60 s) and return it."""
    deadline = time.monotonic() + 60.0
    while True:
        task = http.get(path).json()
        if task.get("state") == "SUCCEEDED":
            return dict(task)
        assert task.get("state") not in ("FAILED", "CANCELLED"), task
        assert time.monotonic() < deadline, task
        time.sleep(0.1)


def gateway_healthy(stack: Stack, address: str) -> bool:
    hosts = health.envoy_hosts(stack.envoy_admin_url)
    return any(host.address == address and host.healthy for host in hosts)


def test_grpc_call_by_reflection_through_envoy(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    shipment_id = new_id()
    target = ["--target", stack.grpc_target]
    assert envios(["call", *target]) == 0
    listed = capsys.readouterr().out.split()
    assert "envios.shipment.v1.ShipmentService" in listed
    assert "envios.task.v1.TaskService" in listed
    assert "envios.status.v1.StatusService" in listed
    create = json.dumps({"shipment": {"id": shipment_id}})
    assert (
        envios(["call", "envios.shipment.v1.ShipmentService/CreateShipment", create, *target]) == 0
    )
    capsys.readouterr()
    read = json.dumps({"shipmentId": shipment_id})
    assert envios(["call", "envios.status.v1.StatusService/GetShipmentStatus", read, *target]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "pending"


def test_grpc_call_unknown_method_exits_2(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    method = "envios.shipment.v1.ShipmentService/Teleport"
    assert envios(["call", method, "{}", "--target", stack.grpc_target]) == 2
    assert "no method 'Teleport'" in capsys.readouterr().err


def test_grpc_call_failure_shows_details(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    method = "envios.shipment.v1.ShipmentService/GetShipment"
    assert envios(["call", method, '{"id": "missing-1"}', "--target", stack.grpc_target]) == 1
    error = json.loads(capsys.readouterr().err)
    assert error["code"] == "NOT_FOUND"
    assert error["details"][0]["reason"] == "SHIPMENT_NOT_FOUND"
